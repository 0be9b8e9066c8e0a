"""Pytest fixture `hub_server`: a fresh local Hub-compatible endpoint with the HF clients pointed at it."""

from __future__ import annotations

import pytest
from hub_server import HubServer, hub_environment


@pytest.fixture
def hub_server(tmp_path):
    """A running `HubServer` (empty); `huggingface_hub`/`datasets`/`transformers` use it via `HF_ENDPOINT`.

    The HF caches point into `tmp_path`, Xet is disabled, and `server.token` is a token to pass to writes.
    """
    with HubServer() as server, hub_environment(server.url, cache_dir=tmp_path / "hf_cache"):
        server.token = "hf_test_token"
        yield server


@pytest.fixture
def hub_dataset(hub_server, tmp_path):
    """`(repo_id, local_dir)`: 12 synthetic samples in 3 shards built by build_shards.py and pushed to `hub_server`."""
    from synthetic_tol import import_dataset_scripts, make_shards

    import_dataset_scripts()
    from push_dataset import push_dataset

    repo_id, out = "tester/tol-mini", tmp_path / "shards"
    make_shards(out, num_images=12, shard_size=4)
    push_dataset(out, repo_id, token=hub_server.token)
    return repo_id, out
