"""Imageomics' official shard layout (make_wds.py / TreeOfLife-toolbox) read as is; per-batch text mixing."""

from __future__ import annotations

import io
import json
import random
import tarfile
from collections import Counter

import pytest
import torch
from support.training_data import make_txt, taxon_of, write_official_shards

from bioclip_hf.data.layouts import OFFICIAL, PER_BATCH_ORDER, detect_layout, per_batch_text_type
from bioclip_hf.data.stream import StreamStats, build_dataloader, build_stream
from bioclip_hf.treeoflife.taxonomy import TEXT_TYPES

NUM, CORRUPT = 20, 7  # 4 shards of 5; sample 7's jpg is not an image
MEMBER = {"taxonomic": "taxon.txt", "scientific": "sci.txt", "common": "com.txt", "taxonomic+common": "taxon_com.txt",
          "scientific+common": "sci_com.txt"}  # fmt: skip


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    out = tmp_path_factory.mktemp("official") / "train"
    keys = write_official_shards(out, NUM, shard_size=5, corrupt=CORRUPT)
    return out, keys


@pytest.fixture(scope="module")
def processor():
    from bioclip_hf import BioCLIPImageProcessor, BioCLIPProcessor, load_tokenizer

    return BioCLIPProcessor(BioCLIPImageProcessor(size=30), load_tokenizer())


def test_fixture_has_exactly_the_make_wds_members(official):
    out, keys = official
    with tarfile.open(out / "shard-000000.tar") as tar:
        names = tar.getnames()
    expected = {"jpg", "classes", "scientific_name.txt", "taxonomic_name.txt", "common_name.txt", "sci.txt", "com.txt",
                "taxon.txt", "taxonTag.txt", "sci_com.txt", "taxon_com.txt", "taxonTag_com.txt"}  # fmt: skip
    assert {name.split(".", 1)[1] for name in names if name.startswith(keys[0])} == expected
    assert make_txt(taxon_of(0))["taxonTag.txt"] == (
        "a photo of kingdom Animalia phylum Chordata class Aves order Passeriformes family Corvidae genus Corvus species corax."
    )


def test_official_captions_are_used_as_stored(official):
    out, keys = official
    stats = StreamStats()
    samples = list(build_stream(str(out), shuffle_buffer=0, seed=3, stats=stats))
    assert [s["key"] for s in samples] == [k for i, k in enumerate(keys) if i != CORRUPT]
    assert stats.samples == NUM - 1 and stats.skipped == Counter({"image": 1})
    assert len({s["text_type"] for s in samples}) >= 4  # mixed per sample over 19 draws
    for index, sample in zip((i for i in range(NUM) if i != CORRUPT), samples):
        stored = make_txt(taxon_of(index))
        assert sample["text"] == stored[MEMBER[sample["text_type"]]]  # no second "a photo of ..."
        assert sample["text"].count("a photo of") == 1
        assert sample["taxon"] == taxon_of(index).to_dict()  # ranks back from taxonTag.txt; common name if real
    assert samples[5]["taxon"]["common_name"] == ""  # Rosa canina: common_name.txt only repeats the binomial


@pytest.mark.parametrize("text_type", TEXT_TYPES)
def test_each_text_type_reads_its_member(official, text_type):
    out, _ = official
    samples = list(build_stream(str(out), text_type=text_type, shuffle_buffer=0))[:6]
    assert [s["text"] for s in samples] == [make_txt(taxon_of(i))[MEMBER[text_type]] for i in range(6)]
    assert {s["text_type"] for s in samples} == {text_type}


def test_missing_caption_members_fall_back(tmp_path):
    """Older toolbox shards (tol2webdataset) have no com/sci_com/taxon_com: those types fall back, like ours."""
    with tarfile.open(tmp_path / "shard-00000.tar", "w") as tar:
        for name, data in (("k1.jpg", _jpeg()), ("k1.sci.txt", b"a photo of Corvus corax."),
                           ("k1.taxon.txt", b"a photo of Animalia Chordata Aves Passeriformes Corvidae Corvus corax.")):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    texts = {t: next(iter(build_stream(str(tmp_path), text_type=t, shuffle_buffer=0))) for t in TEXT_TYPES}
    assert texts["common"]["text"] == texts["scientific+common"]["text"] == "a photo of Corvus corax."
    assert texts["taxonomic+common"]["text_type"] == "taxonomic"


def _jpeg() -> bytes:
    from support.images import make_image

    return make_image(1)


def test_a_source_without_caption_fields_is_one_clear_error(tmp_path, processor):
    with tarfile.open(tmp_path / "shard-0.tar", "w") as tar:
        for name, data in (("a.jpg", _jpeg()), ("a.cls", b"3"), ("a.caption.json", json.dumps({"x": 1}).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match=r"no caption fields .*found fields: .*caption\.json, cls, jpg") as err:
        build_dataloader(str(tmp_path), processor, batch_size=2)
    assert "\n" not in str(err.value)
    assert detect_layout(["jpg", "sci.txt", "weird.bin"], "x") is OFFICIAL  # unknown extra fields are ignored


def test_per_batch_choice_is_the_original_trainers():
    """bioclip's train.py: `random.seed(step); random.choice([sci, com, taxon, sci_com, taxon_com])`."""
    for step in range(200):
        random.seed(step)
        assert per_batch_text_type(step) == random.choice(PER_BATCH_ORDER)
    assert {per_batch_text_type(step) for step in range(200)} == set(TEXT_TYPES)


def test_per_batch_loader_carries_every_types_captions(official, processor):
    out, _ = official
    loader, stats = build_dataloader(str(out), processor, batch_size=4, shuffle_buffer=0, text_mixing="per_batch")
    batches = list(loader)
    assert [b["input_ids_by_type"].shape for b in batches] == [(5, 4, 77)] * 4 + [(5, 3, 77)]
    assert all("input_ids" not in b for b in batches)
    first = batches[0]["input_ids_by_type"]
    for t, text_type in enumerate(TEXT_TYPES):
        captions = [make_txt(taxon_of(i))[MEMBER[text_type]] for i in range(4)]
        assert torch.equal(first[t], processor.tokenize(captions)["input_ids"])
    assert stats.samples == NUM - 1 and stats.num_skipped == 1


def _same(a, b):
    key = "input_ids" if "input_ids" in a[0] else "input_ids_by_type"
    return len(a) == len(b) and all(
        torch.equal(x["pixel_values"], y["pixel_values"]) and torch.equal(x[key], y[key]) for x, y in zip(a, b)
    )


@pytest.mark.parametrize(("num_workers", "text_mixing", "augment"),
                         [(0, "per_sample", "none"), (2, "per_batch", "random_resized_crop")])  # fmt: skip
def test_official_stream_resumes_exactly(official, processor, num_workers, text_mixing, augment):
    out, _ = official
    kwargs = {"batch_size": 3, "shuffle_buffer": 4, "seed": 5, "num_workers": num_workers, "text_mixing": text_mixing,
              "augment": augment}  # fmt: skip
    reference, _ = build_dataloader(str(out), processor, **kwargs)
    epoch0, epoch1 = list(reference), list(reference)
    interrupted, _ = build_dataloader(str(out), processor, **kwargs)
    iterator = iter(interrupted)
    head = [next(iterator) for _ in range(3)]
    state = json.loads(json.dumps(interrupted.state_dict()))
    resumed, stats = build_dataloader(str(out), processor, **kwargs)
    resumed.load_state_dict(state)
    assert _same(head + list(resumed), epoch0)
    assert stats.samples == NUM - 1 and stats.skipped == Counter({"image": 1})
    assert _same(list(resumed), epoch1) and not _same(epoch0, epoch1)


def test_random_resized_crop_is_open_clips_and_seeded_per_sample(official, processor):
    from bioclip_hf.data.augment import random_resized_crop_box

    rng = random.Random(0)
    for width, height in [(640, 480), (30, 300), (24, 20), (1000, 50)]:
        for _ in range(50):
            left, top, w, h = random_resized_crop_box(width, height, rng)
            assert 0 <= left <= width - w and 0 <= top <= height - h
            fraction, aspect = w * h / (width * height), w / h
            # Tried boxes: area in [0.9, 1] and aspect in [3/4, 4/3], up to rounding of w and h to whole pixels;
            # the fallback (extreme aspect ratios) is the largest centred crop with an aspect in that range.
            assert 0.9 * (1 - 2 / min(w, h)) <= fraction <= 1 and 0.75 - 1 / h <= aspect <= 4 / 3 + 1 / h or (
                (w, h) in ((width, round(width / 0.75)), (round(height * 4 / 3), height)))
    out, _ = official
    kwargs = {"batch_size": 4, "shuffle_buffer": 0, "text_type": "scientific"}
    plain = next(iter(build_dataloader(str(out), processor, **kwargs)[0]))["pixel_values"]
    runs = [build_dataloader(str(out), processor, augment="random_resized_crop", **kwargs)[0] for _ in range(2)]
    (first, *_), (again, *_) = list(runs[0]), list(runs[1])
    assert torch.equal(first["pixel_values"], again["pixel_values"]) and not torch.equal(first["pixel_values"], plain)
    epoch1 = next(iter(runs[0]))  # second epoch, same sample order (no shuffle): new crops
    assert not torch.equal(epoch1["pixel_values"], first["pixel_values"])
    assert torch.equal(epoch1["input_ids"], first["input_ids"])


def test_per_batch_pick_is_shared_by_training_and_validation():
    """One pick for both loops: the row of `input_ids_by_type` of the type `per_batch_text_type(step)` draws."""
    import inspect

    from bioclip_hf.data.layouts import select_batch_text_type
    from bioclip_hf.training import trainer, validation

    rows = [[TEXT_TYPES.index(t)] for t in TEXT_TYPES]  # row i holds the index of its text type
    for step in range(20):
        picked = select_batch_text_type({"input_ids_by_type": rows, "pixel_values": "x"}, step)
        assert picked == {"input_ids": [TEXT_TYPES.index(per_batch_text_type(step))], "pixel_values": "x"}
    assert select_batch_text_type({"input_ids": [7]}, 3) == {"input_ids": [7]}
    for module in (trainer, validation):
        assert "select_batch_text_type(" in inspect.getsource(module)
        assert "input_ids_by_type" not in inspect.getsource(module)
