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


def hub_cache_snapshot(cache: Path, repo_id: str, repo_type: str = "model") -> Path:
    """Create `<type>s--org--name/{refs/main, snapshots/<sha>/}` as huggingface_hub's cache does; return the snapshot."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
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


def save_open_clip_tiny(path: Path, seed: int = 0, safe_serialization="both"):
    """Build a random open_clip CLIP and save it with open_clip's own Hub writer; returns the model."""
    import types

    import torch

    from bioclip_hf.reference import import_open_clip

    open_clip = import_open_clip()
    from open_clip.push_to_hf_hub import save_for_hf

    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**TINY_OPEN_CLIP_CFG).eval()
    model.visual.image_mean = open_clip.OPENAI_DATASET_MEAN
    model.visual.image_std = open_clip.OPENAI_DATASET_STD
    # open_clip's SimpleTokenizer has no files to save; its writer still expects the method.
    no_files = types.SimpleNamespace(save_pretrained=lambda directory: None)
    save_for_hf(model, no_files, TINY_OPEN_CLIP_CFG, str(path), safe_serialization=safe_serialization)
    assert json.loads((path / "open_clip_config.json").read_text())["model_cfg"] == TINY_OPEN_CLIP_CFG
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
