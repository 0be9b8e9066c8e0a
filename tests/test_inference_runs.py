"""The batch-run Python API (`predict_batch`, `embed_batch`, `BatchOptions`): what `bioclip-hf predict/embed
--output` do, called from Python. A run killed by SIGKILL resumes to the uninterrupted result; every output format
holds the records `classifier.predict` returns; errors name the Python arguments; the API needs no argparse.

Records computed in other processes or batch layouts than the reference are compared with labels and order exact
and scores within `score_rtol` (see `support.batch`)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from support.batch import NUM_GOOD, SLOW_ENCODER
from support.tolerances import FEATURE_ATOL, assert_same_records, score_rtol

from bioclip_hf.inference import BatchOptions, BatchRun, NoImagesError, embed_batch, predict_batch

KILLED_RUN = SLOW_ENCODER + """
from bioclip_hf.inference.classify import TreeOfLifeClassifier
from bioclip_hf.inference import BatchOptions, predict_batch
model, index, photos, output = sys.argv[1:]
classifier = TreeOfLifeClassifier(model_name_or_path=model, index=index, batch_size=2, num_workers=0)
predict_batch(classifier, BatchOptions(photos, output=output, part_size=2, progress=False), k=3, rank="family")
"""


@pytest.fixture(scope="module")
def rtol(tiny_model_and_processor):
    return score_rtol(float(tiny_model_and_processor[0].logit_scale.detach().exp()))


def tree_of_life(ws, model_and_processor, batch_size=3):
    from bioclip_hf.inference.classify import TreeOfLifeClassifier

    model, processor = model_and_processor
    return TreeOfLifeClassifier(model=model, processor=processor, index=ws / "index", batch_size=batch_size, num_workers=0)


def test_killed_run_resumes_to_the_uninterrupted_result(batch_workspace, tiny_hf_dir, tmp_path, monkeypatch, rtol):
    """SIGKILL a run in another process after some parts, resume it here: only the missing blocks are computed, and
    the result is the uninterrupted run's (labels and order exact; scores to `rtol`: other process, other kernels)."""
    from bioclip_hf.inference.classify import BaseClassifier, TreeOfLifeClassifier

    photos, index = batch_workspace / "photos", batch_workspace / "index"
    classifier = TreeOfLifeClassifier(model_name_or_path=str(tiny_hf_dir), index=str(index), batch_size=2, num_workers=0)
    full = predict_batch(classifier, BatchOptions(str(photos), output=tmp_path / "full.parquet", part_size=2,
                                                  progress=False), k=3, rank="family")  # fmt: skip
    assert full.rows == 3 * NUM_GOOD and full.images == NUM_GOOD + 1 and full.output == tmp_path / "full.parquet"

    output, parts = tmp_path / "p.parquet", tmp_path / "p.parquet.parts"
    driver = tmp_path / "killed.py"
    driver.write_text(KILLED_RUN)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, str(driver), str(tiny_hf_dir), str(index), str(photos), str(output)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 300
    while len(list(parts.glob("part-*.parquet"))) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate()
    done = len(list(parts.glob("part-*.parquet")))
    assert process.returncode == -signal.SIGKILL and 2 <= done < 6 and not output.exists(), stderr.decode()[-2000:]

    original, calls = BaseClassifier.encode_pixels, []
    monkeypatch.setattr(BaseClassifier, "encode_pixels", lambda self, pixels, normalize=True: calls.append(1) or
                        original(self, pixels, normalize))  # fmt: skip
    resumed = predict_batch(classifier, BatchOptions(str(photos), output=output, part_size=2, progress=False), k=3,
                            rank="family")  # fmt: skip
    assert len(calls) == 6 - done  # one batch per block of 2 (the block with the corrupt image holds 1 readable)
    assert (resumed.rows, resumed.images, resumed.errors) == (full.rows, full.images, full.errors)
    assert [e["file"].rsplit("/", 1)[-1] for e in resumed.errors] == ["img04b.jpg"] and not parts.exists()
    records = pq.read_table(output).to_pylist()
    assert {r["rank"] for r in records} == {"family"}
    assert_same_records(pq.read_table(tmp_path / "full.parquet").to_pylist(), records, rtol)


def as_text(records):
    """Records as a CSV holds them: every value a string (None -> ""), the score a float once parsed back."""
    return [{key: value if key == "score" else "" if value is None else str(value) for key, value in r.items()}
            for r in records]  # fmt: skip


@pytest.mark.float_sensitive
def test_prediction_output_formats(batch_workspace, tiny_model_and_processor, tmp_path, rtol):
    """CSV, JSON, a table, Parquet and a Parquet dataset folder all hold what `predict` returns, in input order.
    The run's blocks of 4 are batched otherwise than `predict`'s batches of 3: scores to `rtol`."""
    classifier = tree_of_life(batch_workspace, tiny_model_and_processor)
    expected = classifier.predict(batch_workspace / "photos", rank="genus", k=2)
    assert len(expected) == 2 * NUM_GOOD

    def run(output, **options):
        result = predict_batch(classifier, BatchOptions([batch_workspace / "photos"], output=output, part_size=4,
                                                        progress=False, **options), k=2, rank="genus")  # fmt: skip
        assert result.rows == 2 * NUM_GOOD and result.code == 0 and result.errors[0]["file"].endswith("img04b.jpg")
        return result

    run(tmp_path / "p.parquet")
    assert_same_records(expected, pq.read_table(tmp_path / "p.parquet").to_pylist(), rtol)
    run(tmp_path / "p.json")
    assert_same_records(expected, json.loads((tmp_path / "p.json").read_text()), rtol)
    result = run(tmp_path / "p.csv")
    rows = [{**row, "score": float(row["score"])} for row in csv.DictReader(open(tmp_path / "p.csv"))]
    assert_same_records(as_text(expected), rows, rtol)
    assert result.errors_file == tmp_path / "p.errors.csv" and "img04b.jpg" in result.errors_file.read_text()
    run(tmp_path / "p.txt", format="table")
    lines = (tmp_path / "p.txt").read_text().splitlines()
    assert lines[0].split() == list(expected[0]) and len(lines) == 1 + len(expected)
    assert [line.split()[0] for line in lines[1:]] == [r["file"] for r in expected]
    result = run(f"{tmp_path}/folder/")
    assert sorted(p.name for p in (tmp_path / "folder").glob("*.parquet")) == [f"part-{b:06d}.parquet" for b in range(3)]
    assert_same_records(expected, pq.read_table(tmp_path / "folder").to_pylist(), rtol)
    meta = json.loads(pq.read_schema(tmp_path / "p.parquet").metadata[b"bioclip_hf"])
    assert meta["command"] == "predict" and meta["options"]["rank"] == "genus" and meta["options"]["k"] == 2
    assert meta["options"]["classifier"] == "TreeOfLifeClassifier" and meta["options"]["index"]["taxa"] == 30


@pytest.mark.float_sensitive
def test_embedding_outputs(batch_workspace, tiny_model_and_processor, tmp_path, rtol):
    """Parquet, .npy (+ .files.txt) and float16 hold `embed_images`' features; `predict_rank` adds each image's top
    prediction, the same as `predict_batch(..., k=1)`. Other batch layout: features to FEATURE_ATOL."""
    from bioclip_hf.inference.classify import BaseClassifier

    model, processor = tiny_model_and_processor
    embedder = BaseClassifier(model=model, processor=processor, batch_size=3, num_workers=0)
    keys, features = embedder.embed_images(batch_workspace / "photos")
    options = dict(images=batch_workspace / "photos", part_size=4, progress=False)
    result = embed_batch(embedder, BatchOptions(output=tmp_path / "e.parquet", **options))
    table = pq.read_table(tmp_path / "e.parquet")
    assert result.rows == NUM_GOOD and table.column_names == ["file", "embedding"] and table["file"].to_pylist() == keys
    np.testing.assert_allclose(np.array(table["embedding"].to_pylist()), features.numpy(), rtol=0, atol=FEATURE_ATOL)
    embed_batch(embedder, BatchOptions(output=tmp_path / "e.npy", **options))
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), features.numpy(), rtol=0, atol=FEATURE_ATOL)
    assert (tmp_path / "e.files.txt").read_text().splitlines() == keys
    embed_batch(embedder, BatchOptions(output=tmp_path / "raw.parquet", **options), normalize=False, embedding_dtype="float16")
    raw = pq.read_table(tmp_path / "raw.parquet")
    assert str(raw.schema.field("embedding").type.value_type) == "halffloat"
    assert np.linalg.norm(np.array(raw["embedding"].to_pylist()), axis=1).std() > 0.01  # raw: not unit length

    classifier = tree_of_life(batch_workspace, tiny_model_and_processor)
    embed_batch(classifier, BatchOptions(output=tmp_path / "top.parquet", **options), predict_rank="family")
    predict_batch(classifier, BatchOptions(output=tmp_path / "k1.parquet", **options), k=1, rank="family")
    top, k1 = pq.read_table(tmp_path / "top.parquet").to_pylist(), pq.read_table(tmp_path / "k1.parquet").to_pylist()
    assert [r["family"] for r in top] == [r["family"] for r in k1] and [r["file"] for r in top] == keys
    np.testing.assert_allclose([r["score"] for r in top], [r["score"] for r in k1], rtol=rtol)
    with pytest.raises(ValueError, match="predict_rank adds columns: write a .parquet file or a folder, not .npy"):
        embed_batch(classifier, BatchOptions(output=tmp_path / "x.npy", **options), predict_rank="family")
    with pytest.raises(TypeError, match="predict_rank needs a TreeOfLifeClassifier"):
        embed_batch(embedder, BatchOptions(output=tmp_path / "y.parquet", **options), predict_rank="family")


def test_errors_name_the_python_arguments(batch_workspace, tiny_model_and_processor, tmp_path):
    photos = batch_workspace / "photos"
    for options, error, message in [
        (BatchOptions(photos), ValueError, "output is required"),
        (BatchOptions(photos, output=tmp_path / "a.csv", format="json"), ValueError, "format json contradicts output"),
        (BatchOptions(photos, output=tmp_path / "a.csv", part_size=0), ValueError, "part_size must be >= 1, got 0"),
        (BatchOptions(photos, output=tmp_path / "a.csv", push_to_hub="owner"), ValueError, "push_to_hub needs 'owner/name'"),
        (BatchOptions(photos, dataset="x", output=tmp_path / "a.csv"), ValueError,
         "dataset cannot be combined with image paths or files"),
        (BatchOptions(output=tmp_path / "a.csv"), ValueError, "no inputs: give image files or folders, files LIST"),
    ]:  # fmt: skip
        with pytest.raises(error, match=message) as info:
            BatchRun(options, "predict")
        assert "--" not in str(info.value), info.value
    with pytest.raises(NoImagesError, match="no images found") as info:
        BatchRun(BatchOptions(tmp_path / "nothing", output=tmp_path / "a.csv"))
    [missing] = info.value.errors
    assert missing["file"] == str(tmp_path / "nothing") and missing["error"].startswith("image not found")
    with pytest.raises(ValueError, match="format applies to predict"):
        BatchRun(BatchOptions(photos, output=tmp_path / "e.parquet", format="csv"), "embed")

    classifier = tree_of_life(batch_workspace, tiny_model_and_processor)
    options = BatchOptions(photos, output=tmp_path / "p.parquet", part_size=4, keep_parts=True, progress=False)
    predict_batch(classifier, options, k=3)
    with pytest.raises(ValueError, match=r"k was 3, now 2 \(rerun with the same options, or use another output\)"):
        predict_batch(classifier, options, k=2)
    with pytest.raises(FileExistsError, match="holds parts of an earlier run and resume is off"):
        predict_batch(classifier, BatchOptions(photos, output=tmp_path / "p.parquet", resume=False), k=3)
    with pytest.raises(TypeError, match="colour"):  # checked before any image is read
        predict_batch(classifier, options, k=3, colour="red")


def test_api_is_public_and_needs_no_cli():
    """`from bioclip_hf import predict_batch` works; importing the run API pulls in neither argparse nor torch."""
    import bioclip_hf
    import bioclip_hf.inference as inference

    assert bioclip_hf.predict_batch is inference.predict_batch and bioclip_hf.BatchOptions is inference.BatchOptions
    script = ("import sys\nfrom bioclip_hf.inference import BatchOptions, predict_batch, embed_batch\n"
              "loaded = [m for m in ('argparse', 'torch', 'bioclip_hf.cli', 'bioclip_hf.commands') if m in sys.modules]\n"
              "assert not loaded, loaded\n")  # fmt: skip
    subprocess.run([sys.executable, "-c", script], check=True)
