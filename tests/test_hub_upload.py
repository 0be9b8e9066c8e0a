"""`bioclip_hf.hub.upload`: the one Hub upload path (local Hub test server), its four callers, and the cards
rendered from their template files (`bioclip_hf/hub/templates/`)."""

from __future__ import annotations

import types
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from support.paths import DATASET_SCRIPTS, import_dataset_scripts
from support.training_data import make_shards

from bioclip_hf.hub import cards
from bioclip_hf.hub import upload as upload_module
from bioclip_hf.hub.upload import HubUploadError, upload


def _repo_files(repo_id: str, repo_type: str = "model") -> set[str]:
    from huggingface_hub import HfApi

    return set(HfApi().list_repo_files(repo_id, repo_type=repo_type))


def _commit_titles(repo_id: str, repo_type: str = "model") -> list[str]:
    from huggingface_hub import HfApi

    return [c.title for c in HfApi().list_repo_commits(repo_id, repo_type=repo_type)]


def _read(repo_id: str, name: str, repo_type: str = "model") -> bytes:
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id, name, repo_type=repo_type)).read_bytes()


# -- the helper ----------------------------------------------------------------------------------------
def test_upload_folder_creates_the_repo_and_commits_once(hub_server, tmp_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "sub" / "weights.safetensors").write_bytes(bytes(range(256)) * 4)
    (folder / "notes.log").write_text("not for the Hub")

    commit = upload("tester/up-folder", folder=folder, commit_message="first upload", token=hub_server.token,
                    allow_patterns=["*.json", "sub/*"])  # fmt: skip
    assert commit.commit_url == f"{hub_server.url}/tester/up-folder/commit/{commit.oid}"
    assert str(commit.repo_url) == f"{hub_server.url}/tester/up-folder"
    assert _repo_files("tester/up-folder") == {".gitattributes", "config.json", "sub/weights.safetensors"}
    assert _read("tester/up-folder", "sub/weights.safetensors") == bytes(range(256)) * 4
    # The repo exists now: a second upload keeps it (exist_ok) and adds one commit.
    (folder / "config.json").write_text('{"a": 2}')
    second = upload("tester/up-folder", folder=folder, commit_message="second", token=hub_server.token,
                    allow_patterns=["*.json"])  # fmt: skip
    assert second.oid != commit.oid
    assert _commit_titles("tester/up-folder") == ["second", "first upload", "initial commit"]
    assert _read("tester/up-folder", "config.json") == b'{"a": 2}'


def test_upload_files_deletes_stale_matches_in_the_same_commit(hub_server, tmp_path):
    part = tmp_path / "p0.parquet"
    part.write_bytes(b"PAR1 first")
    first = {"data/p0.parquet": part, "data/p1.parquet": b"PAR1 second", "errors.csv": b"file,error\n",
             "keep.txt": b"kept"}  # fmt: skip
    upload("tester/up-files", files=first, repo_type="dataset", commit_message="one", token=hub_server.token)
    assert _repo_files("tester/up-files", "dataset") == {".gitattributes", *first}

    commit = upload("tester/up-files", files={"data/p0.parquet": b"PAR1 new", "README.md": b"# card\n"},
                    repo_type="dataset", delete_patterns=["data/*", "errors.csv"], commit_message="two",
                    token=hub_server.token)  # fmt: skip
    assert commit.commit_url.startswith(f"{hub_server.url}/datasets/tester/up-files/commit/")
    # data/p1 and errors.csv match a pattern and are not re-uploaded: gone; keep.txt matches none: kept.
    assert _repo_files("tester/up-files", "dataset") == {".gitattributes", "data/p0.parquet", "README.md", "keep.txt"}
    assert _read("tester/up-files", "data/p0.parquet", "dataset") == b"PAR1 new"
    assert _commit_titles("tester/up-files", "dataset") == ["two", "one", "initial commit"]


def test_upload_passes_private_and_revision(hub_server, monkeypatch):
    from huggingface_hub import HfApi

    seen = {}
    real_create, real_commit = HfApi.create_repo, HfApi.create_commit

    def create_repo(self, repo_id, **kwargs):
        seen["create"] = kwargs
        return real_create(self, repo_id, **kwargs)

    def create_commit(self, repo_id, operations, **kwargs):
        seen["commit"] = kwargs
        return real_commit(self, repo_id, operations, **kwargs)

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    upload("tester/secret", files={"a.txt": b"a"}, private=True, revision="main", commit_message="m",
           token=hub_server.token)  # fmt: skip
    assert seen["create"]["private"] is True and seen["create"]["exist_ok"] is True
    assert seen["create"]["repo_type"] == "model"
    assert seen["commit"]["revision"] == "main" and seen["commit"]["commit_message"] == "m"
    assert _repo_files("tester/secret") == {".gitattributes", "a.txt"}


def test_upload_errors_are_one_line_and_name_the_repo(hub_server, tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    with pytest.raises(HubUploadError) as err:  # like the Hub: a branch that does not exist
        upload("tester/branchy", files={"a.txt": b"a"}, revision="dev", commit_message="m", token=hub_server.token)
    assert str(err.value) == "upload to model repo tester/branchy failed: Invalid rev id: dev"
    assert isinstance(err.value, OSError)
    with pytest.raises(ValueError, match="must look like 'owner/name', got 'no-owner'"):
        upload("no-owner", files={"a.txt": b"a"}, commit_message="m")
    with pytest.raises(ValueError, match="repo type must be one of model, dataset, space, got 'bucket'"):
        upload("tester/x", files={"a.txt": b"a"}, repo_type="bucket", commit_message="m")
    with pytest.raises(ValueError, match="tester/x: give a folder or files, not neither"):
        upload("tester/x", commit_message="m")
    with pytest.raises(ValueError, match="not both"):
        upload("tester/x", folder=tmp_path, files={"a": b"a"}, commit_message="m")
    with pytest.raises(FileNotFoundError, match="upload to tester/x: folder not found: .*missing"):
        upload("tester/x", folder=tmp_path / "missing", commit_message="m")
    with pytest.raises(FileNotFoundError, match="upload to tester/x: file\\(s\\) not found: .*gone.bin"):
        upload("tester/x", files={"gone.bin": tmp_path / "gone.bin"}, commit_message="m")
    assert _repo_files("tester/branchy") == {".gitattributes"}  # the repo was created, nothing committed
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubUploadError, match=r"^upload to dataset repo tester/y failed: .*offline mode") as err:
        upload("tester/y", files={"a.txt": b"a"}, repo_type="dataset", commit_message="m")
    assert "\n" not in str(err.value)


# -- the four callers go through it -----------------------------------------------------------------------
@pytest.fixture
def upload_calls(monkeypatch):
    """Every call of `bioclip_hf.hub.upload.upload` as (repo_id, kwargs); each still uploads (to the test Hub)."""
    calls = []

    def spy(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return upload(repo_id, **kwargs)

    monkeypatch.setattr(upload_module, "upload", spy)
    return calls


def test_training_push_to_hub_uses_upload(hub_server, upload_calls, tmp_path, monkeypatch):
    from bioclip_hf.training.trainer import push_to_hub

    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    url = push_to_hub(folder, types.SimpleNamespace(push_to_hub="tester/trained", hub_private=True))
    assert url == f"{hub_server.url}/tester/trained"
    [(repo_id, kwargs)] = upload_calls
    assert (repo_id, kwargs["folder"], kwargs["private"]) == ("tester/trained", folder, True)
    assert kwargs["commit_message"] == "Upload model trained with bioclip-hf" and "repo_type" not in kwargs
    assert _repo_files("tester/trained") == {".gitattributes", "config.json"}


def test_push_command_uses_upload(hub_server, upload_calls, tiny_hf_dir, monkeypatch, capsys):
    from bioclip_hf.cli import main

    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    assert main(["push", str(tiny_hf_dir), "tester/pushed", "--no-open-clip", "--commit-message", "hello"]) == 0
    [(repo_id, kwargs)] = upload_calls
    assert (repo_id, kwargs["commit_message"], kwargs["private"]) == ("tester/pushed", "hello", False)
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed.startswith(f"{hub_server.url}/tester/pushed/commit/")
    assert {"README.md", "config.json", "model.safetensors"} <= _repo_files("tester/pushed")
    assert _commit_titles("tester/pushed")[0] == "hello"


def _write_parts(folder: Path, sizes: list[int]) -> dict[int, Path]:
    from bioclip_hf.inference.parquet import write_part

    folder.mkdir(parents=True, exist_ok=True)
    parts, start = {}, 0
    for block, size in enumerate(sizes):
        table = pa.table({"file": [f"img{start + i}.jpg" for i in range(size)],
                          "embedding": [[float(start + i), 1.0] for i in range(size)]})  # fmt: skip
        parts[block] = write_part(folder, block, table, {"images": size + 1, "errors": 1})
        start += size
    return parts


def test_batch_push_parts_uses_upload_and_drops_stale_parts(hub_server, upload_calls, tmp_path):
    from bioclip_hf.inference.publish import push_parts

    metadata = {"command": "embed", "model": "imageomics/bioclip", "options": {"batch_size": 2}}
    errors = [{"key": "bad.jpg", "error": "cannot identify image"}]
    url = push_parts(_write_parts(tmp_path / "run1", [2, 3, 0]), "tester/emb", metadata, errors, token=hub_server.token)
    assert url == f"{hub_server.url}/datasets/tester/emb"
    files = {".gitattributes", "README.md", "errors.csv", "data/part-000000.parquet", "data/part-000001.parquet"}
    assert _repo_files("tester/emb", "dataset") == files  # the empty part stays home
    # A second, smaller run without errors: its commit removes part 1 and errors.csv.
    push_parts(_write_parts(tmp_path / "run2", [4]), "tester/emb", metadata, (), token=hub_server.token)
    assert _repo_files("tester/emb", "dataset") == {".gitattributes", "README.md", "data/part-000000.parquet"}
    assert _commit_titles("tester/emb", "dataset")[:2] == ["bioclip-hf embed: 4 rows from 5 images",
                                                           "bioclip-hf embed: 5 rows from 8 images"]  # fmt: skip
    assert [(repo_id, kwargs["repo_type"]) for repo_id, kwargs in upload_calls] == [("tester/emb", "dataset")] * 2
    card = cards.build_results_card("tester/emb", metadata, ["file", "embedding"], 4, 5, 1, 0)
    assert _read("tester/emb", "README.md", "dataset").decode() == str(card)
    assert upload_calls[1][1]["files"]["README.md"] == str(card).encode()


def test_push_dataset_script_uses_upload(hub_server, upload_calls, tmp_path):
    import_dataset_scripts()
    from push_dataset import push_dataset

    out = tmp_path / "shards"
    make_shards(out, num_images=4, shard_size=2, bad_rows=False)
    (out / "scratch.txt").write_text("left out by allow_patterns")
    url = push_dataset(out, "tester/tol-tiny", token=hub_server.token, private=True)
    [(repo_id, kwargs)] = upload_calls
    assert (repo_id, kwargs["repo_type"], kwargs["private"], Path(kwargs["folder"])) == ("tester/tol-tiny", "dataset", True, out)
    assert url.startswith(f"{hub_server.url}/datasets/tester/tol-tiny/commit/")
    assert _repo_files("tester/tol-tiny", "dataset") == {".gitattributes", "README.md", "build_report.json",
                                                         "train/shard-00000.tar", "train/shard-00001.tar"}  # fmt: skip
    assert _commit_titles("tester/tol-tiny", "dataset")[0] == "Upload 4 samples in 2 shards"


# -- cards come from their template files -------------------------------------------------------------------
def test_results_card_renders_its_template(tmp_path, monkeypatch):
    metadata = {"command": "predict", "model": "imageomics/bioclip", "commit": "abc1234", "options": {"k": 5}}
    card = cards.build_results_card("me/preds", metadata, ["file", "label", "score"], 12345, 12346, 2, 1)
    assert cards.RESULTS_TEMPLATE_PATH == Path(cards.__file__).parent / "templates" / "results_card.md"
    text = str(card)
    assert card.data.tags == ["bioclip", "biology", "tree-of-life", "predictions"]
    assert card.data.configs == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/*.parquet"}]}]
    assert "\n# preds\n\nPredictions of 12,346 images made with [bioclip-hf]" in text
    assert "[`imageomics/bioclip`](https://huggingface.co/imageomics/bioclip) (revision `abc1234`)." in text
    assert "- rows: 12,345 in 2 Parquet file(s) under `data/`\n- columns: `file`, `label`, `score`\n" in text
    assert "- unreadable images: 1 (listed in `errors.csv`)\n" in text
    assert 'ds = load_dataset("me/preds", split="train")' in text and '```json\n{\n  "k": 5\n}\n```\n' in text
    assert "{{" not in text and "{%" not in text and text.endswith("```\n")
    # The text is the template's: an edited copy changes the card.
    edited = tmp_path / "results_card.md"
    edited.write_text(cards.RESULTS_TEMPLATE_PATH.read_text().replace("## Usage", "## Usage (edited)"))
    monkeypatch.setattr(cards, "RESULTS_TEMPLATE_PATH", edited)
    assert "## Usage (edited)" in str(cards.build_results_card("me/preds", metadata, ["file"], 1, 1, 1, 0))
    with pytest.raises(FileNotFoundError, match="dataset card template not found: .*nope.md"):
        cards.build_results_card("me/preds", metadata, ["file"], 1, 1, 1, 0, template_path=tmp_path / "nope.md")


def test_dataset_card_renders_the_package_template(tmp_path, monkeypatch):
    import_dataset_scripts()
    from dataset_card import write_dataset_card

    # dataset_scripts/dataset_card.md is the package's template (one file).
    assert (DATASET_SCRIPTS / "dataset_card.md").resolve() == cards.DATASET_TEMPLATE_PATH.resolve()
    assert cards.DATASET_TEMPLATE_PATH.parent == Path(cards.__file__).parent / "templates"
    report = types.SimpleNamespace(
        num_samples=1500, splits={"validation": 500, "train": 1000}, num_skipped=3, skipped={"corrupt": 1, "missing": 2},
        shards=[{"path": "train/shard-00000.tar", "bytes": 100, "num_samples": 600},
                {"path": "train/shard-00001.tar", "bytes": 50, "num_samples": 400},
                {"path": "validation/shard-00000.tar", "bytes": 70, "num_samples": 500}],
    )  # fmt: skip
    text = write_dataset_card(tmp_path, report, name="my-tol", repo_id="me/my-tol").read_text()
    meta = yaml.safe_load(text.split("---")[1])
    assert meta["pretty_name"] == "my-tol" and meta["size_categories"] == ["1K<n<10K"]
    assert meta["dataset_info"]["splits"] == [{"name": "train", "num_bytes": 150, "num_examples": 1000},
                                              {"name": "validation", "num_bytes": 70, "num_examples": 500}]  # fmt: skip
    assert "- **Samples:** 1500 (train: 1000, validation: 500)\n" in text
    assert "- **Shards:** 3 tar files, up to 600 samples each\n" in text
    assert "- **Skipped while building:** 3 catalog rows (corrupt: 1, missing: 2); see `build_report.json`" in text
    assert '`{"kingdom": ..., "species": "corax", "common_name": ...}`' in text
    assert 'load_dataset("me/my-tol", split="train", streaming=True)' in text
    assert "Released under `cc0-1.0`;" in text and "{{" not in text and "{%" not in text and text.endswith("`source.txt`).\n")
    empty = types.SimpleNamespace(num_samples=0, splits={}, num_skipped=0, skipped={}, shards=[])
    assert "(see `source.txt`)" in write_dataset_card(tmp_path, empty, name="x").read_text()
    assert "0 catalog rows (none)" in (tmp_path / "README.md").read_text()
    edited = tmp_path / "dataset_card.md"
    edited.write_text(cards.DATASET_TEMPLATE_PATH.read_text().replace("## Usage", "## Usage (edited)"))
    monkeypatch.setattr(cards, "DATASET_TEMPLATE_PATH", edited)
    assert "## Usage (edited)" in write_dataset_card(tmp_path, report, name="my-tol").read_text()
