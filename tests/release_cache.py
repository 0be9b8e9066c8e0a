"""Tiny random stand-ins for the released models and Tree-of-Life indexes, laid out in the HF cache exactly as
`huggingface_hub` downloads them (model repos in open_clip's Hub layout, dataset repos with `embeddings/*.npy|json`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from conftest import DEFAULT_COMMIT, save_open_clip_tiny, write_hub_cache

from bioclip_hf.treeoflife.index import TreeOfLifeIndex

# A tiny CLIP that takes 224 px images (pybioclip's Tree-of-Life transform is hard-wired to 224 x 224).
TINY_224_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "patch_size": 32, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


def commit_of(tag: str) -> str:
    """A distinct, valid-looking 40-hex commit id per tag (tests only; never a real Hub commit)."""
    import hashlib

    return hashlib.sha1(tag.encode()).hexdigest()


def write_model_release(cache: Path, repo_id: str, work: Path, seed: int = 0, commit: str = DEFAULT_COMMIT,
                        ref: str | None = "main", model_cfg: dict | None = None):  # fmt: skip
    """A random open_clip model saved by open_clip's Hub writer, placed in the cache as `repo_id` at `commit`.
    Returns the open_clip model."""
    folder = work / f"{repo_id.replace('/', '--')}-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    model = save_open_clip_tiny(folder, seed=seed, model_cfg=model_cfg)
    files = {p.name: p for p in folder.iterdir() if p.is_file()}
    write_hub_cache(cache, repo_id, files, commit=commit, ref=ref)
    return model


def write_index_release(cache: Path, repo_id: str, index: TreeOfLifeIndex, work: Path, stems=("txt_emb_species",),
                        commit: str = DEFAULT_COMMIT, ref: str | None = "main", dtype=np.float32) -> Path:  # fmt: skip
    """`embeddings/<stem>.npy` (`[D, N]`) + `.json` for each stem, as a dataset repo in the cache at `commit`."""
    folder = work / f"{repo_id.replace('/', '--')}-{commit[:8]}"
    (folder / "embeddings").mkdir(parents=True, exist_ok=True)
    files = {}
    for stem in stems:
        np.save(folder / "embeddings" / f"{stem}.npy", index.embeddings.T.numpy().astype(dtype))
        (folder / "embeddings" / f"{stem}.json").write_text(json.dumps([t.to_tol_entry() for t in index.taxa]))
        files.update({f"embeddings/{stem}.{ext}": folder / "embeddings" / f"{stem}.{ext}" for ext in ("npy", "json")})
    return write_hub_cache(cache, repo_id, files, repo_type="dataset", commit=commit, ref=ref)


def index_for(dim: int, taxa, seed: int = 0) -> TreeOfLifeIndex:
    """A random index of `taxa` with unit `dim`-sized embeddings (a model's text tower is not needed to test
    how files are found and read; the tiny models embed into 16 dimensions)."""
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.nn.functional.normalize(torch.randn(len(taxa), dim, generator=generator), dim=-1)
    return TreeOfLifeIndex(list(taxa), embeddings)
