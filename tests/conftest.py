"""Shared fixtures: tiny random checkpoints written in the exact real layouts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

TINY_OPEN_CLIP_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 30, "layers": 2, "width": 32, "patch_size": 2, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BIRDS = SHARED_DATA / "birds525"


def pytest_configure(config):
    # Tests must never reach the network: the Hub is only ever a local cache or a local test server.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


DEFAULT_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache_snapshot(
    cache: Path, repo_id: str, repo_type: str = "model", commit: str = DEFAULT_COMMIT, ref: str | None = "main"
) -> Path:
    """Create `<type>s--org--name/{refs/<ref>, snapshots/<commit>/}` as huggingface_hub's cache does; return the
    snapshot. Several commits of one repo may be added; `ref=None` adds a snapshot that no branch points to."""
    repo = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    if ref is not None:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    return snapshot


def write_hub_cache(cache: Path, repo_id: str, files: dict[str, Path], repo_type: str = "model",
                    commit: str = DEFAULT_COMMIT, ref: str | None = "main") -> Path:  # fmt: skip
    """Lay `files` ({path in repo: source}) out exactly like huggingface_hub's cache: blobs named by content hash,
    `snapshots/<commit>/<path>` symlinks to them, `refs/<ref>`; return the snapshot."""
    import hashlib
    import shutil

    snapshot = hub_cache_snapshot(cache, repo_id, repo_type, commit, ref)
    blobs = snapshot.parent.parent / "blobs"
    blobs.mkdir(exist_ok=True)
    for name, src in files.items():
        blob = blobs / hashlib.sha256(Path(src).read_bytes()).hexdigest()
        if not blob.exists():
            shutil.copyfile(src, blob)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    return snapshot


def pytest_report_header(config):
    """Which float kernels run (ATen's SIMD level, threads): tolerances must hold for AVX2 and AVX-512, any count."""
    import torch

    return f"torch {torch.__version__}: cpu capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads"


@pytest.fixture(scope="session")
def tiny_config():
    from bioclip_hf import BioCLIPConfig

    return BioCLIPConfig.from_open_clip(TINY_OPEN_CLIP_CFG)


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory, tiny_config):
    """A tiny random BioCLIP model + processor saved in transformers format."""
    import torch

    from bioclip_hf import BioCLIPImageProcessor, BioCLIPModel, BioCLIPProcessor, load_tokenizer

    torch.manual_seed(0)
    model = BioCLIPModel(tiny_config).eval()
    path = tmp_path_factory.mktemp("tiny_hf")
    model.save_pretrained(path)
    BioCLIPProcessor(BioCLIPImageProcessor(size=30), load_tokenizer()).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_and_processor(tiny_hf_dir):
    from bioclip_hf import BioCLIPModel, BioCLIPProcessor

    return BioCLIPModel.from_pretrained(tiny_hf_dir).eval(), BioCLIPProcessor.from_pretrained(tiny_hf_dir)


def save_open_clip_tiny(path: Path, seed: int = 0, safe_serialization="both", model_cfg: dict | None = None):
    """Build a random open_clip CLIP (default `TINY_OPEN_CLIP_CFG`) and save it with open_clip's own Hub writer;
    returns the model."""
    import types

    import torch

    from bioclip_hf.reference import import_open_clip

    open_clip = import_open_clip()
    from open_clip.push_to_hf_hub import save_for_hf

    model_cfg = model_cfg or TINY_OPEN_CLIP_CFG
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**model_cfg).eval()
    model.visual.image_mean = open_clip.OPENAI_DATASET_MEAN
    model.visual.image_std = open_clip.OPENAI_DATASET_STD
    # open_clip's SimpleTokenizer has no files to save; its writer still expects the method.
    no_files = types.SimpleNamespace(save_pretrained=lambda directory: None)
    save_for_hf(model, no_files, model_cfg, str(path), safe_serialization=safe_serialization)
    assert json.loads((path / "open_clip_config.json").read_text())["model_cfg"] == model_cfg
    return model


@pytest.fixture(scope="session")
def tiny_open_clip(tmp_path_factory):
    """(open_clip model, folder in open_clip's Hub layout with both safetensors and .bin)."""
    path = tmp_path_factory.mktemp("tiny_open_clip")
    return save_open_clip_tiny(path), path


@pytest.fixture(scope="session")
def bird_photos():
    """Up to 20 real photos (paths) from ../shared/data/birds525, or skip when absent."""
    labels = BIRDS / "labels.csv"
    if not labels.is_file():
        pytest.skip(f"real photos not available at {BIRDS}")
    import csv

    with labels.open() as fh:
        rows = list(csv.DictReader(fh))
    return [BIRDS / row["file"] for row in rows[::131][:20]]


from hub_fixtures import hub_dataset, hub_server  # noqa: E402,F401  (local Hub endpoint for push/stream round trips)
