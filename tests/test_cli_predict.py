"""`bioclip-hf predict / embed / list-taxa / build-index` end to end on a tiny random model."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from support.images import write_image
from support.treeoflife import random_taxa

from bioclip_hf.cli import main
from bioclip_hf.treeoflife.taxonomy import RANKS


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_hf_dir):
    """Photos (one corrupt), a taxa table covering every rank with empty ranks, and an index built by the CLI."""
    root = tmp_path_factory.mktemp("cli")
    for i, name in enumerate(["photos/a.jpg", "photos/sub/b.png"]):
        write_image(root / name, i)
    (root / "photos" / "corrupt.jpg").write_bytes(b"\xff\xd8 truncated")
    with open(root / "taxa.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*RANKS, "common_name"])
        writer.writeheader()
        writer.writerows(t.to_dict() for t in random_taxa(30))
    code = main(["build-index", str(root / "taxa.csv"), "--output", str(root / "index"), "--model", str(tiny_hf_dir),
                 "--templates", "single", "--batch-size", "7", "--no-progress"])  # fmt: skip
    assert code == 0
    return root


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_build_index_output(workspace):
    files = sorted(p.name for p in (workspace / "index").iterdir() if "cache" not in p.name)  # + the taxa cache once read
    assert files == ["embeddings.safetensors", "index.json", "taxa.parquet"]
    meta = json.loads((workspace / "index" / "index.json").read_text())
    assert meta["num_taxa"] == 30 and meta["templates"] == ["a photo of {}."] and meta["recipe"] == "release"


@pytest.mark.parametrize("rank", ["kingdom", "family", "species"])
def test_predict_tree_of_life_csv(workspace, tiny_hf_dir, capsys, rank):
    code, out, err = run_cli(capsys, "predict", workspace / "photos", "--index", workspace / "index", "--rank", rank,
                             "--k", 2, "--model", tiny_hf_dir, "--no-progress")  # fmt: skip
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 4 and {r["rank"] for r in rows} == {rank}
    assert rows[0]["file"].endswith("a.jpg") and rows[2]["file"].endswith("b.png")
    assert list(rows[0])[-3:] == ["common_name", "taxon", "score"] and rows[0][rank]
    assert float(rows[0]["score"]) >= float(rows[1]["score"]) > 0
    assert "corrupt.jpg" in err and "1 image(s) skipped" in err


def test_predict_json_table_output_subset(workspace, tiny_hf_dir, capsys, tmp_path):
    subset = tmp_path / "subset.csv"
    subset.write_text("kingdom\nK1\n")
    out_file = tmp_path / "out" / "pred.json"
    code, out, _ = run_cli(capsys, "predict", workspace / "photos" / "a.jpg", "--index", workspace / "index",
                           "--subset", subset, "--k", 50, "--format", "json", "--output", out_file, "--model", tiny_hf_dir)  # fmt: skip
    assert code == 0 and out == ""
    records = json.loads(out_file.read_text())
    n_k1 = sum(t.kingdom == "K1" for t in random_taxa(30))
    assert len(records) == n_k1 and {r["kingdom"] for r in records} == {"K1"}
    assert sum(r["score"] for r in records) == pytest.approx(1.0, abs=1e-4)  # <= 30 float32 terms: < 2e-6
    code, out, _ = run_cli(capsys, "predict", workspace / "photos" / "a.jpg", "--index", workspace / "index",
                           "--subset", "K0", "--rank", "kingdom", "--format", "table", "--model", tiny_hf_dir)  # fmt: skip
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].split() == ["file", "rank", "kingdom", "common_name", "taxon", "score"]
    assert len(lines) == 2 and " K0 " in lines[1]


def test_predict_custom_labels_bins_and_few_shot(workspace, tiny_hf_dir, capsys, tmp_path):
    cache = tmp_path / "labels.safetensors"
    code, out, _ = run_cli(capsys, "predict", workspace / "photos", "--labels", "duck, goose", "--k", 5,
                           "--label-embeddings", cache, "--model", tiny_hf_dir)  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and cache.exists() and len(rows) == 4 and list(rows[0]) == ["file", "label", "score"]
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("duck\ngoose\n\n")
    _, out_file_labels, _ = run_cli(capsys, "predict", workspace / "photos", "--labels", labels_file, "--k", 5,
                                    "--label-embeddings", cache, "--model", tiny_hf_dir)  # fmt: skip
    assert out_file_labels == out  # same process, same batches, label embeddings read back bit-exact from the cache
    bins = tmp_path / "bins.csv"
    bins.write_text("label,bin\nduck,water\ngoose,water\ncrow,land\n")
    code, out, _ = run_cli(capsys, "predict", workspace / "photos" / "a.jpg", "--bins", bins, "--model", tiny_hf_dir)
    assert code == 0 and [r["label"] for r in csv.DictReader(io.StringIO(out))] in (["water", "land"], ["land", "water"])
    for i in range(2):
        write_image(tmp_path / "shots" / "x" / f"{i}.png", 30 + i)
        write_image(tmp_path / "shots" / "y" / f"{i}.png", 40 + i, scale=30)
    code, out, _ = run_cli(capsys, "predict", workspace / "photos" / "a.jpg", "--few-shot", tmp_path / "shots",
                           "--format", "json", "--model", tiny_hf_dir)  # fmt: skip
    records = json.loads(out)
    assert code == 0 and sorted(r["label"] for r in records) == ["x", "y"] and set(records[0]) == {"file", "label", "score", "distance"}


def test_predict_user_errors(workspace, tiny_hf_dir, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(workspace / "photos"), "--rank", "tribe"])
    assert exit_info.value.code == 2 and "invalid choice: 'tribe'" in capsys.readouterr().err
    code, _, err = run_cli(capsys, "predict", tmp_path / "nothing-here", "--model", tiny_hf_dir)
    assert code == 2 and "no images found" in err and "image not found" in err
    code, _, err = run_cli(capsys, "predict", workspace / "photos", "--labels", "a,b", "--subset", "Aves")
    assert code == 2 and "--subset, --index and --index-revision apply to Tree-of-Life" in err
    code, _, err = run_cli(capsys, "predict", workspace / "photos", "--index", workspace / "index", "--subset", "Nope",
                           "--model", tiny_hf_dir)  # fmt: skip
    assert code == 2 and "no taxa in the index match" in err
    code, _, err = run_cli(capsys, "predict", workspace / "photos", "--model", tiny_hf_dir)
    assert code == 2 and "no Tree-of-Life index is known for model" in err and "known models: imageomics/bioclip" in err
    code, out, err = run_cli(capsys, "predict", workspace / "photos" / "corrupt.jpg", "--labels", "a,b", "--model", tiny_hf_dir)
    assert code == 1 and out.strip() == "file,label,score" and "corrupt.jpg" in err


def test_embed_parquet_and_npy(workspace, tiny_hf_dir, capsys, tmp_path):
    import pyarrow.parquet as pq

    code, out, err = run_cli(capsys, "embed", workspace / "photos", "--output", tmp_path / "emb.parquet", "--model", tiny_hf_dir)
    table = pq.read_table(tmp_path / "emb.parquet").to_pydict()
    assert code == 0 and "wrote 2 embeddings of dim 16" in out and "corrupt.jpg" in err
    assert [f.rsplit("/", 1)[-1] for f in table["file"]] == ["a.jpg", "b.png"]
    # unit norm up to the float32 rounding of a 16-term sum of squares and a division (~1e-7)
    assert np.linalg.norm(np.array(table["embedding"]), axis=1) == pytest.approx([1, 1], abs=1e-5)
    code, _, _ = run_cli(capsys, "embed", workspace / "photos", "-o", tmp_path / "emb.npy", "--model", tiny_hf_dir)
    # the same images and model again, only the file format differs: equal up to a few ulps of |x| <= 1 (1.2e-7 each)
    assert np.load(tmp_path / "emb.npy") == pytest.approx(np.array(table["embedding"]), abs=1e-6)
    assert (tmp_path / "emb.files.txt").read_text().splitlines() == table["file"]
    code, _, err = run_cli(capsys, "embed", workspace / "photos", "-o", tmp_path / "emb.txt", "--model", tiny_hf_dir)
    assert code == 2 and "--output must end with" in err


def test_list_taxa(workspace, capsys):
    code, out, _ = run_cli(capsys, "list-taxa", "--index", workspace / "index", "--rank", "class", "--format", "json")
    records = json.loads(out)
    taxa = random_taxa(30)
    assert code == 0 and sum(r["num_taxa"] for r in records) == 30
    assert len(records) == len({t.lineage("class") for t in taxa}) and set(records[0]) == {
        "kingdom", "phylum", "class", "taxon", "num_taxa"}  # fmt: skip
    code, out, _ = run_cli(capsys, "list-taxa", "--index", workspace / "index", "--subset", "K0")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == sum(t.kingdom == "K0" for t in taxa) and "common_name" in rows[0]


def test_help_is_light():
    # --help must not import torch/transformers/pandas (it stays well under a second).
    script = ("import sys, contextlib, io\nfrom bioclip_hf.cli import main\n"
              "for cmd in ('predict', 'embed', 'list-taxa', 'build-index'):\n"
              "    with contextlib.redirect_stdout(io.StringIO()):\n"
              "        try: main([cmd, '--help'])\n        except SystemExit: pass\n"
              "heavy = [m for m in ('torch', 'transformers', 'pandas', 'numpy') if m in sys.modules]\n"
              "assert not heavy, heavy\n")  # fmt: skip
    subprocess.run([sys.executable, "-c", script], check=True)


def test_real_photos_with_index_from_scientific_names(bird_photos, tiny_hf_dir, capsys, tmp_path):
    # A taxa table with only scientific names (birds525 labels) + real JPEGs end to end.
    from support.paths import BIRDS

    code, _, _ = run_cli(capsys, "build-index", BIRDS / "labels.csv", "-o", tmp_path / "birds", "--model", tiny_hf_dir,
                         "--text-type", "scientific", "--templates", "single", "--no-progress")  # fmt: skip
    assert code == 0
    code, out, err = run_cli(capsys, "predict", *bird_photos[:4], "--index", tmp_path / "birds", "--rank", "genus",
                             "--k", 3, "--format", "json", "--model", tiny_hf_dir)  # fmt: skip
    records = json.loads(out)
    assert code == 0 and "skipped" not in err and len(records) == 12
    assert {r["file"] for r in records} == {str(p) for p in bird_photos[:4]} and all(r["genus"] for r in records)
