"""Hub fixtures: an offline HF cache, a fresh local Hub-compatible endpoint, a synthetic dataset pushed to it."""

from __future__ import annotations

import pytest

from .hub_server import HubServer, hub_environment


@pytest.fixture
def offline_hub_cache(tmp_path, monkeypatch):
    """An empty HF cache (`tmp_path/hub`) read offline, as with `HF_HUB_OFFLINE=1`; fill it with `support.hub_cache`."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


@pytest.fixture
def hub_server(tmp_path):
    """A running `HubServer` (empty); `huggingface_hub`/`datasets`/`transformers` use it via `HF_ENDPOINT`.

    The HF caches point into `tmp_path`, Xet is disabled, and `server.token` is a token to pass to writes.
    """
    from huggingface_hub.utils import close_session

    from bioclip_hf.hub import access

    # A new server may get the port of an earlier test's server: forget what the reachability probe remembered of
    # that port, and drop huggingface_hub's pooled keep-alive connections, which the old server's handler threads
    # would otherwise still answer.
    access._probe_memo.clear()
    close_session()
    with HubServer() as server, hub_environment(server.url, cache_dir=tmp_path / "hf_cache"):
        server.token = "hf_test_token"
        yield server


@pytest.fixture
def hub_dataset(hub_server, tmp_path):
    """`(repo_id, local_dir)`: 12 synthetic samples in 3 shards built by build_shards.py and pushed to `hub_server`."""
    from .paths import import_dataset_scripts
    from .training_data import make_shards

    import_dataset_scripts()
    from push_dataset import push_dataset

    repo_id, out = "tester/tol-mini", tmp_path / "shards"
    make_shards(out, num_images=12, shard_size=4)
    push_dataset(out, repo_id, token=hub_server.token)
    return repo_id, out
