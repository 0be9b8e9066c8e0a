"""bioclip_hf.data.stream: streaming shards -> decoded samples -> processor batches (mixed text types, resume, ranks)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from support.training_data import add_corrupt_shard, make_shards

from bioclip_hf.data.stream import StreamStats, build_dataloader, build_stream
from bioclip_hf.treeoflife.taxonomy import TEXT_TYPES, Taxon

NUM_IMAGES = 24  # 4 shards of 6 + one shard with 2 good samples and 1 corrupt image


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "shards"
    make_shards(out, num_images=NUM_IMAGES, shard_size=6)
    add_corrupt_shard(out, good=2)
    (out / "README.md").unlink()  # a plain folder of tars (no card): datasets infers the WebDataset layout
    return out


@pytest.fixture(scope="module")
def processor():
    from bioclip_hf import BioCLIPImageProcessor, BioCLIPProcessor, load_tokenizer

    return BioCLIPProcessor(BioCLIPImageProcessor(size=30), load_tokenizer())


def test_stream_yields_decoded_samples_and_counts_corrupt_ones(shards):
    from PIL import Image

    stats = StreamStats()
    samples = list(build_stream(str(shards), shuffle_buffer=0, stats=stats))
    assert len(samples) == NUM_IMAGES + 2
    assert stats.samples == NUM_IMAGES + 2 and stats.skipped == Counter({"image": 1})
    sample = samples[0]
    assert set(sample) == {"image", "text", "text_type", "taxon", "key"}
    assert isinstance(sample["image"], Image.Image)
    assert sample["text_type"] in TEXT_TYPES
    taxon = Taxon.from_dict(sample["taxon"])
    assert sample["text"] == f"a photo of {taxon.text(sample['text_type'])}."
    assert "corrupt002" not in {s["key"] for s in samples}


def test_mixed_text_types_are_drawn_per_sample(shards):
    samples = list(build_stream(str(shards), shuffle_buffer=0, seed=3))
    counts = Counter(s["text_type"] for s in samples)
    assert len(counts) >= 4  # 26 uniform draws over 5 types
    again = list(build_stream(str(shards), shuffle_buffer=0, seed=3))
    assert [s["text"] for s in again] == [s["text"] for s in samples]
    other = list(build_stream(str(shards), shuffle_buffer=0, seed=4))
    assert [s["text_type"] for s in other] != [s["text_type"] for s in samples]
    epoch1 = list(build_stream(str(shards), shuffle_buffer=0, seed=3, epoch=1))
    assert [s["text_type"] for s in epoch1] != [s["text_type"] for s in samples]


@pytest.mark.parametrize("text_type", TEXT_TYPES)
def test_fixed_text_type_uses_stored_string(shards, text_type):
    for sample in list(build_stream(str(shards), text_type=text_type, shuffle_buffer=0, template=None))[:8]:
        taxon = Taxon.from_dict(sample["taxon"])
        assert sample["text_type"] == text_type
        assert sample["text"] == taxon.text(text_type)


def test_shuffle_is_seeded(shards):
    plain = [s["key"] for s in build_stream(str(shards), shuffle_buffer=0)]
    assert plain == sorted(plain)  # shard order, then sample order
    shuffled = [s["key"] for s in build_stream(str(shards), shuffle_buffer=8, seed=1)]
    assert shuffled != plain and sorted(shuffled) == sorted(plain)
    assert [s["key"] for s in build_stream(str(shards), shuffle_buffer=8, seed=1)] == shuffled
    assert [s["key"] for s in build_stream(str(shards), shuffle_buffer=8, seed=2)] != shuffled


def test_ranks_read_distinct_shards(shards):
    per_rank = [[s["key"] for s in build_stream(str(shards), rank=r, world_size=5, shuffle_buffer=4)] for r in range(5)]
    keys = [key for rank_keys in per_rank for key in rank_keys]
    assert len(keys) == len(set(keys)) == NUM_IMAGES + 2
    assert sorted(len(rank_keys) for rank_keys in per_rank) == [2, 6, 6, 6, 6]  # one whole shard per rank


def test_bad_arguments(shards, tmp_path, processor):
    with pytest.raises(ValueError, match="unknown text type"):
        build_stream(str(shards), text_type="latin")
    with pytest.raises(ValueError, match="rank=2, world_size=2"):
        build_stream(str(shards), rank=2, world_size=2)
    with pytest.raises(FileNotFoundError, match="not found"):
        build_stream(str(tmp_path / "missing" / "deeper" / "shards"))
    (tmp_path / "file.tar").write_bytes(b"")
    with pytest.raises(ValueError, match="got a file"):
        build_stream(str(tmp_path / "file.tar"))
    with pytest.raises(ValueError, match="batch_size"):
        build_dataloader(str(shards), processor, 0)


def test_dataloader_batches_match_the_processor(shards, processor):
    loader, stats = build_dataloader(str(shards), processor, batch_size=4, shuffle_buffer=0, text_type="scientific")
    batches = list(loader)
    assert [len(b["input_ids"]) for b in batches] == [4] * 6 + [2]
    first = batches[0]
    assert set(first) == {"pixel_values", "input_ids"}
    assert first["pixel_values"].dtype == torch.float32 and first["pixel_values"].shape == (4, 3, 30, 30)
    assert first["input_ids"].dtype == torch.int64 and first["input_ids"].shape == (4, 77)
    samples = list(build_stream(str(shards), shuffle_buffer=0, text_type="scientific"))[:4]
    expected_pixels = np.stack([processor.image_processor.transform(s["image"]) for s in samples])
    np.testing.assert_array_equal(first["pixel_values"].numpy(), expected_pixels)
    assert torch.equal(first["input_ids"], processor.tokenize([s["text"] for s in samples])["input_ids"])
    assert stats.samples == NUM_IMAGES + 2 and stats.num_skipped == 1
    assert loader.epoch == 1


def _same(a, b):
    return len(a) == len(b) and all(
        torch.equal(x["pixel_values"], y["pixel_values"]) and torch.equal(x["input_ids"], y["input_ids"])
        for x, y in zip(a, b)
    )


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_continues_with_the_same_next_batch(shards, processor, num_workers):
    kwargs = {"batch_size": 3, "shuffle_buffer": 5, "seed": 7, "num_workers": num_workers}
    reference, _ = build_dataloader(str(shards), processor, **kwargs)
    epoch0, epoch1 = list(reference), list(reference)
    assert not _same(epoch0, epoch1)  # reshuffled + redrawn text types

    interrupted, _ = build_dataloader(str(shards), processor, **kwargs)
    iterator = iter(interrupted)
    head = [next(iterator) for _ in range(5)]
    state = json.loads(json.dumps(interrupted.state_dict()))  # must survive a JSON checkpoint

    resumed, stats = build_dataloader(str(shards), processor, **kwargs)
    resumed.load_state_dict(state)
    tail = list(resumed)
    assert _same(head + tail, epoch0)
    assert stats.samples == NUM_IMAGES + 2 and stats.num_skipped == 1  # counters carried over, not doubled
    assert _same(list(resumed), epoch1)  # and the next epoch matches too


def test_resume_needs_the_same_worker_count(shards, processor):
    loader, _ = build_dataloader(str(shards), processor, batch_size=4, num_workers=0)
    state = loader.state_dict()
    other, _ = build_dataloader(str(shards), processor, batch_size=4, num_workers=2)
    with pytest.raises(ValueError, match="num_workers"):
        other.load_state_dict(state)

