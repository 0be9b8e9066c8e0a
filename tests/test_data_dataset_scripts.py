"""dataset_scripts/: catalog -> TreeOfLife-style shards, report, dataset card, push to a (local) Hub."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from support.images import make_image
from support.paths import DATASET_SCRIPTS, import_dataset_scripts
from support.training_data import TAXA, make_catalog

import_dataset_scripts()
from build_shards import BuildConfig, build_shards  # noqa: E402

from bioclip_hf.treeoflife.taxonomy import TEXT_TYPES, Taxon  # noqa: E402

NUM_IMAGES = 22


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    catalog = make_catalog(root / "catalog", NUM_IMAGES)
    report = build_shards(catalog, root / "shards", BuildConfig(shard_size=5, name="synthetic-tol"))
    return catalog, root / "shards", report


def _members(tar_path: Path) -> dict[str, bytes]:
    with tarfile.open(tar_path) as tar:
        return {member.name: tar.extractfile(member).read() for member in tar.getmembers()}


def test_report_counts_samples_shards_and_skipped_rows(built):
    _, out, report = built
    assert report.num_samples == NUM_IMAGES
    assert report.skipped == {"corrupt": 1, "missing": 1, "no_taxon": 1}
    assert sorted(row["reason"] for row in report.skipped_rows) == ["corrupt", "missing", "no_taxon"]
    assert [shard["num_samples"] for shard in report.shards] == [5, 5, 5, 5, 2]
    saved = json.loads((out / "build_report.json").read_text())
    assert saved["num_skipped"] == 3 and saved["splits"] == {"train": NUM_IMAGES}
    for shard in report.shards:
        data = (out / shard["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"] and len(data) == shard["bytes"]


def test_samples_hold_image_five_texts_and_taxon(built):
    from PIL import Image

    _, out, _ = built
    members = _members(out / "train" / "shard-00000.tar")
    keys = sorted({name.split(".", 1)[0] for name in members})
    assert keys == [f"{i:09d}" for i in range(5)]
    expected_fields = {"jpg", "taxon.json", "source.txt", "taxonomic.txt", "scientific.txt", "common.txt",
                       "taxonomic_common.txt", "scientific_common.txt"}  # fmt: skip
    for index, key in enumerate(keys):
        fields = {name.split(".", 1)[1]: data for name, data in members.items() if name.startswith(key + ".")}
        assert set(fields) == expected_fields
        taxon = Taxon.from_dict(json.loads(fields["taxon.json"]))
        assert taxon == Taxon(*TAXA[index % len(TAXA)])
        for text_type in TEXT_TYPES:
            stored = fields[text_type.replace("+", "_") + ".txt"].decode()
            assert stored == taxon.text(text_type)
        image = Image.open(io.BytesIO(fields["jpg"]))
        assert image.format == "JPEG"
        # PNG / RGBA inputs are re-encoded, JPEGs are stored byte-identical.
        if index % 4 == 0:
            assert fields["jpg"] == make_image(index, "JPEG", "RGB")


def test_build_is_deterministic(built, tmp_path):
    catalog, out, report = built
    again = build_shards(catalog, tmp_path / "again", BuildConfig(shard_size=5, name="synthetic-tol"))
    assert [s["sha256"] for s in again.shards] == [s["sha256"] for s in report.shards]
    assert (tmp_path / "again" / "README.md").read_text() == (out / "README.md").read_text()


def test_dataset_card_yaml(built):
    _, out, report = built
    text = (out / "README.md").read_text()
    meta = yaml.safe_load(text.split("---")[1])
    assert meta["license"] == "cc0-1.0"
    assert meta["size_categories"] == ["n<1K"]
    assert "zero-shot-image-classification" in meta["task_categories"]
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "train/*.tar"}]}]
    features = {feature["name"]: feature for feature in meta["dataset_info"]["features"]}
    assert features["jpg"]["dtype"] == "image"
    assert {f["name"] for f in features["taxon.json"]["struct"]} >= {"kingdom", "species", "common_name"}
    assert meta["dataset_info"]["splits"][0]["num_examples"] == NUM_IMAGES
    assert f"{NUM_IMAGES}" in text and "corrupt: 1" in text


def test_shards_stream_with_datasets(built):
    from datasets import load_dataset
    from PIL import Image

    _, out, _ = built
    ds = load_dataset(str(out), split="train", streaming=True)
    rows = list(ds)
    assert len(rows) == NUM_IMAGES
    assert isinstance(rows[0]["jpg"], Image.Image)
    assert rows[3]["taxon.json"]["genus"] == TAXA[3][5]
    assert rows[3]["scientific.txt"] == f"{TAXA[3][5]} {TAXA[3][6]}"


def test_splits_and_url_images(tmp_path):
    catalog = make_catalog(tmp_path / "catalog", 8, bad_rows=False, splits=True)
    text = catalog.read_text().replace("images/001.png", (tmp_path / "catalog" / "images" / "001.png").as_uri())
    catalog.write_text(text)
    report = build_shards(catalog, tmp_path / "out", BuildConfig(shard_size=4))
    assert report.splits == {"train": 6, "validation": 2}
    assert (tmp_path / "out" / "validation" / "shard-00000.tar").is_file()
    meta = yaml.safe_load((tmp_path / "out" / "README.md").read_text().split("---")[1])
    assert [f["split"] for f in meta["configs"][0]["data_files"]] == ["train", "validation"]


def test_bad_inputs_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="catalog not found"):
        build_shards(tmp_path / "nope.csv", tmp_path / "out")
    (tmp_path / "cat.csv").write_text("kingdom,genus\nAnimalia,Corvus\n")
    with pytest.raises(ValueError, match="no image column"):
        build_shards(tmp_path / "cat.csv", tmp_path / "out")
    with pytest.raises(ValueError, match="shard_size"):
        BuildConfig(shard_size=0)
    (tmp_path / "bad.csv").write_text("image,kingdom\nmissing.jpg,Animalia\n")
    with pytest.raises(ValueError, match="no valid samples"):
        build_shards(tmp_path / "bad.csv", tmp_path / "out")


def test_cli_runs_as_a_script(tmp_path):
    catalog = make_catalog(tmp_path / "catalog", 4)
    script = DATASET_SCRIPTS / "build_shards.py"
    done = subprocess.run([sys.executable, str(script), str(catalog), str(tmp_path / "out"), "--shard-size", "3"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["num_samples"] == 4
    bad = subprocess.run([sys.executable, str(script), str(tmp_path / "none.csv"), str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "catalog not found" in bad.stderr


def test_push_dataset_to_local_hub(built, hub_server, tmp_path):
    import shutil

    from datasets import load_dataset
    from huggingface_hub import HfApi
    from push_dataset import push_dataset

    out = Path(shutil.copytree(built[1], tmp_path / "shards"))
    url = push_dataset(out, "tester/synthetic-tol", token=hub_server.token)
    assert url.startswith(hub_server.url)
    files = HfApi().list_repo_files("tester/synthetic-tol", repo_type="dataset")
    assert {"README.md", "build_report.json", "train/shard-00000.tar", "train/shard-00004.tar"} <= set(files)
    info = HfApi().dataset_info("tester/synthetic-tol")
    assert info.card_data["license"] == "cc0-1.0"
    assert "load_dataset(\"tester/synthetic-tol\"" in (out / "README.md").read_text()
    rows = list(load_dataset("tester/synthetic-tol", split="train", streaming=True))
    assert [row["__key__"] for row in rows] == [f"{i:09d}" for i in range(NUM_IMAGES)]
    with pytest.raises(FileNotFoundError, match="build_report.json"):
        push_dataset(out / "train", "tester/other", token=hub_server.token)
