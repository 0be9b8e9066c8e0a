"""open_clip, the reference implementation, and random checkpoints saved by its own Hub writer (`save_for_hf`):
the layout of `imageomics/bioclip`, as files or as a model release in the fake HF cache."""

from __future__ import annotations

import importlib
import json
import math
import tempfile
from pathlib import Path
from types import ModuleType, SimpleNamespace

from .hub_cache import DEFAULT_COMMIT, write_hub_cache

TINY_OPEN_CLIP_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 30, "layers": 2, "width": 32, "patch_size": 2, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
# A tiny CLIP that takes 224 px images (pybioclip's Tree-of-Life transform is hard-wired to 224 x 224).
TINY_224_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "patch_size": 32, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def import_open_clip() -> ModuleType:
    """Import `open_clip` (the `dev` extra), with a clear error when it is not installed."""
    try:
        return importlib.import_module("open_clip")
    except ImportError as err:
        raise ImportError(
            f"open_clip is needed for parity checks and benchmarks: pip install 'bioclip-hf[dev]' ({err})"
        ) from None


def save_open_clip(path: Path, seed: int = 0, safe_serialization="both", model_cfg: dict | None = None,
                   logit_scale: float | None = None):  # fmt: skip
    """Build a random open_clip CLIP (default `TINY_OPEN_CLIP_CFG`; an architecture name such as "ViT-B-16" takes
    open_clip's config) and save it into `path` with open_clip's own Hub writer; returns the model.

    `logit_scale`: the temperature `logit_scale.exp()` (a fresh model has 1/0.07 = 14.3; BioCLIP's trained one is 100).
    """
    import torch

    open_clip = import_open_clip()
    from open_clip.push_to_hf_hub import save_for_hf

    if isinstance(model_cfg, str):
        model_cfg = open_clip.get_model_config(model_cfg)
    model_cfg = model_cfg or TINY_OPEN_CLIP_CFG
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**model_cfg).eval()
    if logit_scale is not None:
        model.logit_scale.data.fill_(math.log(logit_scale))
    model.visual.image_mean = open_clip.OPENAI_DATASET_MEAN
    model.visual.image_std = open_clip.OPENAI_DATASET_STD
    # open_clip's SimpleTokenizer has no files to save; its writer still expects the method.
    no_files = SimpleNamespace(save_pretrained=lambda directory: None)
    Path(path).mkdir(parents=True, exist_ok=True)
    save_for_hf(model, no_files, model_cfg, str(path), safe_serialization=safe_serialization)
    assert json.loads((Path(path) / "open_clip_config.json").read_text())["model_cfg"] == model_cfg
    return model


def write_model_release(cache: Path, repo_id: str, work: Path | None = None, seed: int = 0,
                        commit: str = DEFAULT_COMMIT, ref: str | None = "main", model_cfg: dict | str | None = None,
                        logit_scale: float | None = None, safe_serialization="both"):  # fmt: skip
    """A random open_clip model (see `save_open_clip`) placed in the HF cache `cache` as `repo_id` at `commit`.
    Returns the open_clip model. The files are written under `work` (kept) or in a scratch folder beside the cache."""
    Path(cache).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=Path(cache).parent) as scratch:
        folder = Path(work or scratch) / f"{repo_id.replace('/', '--')}-{seed}"
        model = save_open_clip(folder, seed, safe_serialization, model_cfg, logit_scale)
        files = {p.name: p for p in folder.iterdir() if p.is_file()}
        write_hub_cache(cache, repo_id, files, commit=commit, ref=ref, move=work is None)
    return model
