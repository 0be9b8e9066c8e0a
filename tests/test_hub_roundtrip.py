"""Round trips through the local Hub-compatible endpoint with the real clients (huggingface_hub, datasets,
transformers): build shards -> push -> stream by repo id; push model -> load by repo id -> identical outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from support.paths import REPO_ROOT

from bioclip_hf.data.stream import build_dataloader, build_stream

REPO = "tester/tol-mini"


@pytest.fixture
def pushed_dataset(hub_dataset):
    assert hub_dataset[0] == REPO
    return hub_dataset[1]


def test_stream_from_hub_equals_local(pushed_dataset, hub_server):
    remote = list(build_stream(REPO, shuffle_buffer=4, seed=1))
    local = list(build_stream(str(pushed_dataset), shuffle_buffer=4, seed=1))
    assert len(remote) == 12
    assert [(s["key"], s["text"]) for s in remote] == [(s["key"], s["text"]) for s in local]
    assert all(a["image"].tobytes() == b["image"].tobytes() for a, b in zip(remote, local))
    paths = [path for method, path, status in hub_server.state.requests if "/resolve/" in path and status < 300]
    assert any(path.endswith(".tar") for path in paths)  # the shards really came over HTTP


def test_ranks_stream_distinct_shards_from_hub(pushed_dataset):
    keys = [[s["key"] for s in build_stream(REPO, rank=rank, world_size=3, shuffle_buffer=0)] for rank in range(3)]
    assert [len(k) for k in keys] == [4, 4, 4]
    assert len({key for rank_keys in keys for key in rank_keys}) == 12


def test_dataloader_from_hub(pushed_dataset, tiny_model_and_processor):
    _, processor = tiny_model_and_processor
    loader, stats = build_dataloader(REPO, processor, batch_size=5, shuffle_buffer=4)
    batches = list(loader)
    assert [b["input_ids"].shape[0] for b in batches] == [5, 5, 2]
    assert stats.samples == 12 and stats.num_skipped == 0


def test_fresh_process_streams_through_hf_endpoint(pushed_dataset, hub_server):
    """The documented route: HF_ENDPOINT set before anything is imported, nothing patched."""
    code = (
        "import json; from bioclip_hf.data.stream import build_stream; "
        f"print(json.dumps([s['key'] for s in build_stream('{REPO}', shuffle_buffer=0)]))"
    )
    env = {**os.environ, "HF_ENDPOINT": hub_server.url, "HF_HUB_DISABLE_XET": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          cwd=REPO_ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [f"{i:09d}" for i in range(12)]


def test_model_push_and_load_by_repo_id(hub_server, tiny_model_and_processor):
    from transformers import AutoModel

    from bioclip_hf import BioCLIPModel, BioCLIPProcessor

    model, processor = tiny_model_and_processor
    model.push_to_hub("tester/bioclip-roundtrip", token=hub_server.token)
    processor.push_to_hub("tester/bioclip-roundtrip", token=hub_server.token)

    loaded = BioCLIPModel.from_pretrained("tester/bioclip-roundtrip").eval()
    loaded_processor = BioCLIPProcessor.from_pretrained("tester/bioclip-roundtrip")
    remote_code = AutoModel.from_pretrained("tester/bioclip-roundtrip", trust_remote_code=True).eval()
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 30, 30)
    ids = loaded_processor(text=["a photo of Corvus corax.", "a photo of Pica pica."])["input_ids"]
    assert torch.equal(ids, processor(text=["a photo of Corvus corax.", "a photo of Pica pica."])["input_ids"])
    with torch.no_grad():  # the same weights and code on the same inputs in this process: exact
        expected = model(input_ids=ids, pixel_values=pixels).logits_per_image
        assert torch.equal(loaded(input_ids=ids, pixel_values=pixels).logits_per_image, expected)
        assert torch.equal(remote_code(input_ids=ids, pixel_values=pixels).logits_per_image, expected)


def test_hub_api_surface(hub_server, tmp_path):
    """The endpoints the clients rely on behave like the Hub: listing, range reads, deletes and error codes."""
    from huggingface_hub import HfApi, HfFileSystem, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    api = HfApi(token=hub_server.token)
    api.create_repo("tester/misc", repo_type="dataset")
    blob = bytes(range(256)) * 40  # binary -> uploaded through the LFS batch API
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "data.bin").write_bytes(blob)
    (tmp_path / "up" / "notes").mkdir()
    (tmp_path / "up" / "notes" / "a.txt").write_text("hello")
    first = api.upload_folder(folder_path=str(tmp_path / "up"), repo_id="tester/misc", repo_type="dataset")
    assert hub_server.state.lfs_objects  # the binary file went through LFS, the text one inline

    entries = {e.path: e for e in api.list_repo_tree("tester/misc", repo_type="dataset", recursive=True)}
    assert entries["data.bin"].lfs.size == len(blob) and "notes" in entries
    fs = HfFileSystem()
    with fs.open("datasets/tester/misc/data.bin", "rb", block_size=100) as fh:
        fh.seek(1000)
        assert fh.read(50) == blob[1000:1050]
    assert fs.cat("datasets/tester/misc/notes/a.txt") == b"hello"
    assert fs.glob("datasets/tester/misc/**/*.txt") == ["datasets/tester/misc/notes/a.txt"]

    api.delete_file("notes/a.txt", repo_id="tester/misc", repo_type="dataset")
    assert api.list_repo_files("tester/misc", repo_type="dataset") == [".gitattributes", "data.bin"]
    old = hf_hub_download("tester/misc", "notes/a.txt", repo_type="dataset", revision=first.oid)
    assert open(old).read() == "hello"
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("tester/misc", "notes/a.txt", repo_type="dataset")
    with pytest.raises(RevisionNotFoundError):
        api.dataset_info("tester/misc", revision="f" * 40)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("tester/absent")
