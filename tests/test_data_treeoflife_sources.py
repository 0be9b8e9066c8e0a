"""TreeOfLife-10M (EOL tars + catalog.csv, locally and through the Hub) and TreeOfLife-200M (shards + catalog.parquet)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from support.training_data import catalog_row, make_tol10m_repo, make_tol200m_folder, taxon_of, tol_id

from bioclip_hf.data.catalog import TOL10M_SCHEMA, CatalogIndex, pack_uuids, unpack_uuids
from bioclip_hf.data.stream import StreamStats, build_dataloader, build_stream
from bioclip_hf.data.treeoflife_sources import find_tol_source
from bioclip_hf.treeoflife.taxonomy import Taxon

TRAIN, VAL = 16, 4


@pytest.fixture(scope="module")
def tol10m(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub") / "TreeOfLife-10M"
    return root, make_tol10m_repo(root, train=TRAIN, val=VAL, per_tar=7)


@pytest.fixture(scope="module")
def processor():
    from bioclip_hf import BioCLIPImageProcessor, BioCLIPProcessor, load_tokenizer

    return BioCLIPProcessor(BioCLIPImageProcessor(size=30), load_tokenizer())


def catalog_taxon(index: int) -> Taxon:
    """The taxon the miniature catalog lists for EOL image `index` (its `common` falls back to the binomial)."""
    taxon = Taxon("", "", "", "", "", "Rosa", "canina", "dog rose") if index == 5 else taxon_of(index)
    return Taxon(*taxon.ranks(), taxon.common_name or taxon.scientific_name)


# -- the catalog lookup ---------------------------------------------------------------------------------
def test_catalog_index_splits_duplicates_and_missing_ranks(tol10m):
    root, info = tol10m
    index = CatalogIndex.load(root / "metadata" / "catalog.csv", TOL10M_SCHEMA)
    assert index.uuids and index.ids.dtype == np.dtype("S16")  # 36-char uuids held as 16 bytes
    assert index.num_rows == TRAIN + VAL + 6 + 1 + 6  # + train_small repeats, corrupt row, iNat21/BIOSCAN rows
    assert len(index) == TRAIN + VAL + 1 + 6  # train_small repeats merged into their train id
    assert index.counts == {"train": TRAIN + 1, "val": VAL, "train_small": 6}  # images (eol_content_id) per split
    row = index.lookup(tol_id(3))
    assert index.in_split(row, "train") and index.in_split(row, "train_small") and not index.in_split(row, "val")
    assert index.taxon(row) == taxon_of(3).to_dict()
    missing = index.taxon(index.lookup(tol_id(5)))  # a row without kingdom..family is kept, ranks empty
    assert missing == Taxon("", "", "", "", "", "Rosa", "canina", "dog rose").to_dict() == catalog_taxon(5).to_dict()
    assert index.lookup(info["orphan"]) == -1 and index.lookup("not-a-uuid") == -1
    assert index.lookup(tol_id(3).upper()) == row
    with pytest.raises(ValueError, match="no split 'test'.*splits: train, train_small, val"):
        index.split_bit("test")


def test_catalog_index_with_other_ids_and_uuid_packing(tmp_path):
    path = tmp_path / "catalog.csv"
    rows = [catalog_row("train", key, i) for i, key in enumerate((tol_id(1), "eol-123", tol_id(2)))]
    with path.open("w") as fh:
        fh.write(",".join(rows[0]) + "\n" + "".join(",".join(r.values()) + "\n" for r in rows))
    index = CatalogIndex.load(path, TOL10M_SCHEMA)
    assert not index.uuids and [index.lookup(k) >= 0 for k in ("eol-123", tol_id(1), tol_id(2).upper())] == [True] * 3
    ids = np.array([tol_id(i) for i in range(50)], dtype="S36")
    assert (unpack_uuids(pack_uuids(ids)) == ids).all() and pack_uuids(np.array([b"x" * 36])) is None


# -- TreeOfLife-10M --------------------------------------------------------------------------------------
def test_tol10m_folder_streams_eol_images_with_catalog_captions(tol10m):
    root, info = tol10m
    stats = StreamStats()
    samples = list(build_stream(str(root), shuffle_buffer=0, seed=1, stats=stats))
    assert [s["key"] for s in samples] == info["train"]  # tar order; val images, corrupt and orphan skipped
    assert stats.skipped == Counter({"other_split": VAL, "image": 1, "no_catalog_row": 1})
    for i, sample in enumerate(samples):
        taxon = catalog_taxon(i)  # e.g. "Rosa canina with common name Rosa canina", as make_wds.py's sci_com.txt
        assert sample["text"] == f"a photo of {taxon.text(sample['text_type'])}."
        assert sample["taxon"] == taxon.to_dict()
    val = list(build_stream(str(root), split="val", shuffle_buffer=0, text_type="scientific"))
    assert [s["key"] for s in val] == info["val"]
    assert [s["text"] for s in val] == [f"a photo of {taxon_of(TRAIN + i).scientific_name}." for i in range(VAL)]
    small = list(build_stream(str(root), split="train_small", shuffle_buffer=0))
    assert [s["key"] for s in small] == [tol_id(i) for i in range(0, TRAIN, 3)]


def test_tol10m_tars_are_split_over_ranks_and_the_stream_resumes(tol10m, processor):
    root, info = tol10m
    keys = [[s["key"] for s in build_stream(str(root), rank=r, world_size=info["tars"], shuffle_buffer=0)]
            for r in range(info["tars"])]  # fmt: skip
    assert sorted(k for rank in keys for k in rank) == sorted(info["train"])
    assert [len(rank) for rank in keys] == [7, 7, 2, 0]  # whole tars per rank (the last holds the orphan only)
    kwargs = {"batch_size": 3, "shuffle_buffer": 5, "seed": 2}
    reference, _ = build_dataloader(str(root), processor, **kwargs)
    full = list(reference)
    interrupted, _ = build_dataloader(str(root), processor, **kwargs)
    it = iter(interrupted)
    head = [next(it) for _ in range(2)]
    resumed, stats = build_dataloader(str(root), processor, **kwargs)
    resumed.load_state_dict(json.loads(json.dumps(interrupted.state_dict())))
    tail = list(resumed)
    assert len(head + tail) == len(full) and all(
        torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["input_ids"], b["input_ids"])
        for a, b in zip(head + tail, full)
    )
    assert stats.samples == TRAIN and stats.skipped["no_catalog_row"] == 1


def test_tol10m_layout_errors_name_what_is_missing(tmp_path):
    root = tmp_path / "partial"
    make_tol10m_repo(root, train=3, val=1)
    (root / "metadata" / "catalog.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"incomplete TreeOfLife-10M layout: missing metadata/catalog\.csv$"):
        build_stream(str(root))
    with pytest.raises(ValueError, match="full: no split 'test' in the catalog"):
        make_tol10m_repo(tmp_path / "full", train=3, val=1)
        build_stream(str(tmp_path / "full"), split="test")


def test_tol10m_streams_from_the_hub(tol10m, hub_server, processor):
    from huggingface_hub import HfApi

    root, info = tol10m
    api = HfApi(token=hub_server.token)
    api.create_repo("imageomics/TreeOfLife-10M", repo_type="dataset")
    api.upload_folder(folder_path=str(root), repo_id="imageomics/TreeOfLife-10M", repo_type="dataset")
    remote = list(build_stream("imageomics/TreeOfLife-10M", shuffle_buffer=4, seed=1))
    local = list(build_stream(str(root), shuffle_buffer=4, seed=1))
    assert [(s["key"], s["text"]) for s in remote] == [(s["key"], s["text"]) for s in local] and len(remote) == TRAIN
    assert all(a["image"].tobytes() == b["image"].tobytes() for a, b in zip(remote, local))
    fetched = [path for method, path, status in hub_server.state.requests if "/resolve/" in path and status < 300]
    assert any(path.endswith(".tar.gz") for path in fetched) and any(path.endswith("catalog.csv") for path in fetched)
    loader, stats = build_dataloader("imageomics/TreeOfLife-10M", processor, batch_size=4, split="val")
    assert [len(b["input_ids"]) for b in loader] == [VAL] and stats.skipped["other_split"] == TRAIN + 1


def test_hub_repos_without_the_layout_are_one_line_errors(tmp_path, hub_server):
    from huggingface_hub import HfApi

    api = HfApi(token=hub_server.token)
    (tmp_path / "metadata").mkdir()
    (tmp_path / "metadata" / "catalog.csv").write_text("split,treeoflife_id\n")
    api.create_repo("tester/tol-no-images", repo_type="dataset")
    api.upload_folder(folder_path=str(tmp_path), repo_id="tester/tol-no-images", repo_type="dataset")
    with pytest.raises(FileNotFoundError, match=r"tester/tol-no-images is an incomplete TreeOfLife-10M layout: missing "
                                                r"dataset/EOL/image_set_\*\.tar\.gz$"):  # fmt: skip
        find_tol_source("tester/tol-no-images")
    (tmp_path / "metadata" / "catalog.csv").unlink()
    (tmp_path / "README.md").write_text("nothing to train on\n")
    api.create_repo("tester/empty-data", repo_type="dataset")
    api.upload_folder(folder_path=str(tmp_path), repo_id="tester/empty-data", repo_type="dataset")
    with pytest.raises(FileNotFoundError, match="tester/empty-data has no training data: expected WebDataset shards"):
        build_stream("tester/empty-data")


# -- TreeOfLife-200M -------------------------------------------------------------------------------------
def test_tol200m_shards_with_catalog_parquet(tmp_path, processor):
    keys = make_tol200m_folder(tmp_path / "tol200m", num_images=12, per_shard=4)
    source = find_tol_source(str(tmp_path / "tol200m"))
    assert source.kind == "treeoflife-200m" and len(source.shards) == 3 and source.num_examples("train") == 12
    samples = list(build_stream(str(tmp_path / "tol200m"), shuffle_buffer=0, text_type="taxonomic+common"))
    assert [s["key"] for s in samples] == keys  # the downloader's other members (.json) are ignored
    assert [s["text"] for s in samples] == [f"a photo of {taxon_of(i).text('taxonomic+common')}." for i in range(12)]
    assert samples[5]["text"] == "a photo of Plantae Tracheophyta Magnoliopsida Rosales Rosaceae Rosa canina."  # null common
    with pytest.raises(ValueError, match="no split 'val'.*splits: train"):
        build_stream(str(tmp_path / "tol200m"), split="val")
    (tmp_path / "no_shards").mkdir()
    (tmp_path / "tol200m" / "catalog.parquet").rename(tmp_path / "no_shards" / "catalog.parquet")
    with pytest.raises(FileNotFoundError, match="has catalog.parquet but no image shards"):
        build_stream(str(tmp_path / "no_shards"))


def test_a_split_written_once_streams_like_the_catalog_source(tol10m, tmp_path):
    from bioclip_hf.data.treeoflife_sources import write_split_shards

    root, info = tol10m
    assert write_split_shards(find_tol_source(str(root)), "val", tmp_path / "cache", shard_size=3) == VAL
    assert sorted(p.name for p in (tmp_path / "cache" / "val").iterdir()) == ["shard-000000.tar", "shard-000001.tar"]
    direct = list(build_stream(str(root), split="val", shuffle_buffer=0, seed=4))
    cached = list(build_stream(str(tmp_path / "cache"), split="val", shuffle_buffer=0, seed=4))
    assert [(s["key"], s["text"], s["taxon"]) for s in cached] == [(s["key"], s["text"], s["taxon"]) for s in direct]
    assert all(a["image"].tobytes() == b["image"].tobytes() for a, b in zip(cached, direct))
