"""Fixtures and hooks only; the helpers live in `tests/support/` (see its `__init__`)."""

from __future__ import annotations

import os

import pytest
from support.batch import batch_workspace  # noqa: F401  (fixture: photos + index of the batch-inference tests)
from support.hub_fixtures import hub_dataset, hub_server, offline_hub_cache  # noqa: F401  (fixtures)
from support.models import TINY_OPEN_CLIP_CFG, save_open_clip
from support.paths import BIRDS


def pytest_configure(config):
    # Tests must never reach the network: the Hub is only ever a local cache or a local test server.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # bioclip-hf's own caches (label embeddings, quantized weights, index copies) go to a folder of this session,
    # never the user's ~/.cache; tests that check a cache point it at their own tmp_path.
    if "BIOCLIP_HF_CACHE" not in os.environ:
        import tempfile

        os.environ["BIOCLIP_HF_CACHE"] = tempfile.mkdtemp(prefix="bioclip-hf-test-cache-")


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


@pytest.fixture(scope="session")
def tiny_open_clip(tmp_path_factory):
    """(open_clip model, folder in open_clip's Hub layout with both safetensors and .bin)."""
    path = tmp_path_factory.mktemp("tiny_open_clip")
    return save_open_clip(path), path


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
