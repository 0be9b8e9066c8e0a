"""Batch runs of `predict`/`embed`: Parquet parts, merge into every format, resume, option checks, error parts,
file lists and globs, DataLoader worker decoding. Tiny random model, one process (multi-process: test_inference_batch_distributed)."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.batch import NUM_GOOD, cli
from support.images import write_image

from bioclip_hf.cli import main


def predict_args(ws, model_dir, *extra):
    return ("predict", ws / "photos", "--index", ws / "index", "--model", model_dir, "--no-progress", "--k", 3,
            "--batch-size", 3, "--part-size", 4, "--num-workers", 0, *extra)  # fmt: skip


def test_parquet_output_is_parquet_and_equals_streamed_csv(batch_workspace, tiny_hf_dir, capsys, tmp_path):
    """`--output x.parquet` writes Parquet (with the model in its metadata); x.csv is byte-identical to stdout.

    stdout streams batches of 3 over the whole list; batches never span parts, so with a part size of 3 the part
    runs encode exactly the same batches and every score is bit-identical (compared exactly, no tolerance).
    """
    code, stdout_csv, err = cli(capsys, *predict_args(batch_workspace, tiny_hf_dir, "--part-size", 3))
    assert code == 0 and "img04b.jpg" in err
    code, _, err = cli(capsys, *predict_args(batch_workspace, tiny_hf_dir, "--part-size", 3, "--output", tmp_path / "p.csv"))
    assert code == 0 and (tmp_path / "p.csv").read_text() == stdout_csv
    assert not (tmp_path / "p.csv.parts").exists()  # merged and removed
    errors = list(csv.DictReader(open(tmp_path / "p.errors.csv")))
    assert [e["file"].rsplit("/", 1)[-1] for e in errors] == ["img04b.jpg"] and "cannot" in errors[0]["error"]

    code, out, _ = cli(capsys, *predict_args(batch_workspace, tiny_hf_dir, "--part-size", 3, "--output", tmp_path / "p.parquet"))
    assert code == 0 and out == "" and (tmp_path / "p.parquet").read_bytes()[:4] == b"PAR1"
    table = pq.read_table(tmp_path / "p.parquet")
    streamed = list(csv.DictReader(io.StringIO(stdout_csv)))
    assert len(table) == 3 * NUM_GOOD and table.column_names == list(streamed[0])
    # CSV holds repr(float): parsing it back gives the same float64, so the comparison is exact.
    assert table.to_pylist() == [{**row, "score": float(row["score"])} for row in streamed]
    meta = json.loads(table.schema.metadata[b"bioclip_hf"])
    assert meta["model"] == str(tiny_hf_dir) and meta["command"] == "predict" and meta["options"]["rank"] is None


def test_json_table_and_format_rules(batch_workspace, tiny_hf_dir, capsys, tmp_path):
    _, stdout_json, _ = cli(capsys, *predict_args(batch_workspace, tiny_hf_dir, "--part-size", 3, "--format", "json"))
    code, _, _ = cli(capsys, *predict_args(batch_workspace, tiny_hf_dir, "--part-size", 3, "-o", tmp_path / "p.json"))
    assert code == 0 and (tmp_path / "p.json").read_text() == stdout_json and len(json.loads(stdout_json)) == 33
    code, _, _ = cli(capsys, *predict_args(batch_workspace, tiny_hf_dir, "--part-size", 3, "--format", "table",
                                           "-o", tmp_path / "p.txt"))  # fmt: skip
    lines = (tmp_path / "p.txt").read_text().splitlines()
    assert code == 0 and lines[0].split()[:2] == ["file", "rank"] and len(lines) == 34
    for fmt, output, message in [("json", "p.csv", "--format json contradicts --output"),
                                 ("parquet", None, "--format parquet needs --output"),
                                 ("csv", "folder/", "is a folder (a Parquet dataset) but --format is csv")]:  # fmt: skip
        extra = ("--format", fmt) + (("-o", f"{tmp_path}/{output}") if output else ())
        code, _, err = cli(capsys, *predict_args(batch_workspace, tiny_hf_dir, *extra))
        assert code == 2 and message in err and err.count("\n") == 1, err


def test_folder_output_reads_with_pandas_and_datasets(batch_workspace, tiny_hf_dir, capsys, tmp_path):
    import datasets
    import pandas as pd

    out = tmp_path / "preds"
    code, _, _ = cli(capsys, *predict_args(batch_workspace, tiny_hf_dir, "--rank", "family", "-o", f"{out}/"))
    assert code == 0
    assert sorted(p.name for p in out.glob("*.parquet")) == [f"part-{b:06d}.parquet" for b in range(3)]
    frame = pd.read_parquet(out)
    loaded = datasets.load_dataset(str(out), split="train")
    assert len(frame) == len(loaded) == 3 * NUM_GOOD and list(frame["file"]) == loaded["file"]
    assert set(frame["rank"]) == {"family"}
    manifest = json.loads((out / "__bioclip_hf__" / "manifest.json").read_text())
    assert manifest["rows"] == 33 and manifest["images"] == 12 and manifest["errors"] == 1
    assert [p["images"] for p in manifest["parts"]] == [4, 4, 4]
    assert "img04b.jpg" in (out / "__bioclip_hf__" / "errors.csv").read_text()


class Interrupt(Exception):
    pass


def test_resume_after_failure_skips_written_parts(batch_workspace, tiny_hf_dir, capsys, tmp_path, monkeypatch):
    """A run that dies in block 2 resumes: blocks 0-1 are not recomputed, nothing is lost or duplicated, and the
    result is byte-identical to an uninterrupted run (same blocks -> same batches -> same float arithmetic)."""
    from bioclip_hf.inference.classify import BaseClassifier

    cli(capsys, *predict_args(batch_workspace, tiny_hf_dir, "-o", tmp_path / "full.csv"))
    original, calls = BaseClassifier.encode_pixels, []

    def encode(self, pixels, normalize=True):
        calls.append(len(pixels))
        if len(calls) == 5:  # block 0: batches of 3 + 1 images, block 1: 2 (+1 corrupt) + 1; die in block 2
            raise Interrupt("power cut")
        return original(self, pixels, normalize)

    monkeypatch.setattr(BaseClassifier, "encode_pixels", encode)
    with pytest.raises(Interrupt):
        main([str(a) for a in predict_args(batch_workspace, tiny_hf_dir, "-o", tmp_path / "p.csv")])
    capsys.readouterr()
    parts = sorted(p.name for p in (tmp_path / "p.csv.parts").glob("part-*.parquet"))
    assert parts == ["part-000000.parquet", "part-000001.parquet"] and not (tmp_path / "p.csv").exists()
    calls.clear()
    code, _, err = cli(capsys, *predict_args(batch_workspace, tiny_hf_dir, "-o", tmp_path / "p.csv"))
    assert code == 0 and calls == [3, 1]  # block 2 only
    assert (tmp_path / "p.csv").read_bytes() == (tmp_path / "full.csv").read_bytes()
    assert "img04b.jpg" in err and "1 image(s) skipped" in err  # the error recorded by the first run is kept


def test_resume_with_other_options_refuses_naming_the_option(batch_workspace, tiny_hf_dir, capsys, tmp_path):
    out = tmp_path / "p.parquet"
    parts = tmp_path / "p.parquet.parts"
    code, _, _ = cli(capsys, *predict_args(batch_workspace, tiny_hf_dir, "-o", out, "--keep-parts"))
    assert code == 0 and parts.is_dir()
    for extra, message in [(("--rank", "genus"), "--rank was None, now 'genus'"), (("--k", 2), "--k was 3, now 2"),
                           (("--dtype", "bfloat16"), "--dtype was 'float32', now 'bfloat16'"),
                           (("--part-size", 5), "--part-size was 4, now 5")]:  # fmt: skip
        args = list(predict_args(batch_workspace, tiny_hf_dir, "-o", out))
        args[args.index("--k") : args.index("--k") + 2] = [] if "--k" in extra else args[args.index("--k") : args.index("--k") + 2]
        if "--part-size" in extra:
            args[args.index("--part-size") : args.index("--part-size") + 2] = []
        code, _, err = cli(capsys, *args, *extra)
        assert code == 2 and message in err and err.count("\n") == 1, err
    write_image(tmp_path / "extra" / "new.png", 99)
    args = list(predict_args(batch_workspace, tiny_hf_dir, "-o", out))
    code, _, err = cli(capsys, *args[:2], tmp_path / "extra", *args[2:])
    assert code == 2 and "the inputs changed (was 12 files" in err
    # Options that do not change the records may differ: batch size, workers.
    code, _, _ = cli(capsys, *predict_args(batch_workspace, tiny_hf_dir, "-o", out, "--batch-size", 2, "--num-workers", 2))
    assert code == 0 and not parts.exists()


def test_file_lists_csv_columns_and_globs(batch_workspace, tiny_hf_dir, capsys, tmp_path):
    photos = sorted((batch_workspace / "photos").rglob("*.png"))[:4]
    listing = tmp_path / "lists" / "list.txt"
    listing.parent.mkdir()
    listing.write_text("".join(f"{p}\n" for p in photos[:2]) + "\n" + "missing.png\n")
    table = tmp_path / "lists" / "meta.csv"
    table.write_text("uuid,path\n" + "".join(f"id{i},{p}\n" for i, p in enumerate(photos[2:])))
    common = ("embed", "--model", tiny_hf_dir, "--no-progress", "--num-workers", 0)
    code, _, err = cli(capsys, *common, "--files", listing, "-o", tmp_path / "a.parquet")
    keys = pq.read_table(tmp_path / "a.parquet").column("file").to_pylist()
    assert code == 0 and keys == [str(p) for p in photos[:2]]
    assert "missing.png" in err and "image not found" in (tmp_path / "a.errors.csv").read_text()
    code, _, _ = cli(capsys, *common, "--files", table, "--file-column", "path", "-o", tmp_path / "b.parquet")
    assert code == 0 and pq.read_table(tmp_path / "b.parquet").column("file").to_pylist() == [str(p) for p in photos[2:]]
    code, _, err = cli(capsys, *common, "--files", table, "--file-column", "nope", "-o", tmp_path / "c.parquet")
    assert code == 2 and "no column 'nope'; its columns: uuid, path" in err
    code, _, _ = cli(capsys, *common, f"{batch_workspace}/photos/**/img0[0-2].png", "-o", tmp_path / "d.parquet")
    keys = pq.read_table(tmp_path / "d.parquet").column("file").to_pylist()
    assert code == 0 and [k.rsplit("/", 1)[-1] for k in keys] == ["img00.png", "img01.png", "img02.png"]
    code, _, err = cli(capsys, *common, "-o", tmp_path / "e.parquet")
    assert code == 2 and "no inputs" in err


def test_embed_float16_npy_and_metadata(batch_workspace, tiny_hf_dir, capsys, tmp_path):
    common = ("embed", batch_workspace / "photos", "--model", tiny_hf_dir, "--no-progress", "--part-size", 5)
    code, out, _ = cli(capsys, *common, "-o", tmp_path / "e32.parquet")
    assert code == 0 and f"wrote {NUM_GOOD} embeddings of dim 16" in out
    code, _, _ = cli(capsys, *common, "-o", tmp_path / "e16.parquet", "--embedding-dtype", "float16")
    e32, e16 = pq.read_table(tmp_path / "e32.parquet"), pq.read_table(tmp_path / "e16.parquet")
    kind = e16.schema.field("embedding").type
    assert kind.value_type == pa.float16() and kind.list_size == 16
    a32, a16 = np.array(e32.column("embedding").to_pylist()), np.array(e16.column("embedding").to_pylist())
    # float16 keeps 11 significant bits: |x - fp16(x)| <= 2^-11 |x| for unit-vector entries (|x| <= 1).
    assert np.abs(a16 - a32).max() <= 2**-11 and np.linalg.norm(a32, axis=1) == pytest.approx(np.ones(NUM_GOOD), abs=1e-5)
    meta = json.loads(e16.schema.metadata[b"bioclip_hf"])
    assert meta["model"] == str(tiny_hf_dir) and meta["options"]["embedding_dtype"] == "float16" and "revision" in meta
    code, _, _ = cli(capsys, *common, "-o", tmp_path / "e.npy")
    assert np.load(tmp_path / "e.npy") == pytest.approx(a32, abs=1e-6)
    assert (tmp_path / "e.files.txt").read_text().splitlines() == e32.column("file").to_pylist()


def test_worker_processes_decode_in_order(tiny_model_and_processor, batch_workspace):
    """DataLoader workers (processes) give exactly the in-process results: same batches, same arithmetic.

    Compared bit for bit: the model runs in this process both times, on batches of the same shapes; the workers only
    decode (PIL's integer resampling, then numpy's elementwise, correctly rounded normalisation), which gives the
    same pixels in any process.
    """
    from bioclip_hf.inference.classify import BaseClassifier

    model, processor = tiny_model_and_processor
    results = {}
    for workers in (0, 2):
        clf = BaseClassifier(model=model, processor=processor, batch_size=2, num_workers=workers)
        keys, features = clf.embed_images(batch_workspace / "photos")
        results[workers] = (keys, features, [e["file"] for e in clf.errors])
    assert results[0][0] == results[2][0] and len(results[0][0]) == NUM_GOOD
    assert results[0][2] == results[2][2] and results[0][2][0].endswith("img04b.jpg")
    assert torch_equal(results[0][1], results[2][1])


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_one_process_never_needs_accelerate(batch_workspace, tiny_hf_dir, capsys, tmp_path, monkeypatch):
    """`accelerate` is only imported when a launcher says there are several processes (WORLD_SIZE > 1)."""
    import sys

    monkeypatch.setitem(sys.modules, "accelerate", None)  # any import of it now fails
    code, _, _ = cli(capsys, *predict_args(batch_workspace, tiny_hf_dir, "-o", tmp_path / "p.csv"))
    assert code == 0 and (tmp_path / "p.csv").is_file()
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, _, err = cli(capsys, *predict_args(batch_workspace, tiny_hf_dir, "-o", tmp_path / "q.csv"))
    assert code == 2 and "one of several (WORLD_SIZE > 1) but accelerate is not installed" in err


@pytest.mark.heavy
def test_compiled_and_bfloat16_encoders_match_float32(tiny_model_and_processor, batch_workspace):
    """`optimize(compile=True)` (inductor, fused kernels) and `optimize(dtype="bfloat16")` change rounding only.

    Compiled float32: reassociated sums over <= 128 terms of O(1) values, ~1e-6 absolute on unit features; the
    bound 1e-4 leaves margin for other CPUs. bfloat16 keeps 8 significant bits (relative step 2^-8 = 0.4%) per
    matmul input: features of unit length move by a few 1e-3, so 0.05 bounds them while catching a wrong model.
    """
    import torch

    from bioclip_hf.inference.classify import BaseClassifier

    model, processor = tiny_model_and_processor
    clf = BaseClassifier(model=model, processor=processor, batch_size=4, num_workers=0)
    _, reference = clf.embed_images(batch_workspace / "photos")
    _, compiled = clf.optimize(compile=True).embed_images(batch_workspace / "photos")
    _, bf16 = clf.optimize(dtype="bfloat16").embed_images(batch_workspace / "photos")
    assert compiled.dtype == bf16.dtype == torch.float32
    assert (compiled - reference).abs().max() < 1e-4 and 0 < (bf16 - reference).abs().max() < 0.05


def test_embed_with_top_prediction_columns(batch_workspace, tiny_hf_dir, capsys, tmp_path):
    """Embeddings + each image's top family in one table (for embedding explorers): same as `predict --k 1`."""
    common = (batch_workspace / "photos", "--model", tiny_hf_dir, "--no-progress", "--index", batch_workspace / "index")
    code, _, _ = cli(capsys, "embed", *common, "--predict-rank", "family", "--no-normalize", "-o", tmp_path / "e.parquet")
    table = pq.read_table(tmp_path / "e.parquet")
    assert code == 0 and table.column_names == ["file", "embedding", "kingdom", "phylum", "class", "order", "family",
                                                "common_name", "taxon", "score"]  # fmt: skip
    code, _, _ = cli(capsys, "predict", *common, "--rank", "family", "--k", 1, "-o", tmp_path / "p.parquet")
    predictions = pq.read_table(tmp_path / "p.parquet")
    assert table.column("family").to_pylist() == predictions.column("family").to_pylist()
    # Same features up to normalisation: probabilities agree to float32 rounding.
    np.testing.assert_allclose(table.column("score").to_pylist(), predictions.column("score").to_pylist(), rtol=1e-5)
    assert np.linalg.norm(np.array(table.column("embedding").to_pylist()), axis=1).std() > 0  # raw, not unit length
    code, _, err = cli(capsys, "embed", *common, "--predict-rank", "genus", "-o", tmp_path / "e.npy")
    assert code == 2 and "--predict-rank adds columns" in err
