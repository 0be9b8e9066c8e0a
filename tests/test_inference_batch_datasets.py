"""`--dataset` inputs (on disk, streamed from a local folder, streamed from the Hub) with ids carried into the
output, and `--push-to-hub` publishing a dataset with a card; against the local Hub server, never the real Hub."""

from __future__ import annotations

import csv

import numpy as np
import pyarrow.parquet as pq
import pytest
from support.batch import cli

NUM_IMAGES = 6  # plus one corrupt


def image_dataset(ws):
    """6 photos (as encoded bytes) and a corrupt one, with a `uuid` id column and a `label` column."""
    import datasets

    paths = sorted((ws / "photos").rglob("*.png"))[:NUM_IMAGES]
    images = [{"bytes": p.read_bytes(), "path": p.name} for p in paths] + [{"bytes": b"garbage", "path": "bad.jpg"}]
    features = datasets.Features({"uuid": datasets.Value("string"), "image": datasets.Image(),
                                  "label": datasets.Value("int64")})  # fmt: skip
    data = {"uuid": [f"u{i}" for i in range(len(images))], "image": images, "label": list(range(len(images)))}
    return datasets.Dataset.from_dict(data, features=features), paths


def embed(capsys, model_dir, *args):
    return cli(capsys, "embed", *args, "--model", model_dir, "--no-progress", "--part-size", 3, "--batch-size", 3)


def embeddings(path):
    table = pq.read_table(path)
    return table.column_names, table.column(0).to_pylist(), np.array(table.column("embedding").to_pylist())


def test_dataset_on_disk_and_streamed_folder_equal_the_files(batch_workspace, tiny_hf_dir, capsys, tmp_path):  # noqa: F811
    """Same images, same blocks of 3 and batches of 3 -> exactly the same float arithmetic as from files: the model
    runs in this process for every run, and decoding workers produce the same pixels as in-process decoding (see
    `test_worker_processes_decode_in_order`), so the embeddings are compared bit for bit."""
    dataset, paths = image_dataset(batch_workspace)
    dataset.save_to_disk(tmp_path / "on_disk")
    dataset.to_parquet(tmp_path / "folder" / "data" / "train-00000-of-00001.parquet")
    listing = tmp_path / "files.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    code, _, _ = embed(capsys, tiny_hf_dir, "--files", listing, "--num-workers", 0, "-o", tmp_path / "files.parquet")
    assert code == 0
    _, _, expected = embeddings(tmp_path / "files.parquet")

    code, _, err = embed(capsys, tiny_hf_dir, "--dataset", tmp_path / "on_disk", "--id-column", "uuid", "-o", tmp_path / "a.parquet")
    columns, keys, got = embeddings(tmp_path / "a.parquet")
    assert code == 0 and columns == ["uuid", "embedding"] and keys == [f"u{i}" for i in range(NUM_IMAGES)]
    assert np.array_equal(got, expected) and "u6" in err
    assert list(csv.reader(open(tmp_path / "a.errors.csv")))[1][0] == "u6"

    # Streamed (no length known), decoded by 2 workers that each take every other block; default ids: positions.
    code, _, _ = embed(capsys, tiny_hf_dir, "--dataset", tmp_path / "folder", "--num-workers", 2, "-o", tmp_path / "b.parquet")
    columns, keys, got = embeddings(tmp_path / "b.parquet")
    assert code == 0 and columns == ["index", "embedding"] and keys == list(range(NUM_IMAGES))
    assert np.array_equal(got, expected)
    assert list(csv.reader(open(tmp_path / "b.errors.csv")))[1][0] == "6"


def test_streamed_image_folder_and_parquet_reader_options(batch_workspace, tiny_hf_dir, capsys, tmp_path):  # noqa: F811
    """An `imagefolder` dataset (a builder without Parquet scan options) streams like files; Parquet data is read
    without pre-buffering (a worker would otherwise hold a whole shard of image bytes)."""
    import shutil

    from bioclip_hf.inference.sources import _stream

    paths = sorted((batch_workspace / "photos").rglob("*.png"))[:NUM_IMAGES]
    folder = tmp_path / "imagefolder" / "train"
    folder.mkdir(parents=True)
    for i, path in enumerate(paths):
        shutil.copy(path, folder / f"{i}.png")  # sorted names: the folder's order is the files' order
    listing = tmp_path / "files.txt"
    listing.write_text("".join(f"{folder / f'{i}.png'}\n" for i in range(len(paths))))
    code, _, _ = embed(capsys, tiny_hf_dir, "--files", listing, "--num-workers", 0, "-o", tmp_path / "files.parquet")
    assert code == 0
    code, _, err = embed(capsys, tiny_hf_dir, "--dataset", tmp_path / "imagefolder", "--num-workers", 0, "-o", tmp_path / "f.parquet")
    assert code == 0, err
    assert np.array_equal(embeddings(tmp_path / "f.parquet")[2], embeddings(tmp_path / "files.parquet")[2])

    image_dataset(batch_workspace)[0].to_parquet(tmp_path / "pq" / "data" / "train-00000-of-00001.parquet")
    options = _stream(str(tmp_path / "pq"), None, "train")._ex_iterable.generate_tables_fn.__self__.config.fragment_scan_options
    assert options is not None and options.pre_buffer is False


def test_dataset_errors_name_what_exists(batch_workspace, tiny_hf_dir, capsys, tmp_path):  # noqa: F811
    dataset, _ = image_dataset(batch_workspace)
    dataset.save_to_disk(tmp_path / "ds")
    capsys.readouterr()
    for extra, message in [(("--image-column", "img"), "has no image column 'img'; its columns: uuid, image, label"),
                           (("--id-column", "id"), "has no id column 'id'; its columns: uuid, image, label"),
                           (("--image-column", "label"), "column 'label' of"),
                           (("--split", "test"), None)]:  # fmt: skip
        code, _, err = embed(capsys, tiny_hf_dir, "--dataset", tmp_path / "ds", *extra, "-o", tmp_path / "x.parquet")
        if message:
            assert code == 2 and message in err and err.count("\n") == 1, err
        else:  # a single saved Dataset has no splits to choose from: --split is not checked against it
            assert code == 0
    code, _, err = embed(capsys, tiny_hf_dir, "--dataset", tmp_path / "ds", batch_workspace / "photos", "-o", tmp_path / "y.parquet")
    assert code == 2 and "--dataset cannot be combined with image paths" in err
    code, _, err = cli(capsys, "predict", "--dataset", tmp_path / "ds", "--labels", "a,b", "--model", tiny_hf_dir)
    assert code == 2 and "--dataset needs --output" in err


def test_hub_dataset_in_hub_dataset_out(batch_workspace, tiny_hf_dir, capsys, tmp_path, hub_server):  # noqa: F811
    """Stream a Hub dataset by repo id, predict with ids, publish predictions; embed and publish embeddings."""
    import datasets
    from huggingface_hub import HfApi

    dataset, _ = image_dataset(batch_workspace)
    dataset.push_to_hub("tester/photos", token=hub_server.token)
    common = ("--dataset", "tester/photos", "--split", "train", "--id-column", "uuid", "--model", tiny_hf_dir,
              "--no-progress", "--part-size", 4)  # fmt: skip
    code, _, err = cli(capsys, "predict", *common, "--labels", "duck,goose,swan", "--k", 2, "-o", tmp_path / "p.parquet",
                       "--push-to-hub", "tester/photo-predictions")  # fmt: skip
    assert code == 0, err
    local = pq.read_table(tmp_path / "p.parquet").to_pylist()
    assert [r["uuid"] for r in local] == [f"u{i // 2}" for i in range(2 * NUM_IMAGES)]
    assert list(local[0]) == ["uuid", "label", "score"]
    pushed = datasets.load_dataset("tester/photo-predictions", split="train")
    assert pushed.to_list() == local
    files = HfApi().list_repo_files("tester/photo-predictions", repo_type="dataset")
    assert sorted(files) == [".gitattributes", "README.md", "data/part-000000.parquet", "data/part-000001.parquet",
                             "errors.csv"]  # fmt: skip

    code, _, err = cli(capsys, "embed", *common, "--embedding-dtype", "float16", "-o", f"{tmp_path}/emb/",
                       "--push-to-hub", "tester/photo-embeddings")  # fmt: skip
    assert code == 0, err
    pushed = datasets.load_dataset("tester/photo-embeddings", split="train")
    local = datasets.load_dataset(str(tmp_path / "emb"), split="train")
    assert pushed["uuid"] == local["uuid"] == [f"u{i}" for i in range(NUM_IMAGES)]
    assert np.array_equal(np.array(pushed["embedding"]), np.array(local["embedding"]))
    from huggingface_hub import DatasetCard

    card = DatasetCard.load("tester/photo-embeddings", repo_type="dataset")
    assert str(tiny_hf_dir) in card.text and "Image embeddings of 7 images" in card.text and "unreadable images: 1" in card.text
    assert card.data.configs[0]["data_files"][0]["path"] == "data/*.parquet"
    assert "embeddings" in card.data.tags


@pytest.mark.parametrize("bad", ["owner", "a/b/c"])
def test_push_needs_owner_and_name(batch_workspace, tiny_hf_dir, capsys, tmp_path, bad):  # noqa: F811
    code, _, err = cli(capsys, "embed", batch_workspace / "photos", "--model", tiny_hf_dir, "--no-progress",
                       "-o", tmp_path / "e.parquet", "--push-to-hub", bad)  # fmt: skip
    assert code == 2 and "--push-to-hub needs 'owner/name'" in err
