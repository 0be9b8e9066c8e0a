"""An unreachable Hub: fail in seconds with one clear line (or use the cache), never minutes of duplicated retries."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.hub_cache import DEFAULT_COMMIT, hub_cache_snapshot

from bioclip_hf.hub import access as hub_access
from bioclip_hf.hub.access import HubUnavailableError, hub_download_kwargs, is_cached, is_repo_id
from bioclip_hf.hub.registry import DEFAULT_MODEL, get_entry

# huggingface_hub alone would back off 1+2+4+8+8 = 23 s per missing file before failing (the issue: ~80 s per model);
# the fast path takes well under a second, so 20 s leaves a loaded machine room while still catching one back-off.
OFFLINE_LIMIT_S = 20.0
TOL_FILES = ("embeddings/txt_emb_species.npy", "embeddings/txt_emb_species.json")


@pytest.fixture
def closed_port_endpoint():
    """http://127.0.0.1:PORT where nothing listens (the port was free a moment ago): connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def unreachable_hub(closed_port_endpoint, tmp_path, monkeypatch):
    """In-process: huggingface_hub pointed at a refused endpoint with an empty cache; returns the cache."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "ENDPOINT", closed_port_endpoint)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_access, "_probe_memo", {})
    return cache


def test_repo_ids_and_local_paths(tmp_path):
    assert is_repo_id("imageomics/bioclip") and is_repo_id("gpt2") and is_repo_id("org/model.v2")
    assert not is_repo_id("./model") and not is_repo_id("/abs/model") and not is_repo_id("a/b/c")
    (tmp_path / "org").mkdir()
    assert not is_repo_id(tmp_path / "org")


def test_is_cached_follows_the_cache_layout(tmp_path):
    snapshot = hub_cache_snapshot(tmp_path, "imageomics/TreeOfLife-10M", repo_type="dataset")
    assert not is_cached("imageomics/TreeOfLife-10M", "dataset", cache_dir=str(tmp_path))  # empty snapshot
    (snapshot / "embeddings").mkdir()
    (snapshot / TOL_FILES[0]).write_bytes(b"x")
    assert is_cached("imageomics/TreeOfLife-10M", "dataset", cache_dir=str(tmp_path))
    assert not is_cached("imageomics/TreeOfLife-10M", "model", cache_dir=str(tmp_path))
    assert not is_cached("imageomics/TreeOfLife-10M", "dataset", revision="v2", cache_dir=str(tmp_path))
    assert is_cached("imageomics/TreeOfLife-10M", "dataset", revision=snapshot.name, cache_dir=str(tmp_path))
    assert not is_cached("imageomics/TreeOfLife-10M", "dataset", revision="f" * 40, cache_dir=str(tmp_path))


def test_unreachable_and_not_cached_is_one_clear_error(unreachable_hub, closed_port_endpoint):
    with pytest.raises(HubUnavailableError) as info:
        hub_download_kwargs("imageomics/bioclip", local_alternative="a local checkpoint folder (--model ./folder)")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"cannot reach the Hugging Face Hub at {closed_port_endpoint} (")
    assert f"model imageomics/bioclip is not in the local cache ({unreachable_hub})" in message
    assert "`hf download imageomics/bioclip`" in message and "HF_HUB_OFFLINE=1" in message
    assert message.endswith("or use a local checkpoint folder (--model ./folder)")
    with pytest.raises(HubUnavailableError, match=r"hf download imageomics/TreeOfLife-10M embeddings/txt_emb_species"
                       r"\.npy embeddings/txt_emb_species\.json --repo-type dataset --revision v1`"):  # fmt: skip
        hub_download_kwargs("imageomics/TreeOfLife-10M", "dataset", "v1", download_files=TOL_FILES)
    assert isinstance(info.value, OSError)  # the CLI reports OSErrors as one line, exit status 2


def test_unreachable_but_cached_uses_the_cache(unreachable_hub):
    snapshot = hub_cache_snapshot(unreachable_hub, "imageomics/bioclip")
    (snapshot / "config.json").write_text("{}")
    assert hub_download_kwargs("imageomics/bioclip") == {"local_files_only": True}
    assert hub_download_kwargs("./not/a/repo") == {}  # local paths are left to the loader


def test_offline_mode_without_cache_says_so(unreachable_hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubUnavailableError, match=r"^HF_HUB_OFFLINE=1 is set and model org/missing is not in"):
        hub_download_kwargs("org/missing")


def test_a_hub_that_errors_or_never_answers_counts_as_unreachable(unreachable_hub, monkeypatch):
    """HTTP 5xx (the Hub is down) and a silent endpoint (a black-holed network) fail like a refused connection."""
    import http.server
    import threading

    from huggingface_hub import constants

    class Down(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802 (http.server's naming)
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args):
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Down) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(HubUnavailableError, match=r"\(HTTP 503\) and model org/name is not in the local cache"):
            hub_download_kwargs("org/name")
        server.shutdown()
    with socket.socket() as silent:  # accepts connections (kernel backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
        with pytest.raises(HubUnavailableError, match=r"\(no answer within 1 s\)"):
            hub_download_kwargs("org/name")


def test_a_reachable_hub_changes_nothing(hub_server, monkeypatch):
    monkeypatch.setattr(hub_access, "_probe_memo", {})  # this test is about the probe itself: nothing remembered
    assert hub_download_kwargs("tester/anything") == {}
    requests = hub_server.state.requests
    assert any(method == "HEAD" and path == "/" for method, path, _ in requests), (hub_server.url, requests[:5])


# -- the command line, as a user meets it: a fresh process, nothing cached, the endpoint refuses connections --
DRIVER = textwrap.dedent("""
    import sys, time
    # Imported before the clock starts: the limit is on what the command does, not on loading torch/transformers
    # (the same for every command, and slow on a busy machine).
    import bioclip_hf.inference.classify, bioclip_hf.evaluation.harness, bioclip_hf.models.bioclip.modeling_bioclip
    from bioclip_hf.cli import main
    start = time.monotonic()
    code = main(sys.argv[1:])
    print(f"ELAPSED {time.monotonic() - start:.3f}")
    sys.exit(code)
""")


def _run_cli(args, endpoint, home, timeout=300):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "TRANSFORMERS_"))}
    env.update({"HF_ENDPOINT": endpoint, "HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1",
                "PYTHONPATH": str(Path(__file__).resolve().parents[1])})  # fmt: skip
    result = subprocess.run([sys.executable, "-c", DRIVER, *args], capture_output=True, text=True, env=env,
                            cwd=home, timeout=timeout)  # fmt: skip
    elapsed = float(result.stdout.split("ELAPSED ")[-1]) if "ELAPSED " in result.stdout else float("inf")
    return result, elapsed


def _photo(folder: Path) -> Path:
    from PIL import Image

    path = folder / "photos" / "bird" / "photo.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), (120, 80, 40)).save(path)
    return path


def _assert_one_line_each(stderr: str):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == len(set(lines)), f"duplicated lines:\n{stderr}"
    return lines


def _assert_offline_error(line: str, command: str, endpoint: str):
    assert line.startswith(f"bioclip-hf {command}: error: cannot reach the Hugging Face Hub at {endpoint}")
    assert f"model {DEFAULT_MODEL} is not in the local cache" in line and "--model ./folder" in line


def test_cli_fails_fast_with_one_line_when_the_hub_is_unreachable(closed_port_endpoint, tmp_path):
    result, elapsed = _run_cli(["predict", str(_photo(tmp_path))], closed_port_endpoint, tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = _assert_one_line_each(result.stderr)
    assert len(lines) == 1, result.stderr
    _assert_offline_error(lines[0], "predict", closed_port_endpoint)
    assert elapsed < OFFLINE_LIMIT_S, f"predict took {elapsed:.1f} s to fail"


@pytest.mark.parametrize("command", ["embed", "evaluate"])
def test_embed_and_evaluate_share_the_fast_failure(command, unreachable_hub, closed_port_endpoint, tmp_path, capsys):
    """Same loading path as predict (`load_model_and_processor`); in-process, so the process-wide logging setup
    is the subprocess test's business."""
    import time

    from bioclip_hf.cli import main

    photo = _photo(tmp_path)
    args = {"embed": ["embed", str(photo), "-o", str(tmp_path / "e.npy")],
            "evaluate": ["evaluate", "--data-dir", str(photo.parents[1]), "--shots"]}[command]  # fmt: skip
    start = time.monotonic()
    assert main(args) == 2
    assert time.monotonic() - start < OFFLINE_LIMIT_S
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    _assert_offline_error(lines[0], command, closed_port_endpoint)


def test_cli_model_cached_index_not_and_verbose_details(closed_port_endpoint, tiny_hf_dir, tmp_path):
    """The model comes from the cache without waiting; the missing Tree-of-Life index is the one-line error."""
    import shutil

    entry = get_entry(DEFAULT_MODEL)  # the default model at its pinned commit, as the loader asks for it
    snapshot = hub_cache_snapshot(tmp_path / "hub", DEFAULT_MODEL, commit=entry.revision or DEFAULT_COMMIT)
    shutil.copytree(tiny_hf_dir, snapshot, dirs_exist_ok=True)
    result, elapsed = _run_cli(["--verbose", "predict", str(_photo(tmp_path))], closed_port_endpoint, tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = _assert_one_line_each(result.stderr)
    error = lines[-1]
    index = entry.index
    assert error.startswith("bioclip-hf predict: error: cannot reach the Hugging Face Hub") and "--index DIR" in error
    assert f"dataset {index.repo_id} is not in the local cache" in error
    assert f"hf download {index.repo_id} {index.files[0].embeddings} {index.files[0].names} --repo-type dataset" in error
    # --verbose: the probe's details, once (one probe serves the model and the index), and the cache being used
    details = [line for line in lines if "is not reachable" in line]
    assert len(details) == 1 and details[0].startswith("INFO bioclip_hf.hub.access: Hub endpoint"), lines
    assert any(f"using the cached copy of {DEFAULT_MODEL}" in line for line in lines), lines
    assert elapsed < OFFLINE_LIMIT_S
    assert json.loads((snapshot / "config.json").read_text())  # the cached model was really there
