"""Streaming training data: TreeOfLife-style sources -> decoded samples -> processor batches.

Sources (a local folder or a Hub dataset repo id, honouring `HF_ENDPOINT`; nothing is downloaded up front):
- WebDataset shards in either caption layout (`bioclip_hf.data.layouts`, detected per source): ours
  (`dataset_scripts/build_shards.py`: bare names + `taxon.json`) or Imageomics' (`make_wds.py`,
  TreeOfLife-toolbox: `sci.txt`, `taxon.txt`, ... captions), read with `datasets.load_dataset(streaming=True)`;
- `imageomics/TreeOfLife-10M` itself (EOL image tars + `metadata/catalog.csv`) and locally rebuilt
  TreeOfLife-200M shards + `catalog.parquet` (`bioclip_hf.data.treeoflife_sources`).

Pipeline (deterministic for a given `seed`):
1. `split_dataset_by_node(rank, world_size)`: each rank reads its own shards.
2. `shuffle(seed, buffer_size)`: shard order + a shuffle buffer of samples, reshuffled every epoch.
3. decode the image (corrupt ones are skipped and counted) and pick the text: with `text_type="mixed"`
   one of the five types per sample, as in the BioCLIP paper; the draw is seeded by (seed, epoch, key),
   so it does not depend on worker count or on resuming. With `text_mixing="per_batch"` every sample
   keeps all five captions and the trainer picks one type per batch (the original trainer's choice).
4. `build_dataloader` applies the processor and batches inside the loader workers; its `state_dict()`
   records how many batches were consumed, and a loader restored with `load_state_dict` continues with
   exactly the batch an uninterrupted run would have produced next.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bioclip_hf.data.layouts import OURS, TAXON_FIELD, CaptionLayout, check_text_mixing, detect_layout
from bioclip_hf.data.treeoflife_sources import SKIP_FIELD
from bioclip_hf.models.bioclip.image_decoding import decode_image
from bioclip_hf.treeoflife.taxonomy import DEFAULT_TEMPLATE, TEXT_TYPES, check_text_type

logger = logging.getLogger(__name__)

TEXT_FIELDS: dict[str, str] = dict(OURS.fields)  # our shards' caption members, by text type
IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp", "image")
QUIET_SKIPS = ("other_split",)  # expected skips (a catalog source's other splits): counted, not warned about
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # "namespace/name" (a path-like source must exist)


@dataclass
class StreamStats:
    """Counters of a stream: samples yielded and bad samples skipped (by reason)."""

    samples: int = 0
    skipped: Counter = field(default_factory=Counter)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def state_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "skipped": dict(self.skipped)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.samples = int(state["samples"])
        self.skipped = Counter(state["skipped"])


def load_shards(source: str, split: str = "train"):
    """Open the WebDataset shards of `source` (local folder or Hub dataset repo id) as a streaming dataset.

    Images are left undecoded (`{"bytes", "path"}`) so a corrupt file can be skipped instead of crashing.
    A TreeOfLife-10M repo/folder or a TreeOfLife-200M folder is streamed from its image tars + catalog
    (`bioclip_hf.data.treeoflife_sources`).

    Example:
        >>> raw = load_shards("imageomics/TreeOfLife-10M", split="train")  # doctest: +SKIP
    """
    import datasets

    location = str(source)
    path = Path(location).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"dataset source must be a folder of shards or a Hub repo id, got a file: {location}")
    if not path.exists() and not _REPO_ID.fullmatch(location):
        raise FileNotFoundError(f"dataset source not found: {location} is neither a folder nor a Hub repo id")
    location = str(path) if path.exists() else location
    from bioclip_hf.data.treeoflife_sources import find_tol_source, tol_stream

    tol = find_tol_source(location)
    if tol is not None:
        return tol_stream(tol, split)
    split_tars = _split_folder_tars(location, split)
    try:
        if split_tars:  # `<split>/*.tar`: exactly that folder (datasets would fold train_small/ into "train")
            raw = datasets.load_dataset("webdataset", data_files={split: split_tars}, split=split, streaming=True)
        else:
            raw = datasets.load_dataset(location, split=split, streaming=True)
    except ValueError as err:
        if "Unknown split" in str(err) or "Bad split" in str(err):
            raise ValueError(f"dataset {location} has no split {split!r}") from err
        raise
    image_column = _image_column(raw.features, location)
    return raw.cast_column(image_column, datasets.Image(decode=False))


def _split_folder_tars(location: str, split: str) -> list[str]:
    """The shards of a `<split>/` sub-folder (local folder or Hub repo), as make_wds.py writes train/, val/,
    train_small/; [] when there is no such folder."""
    path = Path(location)
    if path.is_dir():
        return [str(p) for p in sorted((path / split).glob("*.tar"))] if (path / split).is_dir() else []
    from huggingface_hub import HfFileSystem

    try:
        found = HfFileSystem().glob(f"datasets/{location}/{split}/*.tar")
    except Exception:  # offline, gated, missing: datasets' own resolution reports it
        return []
    return [f"hf://{name}" for name in sorted(found)]


def source_num_examples(source: str, split: str = "train") -> int | None:
    """Samples in `split` of a source when it states them, else None.

    TreeOfLife-10M/200M: catalog rows of the split that have an image in the source. A local shard folder:
    `build_report.json` (dataset_scripts/build_shards.py) or open_clip's `sizes.json` (shard name -> count) in
    the split folder or the folder itself.

    Example:
        >>> source_num_examples("imageomics/TreeOfLife-10M", "train")  # doctest: +SKIP
    """
    import json

    from bioclip_hf.data.treeoflife_sources import find_tol_source

    tol = find_tol_source(str(source))
    if tol is not None:
        return tol.num_examples(split)
    folder = Path(source)
    if not folder.is_dir():
        return None
    report = folder / "build_report.json"
    if report.is_file():
        count = json.loads(report.read_text()).get("splits", {}).get(split)
        if count is not None:
            return int(count)
    for sizes in (folder / split / "sizes.json", folder / "sizes.json"):
        if sizes.is_file():
            counts = json.loads(sizes.read_text())
            counts = counts.get("per_shard", counts)
            shards = {p.name for p in (sizes.parent.glob("*.tar"))}
            return sum(int(n) for name, n in counts.items() if name in shards) or None
    return None


def _image_column(features: Any, location: str) -> str:
    import datasets

    for name, feature in (features or {}).items():
        if isinstance(feature, datasets.Image):
            return name
    for name in IMAGE_FIELDS:
        if features and name in features:
            return name
    raise ValueError(f"dataset {location} has no image field (expected one of {', '.join(IMAGE_FIELDS)})")


def choose_text(example: dict[str, Any], text_type: str, rng: random.Random,
                template: str | None = DEFAULT_TEMPLATE, layout: CaptionLayout = OURS) -> tuple[str, str]:  # fmt: skip
    """(text, text_type) for one sample: a fixed type or, for "mixed", one drawn with `rng`.

    Ours: the stored strings are used when present, otherwise the text is rebuilt from `taxon.json`, and
    `template` is applied. Imageomics' captions are used as stored (they already say "a photo of ...").
    """
    chosen = layout.draw(example, rng) if text_type == "mixed" else text_type
    return layout.caption(example, chosen, template)


def _check_text_type(text_type: str) -> str:
    return text_type if text_type == "mixed" else check_text_type(text_type)


def _check_node(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad distributed setup: rank={rank}, world_size={world_size} (need 0 <= rank < world_size)")


def _content_key(value: Any) -> str:
    """Stable sample id when the stream has no `__key__`: a hash of the image bytes."""
    data = value.get("bytes") if isinstance(value, dict) else value
    return hashlib.sha1(data).hexdigest() if isinstance(data, (bytes, bytearray)) else ""


def _bad(key: str, reason: str) -> dict[str, Any]:
    return {"image": None, "text": "", "text_type": "", "taxon": {}, "key": key, "_bad": reason}


def _decoder(text_type: str, seed: int, epoch: int, template: str | None, image_column: str, layout: CaptionLayout,
             text_mixing: str = "per_sample"):  # fmt: skip
    """The per-sample map: decode + text choice; bad samples become {"_bad": reason}.

    With `text_mixing="per_batch"` and mixed text types, each sample also carries `texts`: its caption of
    every type in `TEXT_TYPES` order, for the trainer's per-batch choice.
    """
    all_types = text_type == "mixed" and text_mixing == "per_batch"

    def decode(example: dict[str, Any]) -> dict[str, Any]:
        value = example.get(image_column)
        key = example.get("__key__") or _content_key(value)
        if example.get(SKIP_FIELD):
            return _bad(key, example[SKIP_FIELD])
        rng = random.Random(f"{seed}:{epoch}:{key}")
        try:
            image = decode_image(value)
        except (ValueError, TypeError, OSError) as err:  # corrupt, missing (a path-only entry) or not an image
            return _bad(key, f"image: {err}")
        try:
            text, chosen = choose_text(example, text_type, rng, template, layout)
            texts = [layout.caption(example, kind, template)[0] for kind in TEXT_TYPES] if all_types else None
        except ValueError as err:
            return _bad(key, f"text: {err}")
        sample = {"image": image, "text": text, "text_type": chosen, "taxon": layout.taxon(example), "key": key, "_bad": ""}
        return {**sample, "texts": texts} if all_types else sample

    return decode


_WARNED: Counter = Counter()  # skip warnings issued by this process, per kind
MAX_SKIP_WARNINGS = 20  # per kind and process; the rest are logged at debug level (all are counted in the stats)


def _log_bad(key: str, reason: str) -> str:
    """Log a skipped sample (expected skips, and repeats past `MAX_SKIP_WARNINGS`, quietly); return its counter name."""
    kind = reason.split(":")[0]
    _WARNED[kind] += 1
    if kind in QUIET_SKIPS or _WARNED[kind] > MAX_SKIP_WARNINGS:
        logger.debug("skipping sample %s: %s", key, reason)
    else:
        more = f" (further '{kind}' skips are logged at debug level)" if _WARNED[kind] == MAX_SKIP_WARNINGS else ""
        logger.warning("skipping sample %s: %s%s", key, reason, more)
    return kind


def make_pipeline(raw, *, text_type: str = "mixed", seed: int = 0, epoch: int = 0, shuffle_buffer: int = 1000,
                  rank: int = 0, world_size: int = 1, template: str | None = DEFAULT_TEMPLATE,
                  text_mixing: str = "per_sample", location: str = "stream"):  # fmt: skip
    """Apply node split, shuffle, epoch and decoding to a stream from `load_shards` (bad samples kept, flagged).

    The caption layout is detected from the stream's fields (`bioclip_hf.data.layouts.detect_layout`).
    """
    from datasets.distributed import split_dataset_by_node

    text_type = _check_text_type(text_type)
    check_text_mixing(text_mixing)
    _check_node(rank, world_size)
    image_column = _image_column(raw.features, location)
    layout = detect_layout(raw.features, location)
    if world_size > 1:
        if raw.num_shards % world_size:
            logger.warning("%d shards do not divide evenly over %d ranks: every rank reads all shards and keeps "
                           "1/%d of the samples", raw.num_shards, world_size, world_size)  # fmt: skip
        raw = split_dataset_by_node(raw, rank=rank, world_size=world_size)
    if shuffle_buffer and shuffle_buffer > 0:
        raw = raw.shuffle(seed=seed, buffer_size=int(shuffle_buffer))
    columns = list(raw.features) if raw.features else None
    decoded = raw.map(_decoder(text_type, seed, epoch, template, image_column, layout, text_mixing), remove_columns=columns)
    decoded.set_epoch(epoch)  # on the final dataset: map/filter start new ones at epoch 0 (no reshuffle)
    return decoded


def build_stream(source: str, *, split: str = "train", text_type: str = "mixed", seed: int = 0,
                 shuffle_buffer: int = 1000, rank: int = 0, world_size: int = 1, epoch: int = 0,
                 template: str | None = DEFAULT_TEMPLATE, stats: StreamStats | None = None,
                 text_mixing: str = "per_sample"):  # fmt: skip
    """Stream decoded training samples from a local folder or a Hub dataset repo.

    Args:
        source: folder of WebDataset shards (either caption layout, with or without a dataset card), a Hub
            dataset repo id, `imageomics/TreeOfLife-10M` (or a folder in its layout), or a TreeOfLife-200M folder.
        split: split name ("train" for a plain folder of shards; a catalog's `split` values otherwise).
        text_type: one of `TEXT_TYPES`, or "mixed" to draw one per sample (BioCLIP's training recipe).
        seed: seeds the shard/sample shuffle and the text-type draws.
        shuffle_buffer: shuffle buffer size in samples (0 disables shuffling).
        rank / world_size: this process's share of the shards (`split_dataset_by_node`).
        epoch: reshuffles and redraws text types per epoch.
        template: prompt template applied to our layout's bare names ("a photo of {}."); None keeps them bare.
            Imageomics' captions already hold it and are used as stored.
        stats: optional `StreamStats` updated (in this process) with yielded and skipped samples.
        text_mixing: "per_sample" or "per_batch" (samples then also carry `texts`, one caption per text type).

    Returns:
        A `datasets.IterableDataset` of
        `{"image": PIL.Image, "text": str, "text_type": str, "taxon": dict, "key": str}`.

    Example:
        >>> stream = build_stream("shards/", text_type="mixed", shuffle_buffer=100)  # doctest: +SKIP
        >>> sample = next(iter(stream)); sample["text_type"] in TEXT_TYPES  # doctest: +SKIP
        True
    """
    stats = stats if stats is not None else StreamStats()
    options = {"text_type": text_type, "seed": seed, "epoch": epoch, "shuffle_buffer": shuffle_buffer,
               "rank": rank, "world_size": world_size, "template": template, "text_mixing": text_mixing}  # fmt: skip
    pipeline = make_pipeline(load_shards(source, split), location=str(source), **options)

    def keep(sample: dict[str, Any]) -> bool:
        if sample["_bad"]:
            stats.skipped[_log_bad(sample["key"], sample["_bad"])] += 1
            return False
        stats.samples += 1
        return True

    stream = pipeline.filter(keep).remove_columns(["_bad"])
    stream.set_epoch(epoch)
    return stream


class _BatchStream:
    """Per-epoch batch producer run inside each DataLoader worker (or the main process).

    Each batch is tagged with its worker id; on resume the first `resume[worker]` batches of every worker
    are replaced by cheap placeholders (no transform, no tokenization) so the DataLoader's round-robin
    order, and thus every later batch, is exactly that of an uninterrupted run.
    """

    def __init__(self, raw, processor, batch_size: int, options: dict[str, Any], drop_last: bool,
                 augment: str = "none") -> None:  # fmt: skip
        self.raw, self.processor, self.batch_size = raw, processor, batch_size
        self.options, self.drop_last, self.augment = options, drop_last, augment
        self.epoch = 0
        self.resume: list[int] = []

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import torch

        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        to_skip = self.resume[worker] if worker < len(self.resume) else 0
        pipeline = make_pipeline(self.raw, epoch=self.epoch, **self.options)
        samples, bad = [], Counter()
        for sample in pipeline:
            if sample["_bad"]:
                bad[_log_bad(sample["key"], sample["_bad"])] += 1
                continue
            samples.append(sample)
            if len(samples) == self.batch_size:
                yield self._batch(samples, bad, worker, placeholder=to_skip > 0)
                to_skip, samples, bad = max(to_skip - 1, 0), [], Counter()
        if samples and not self.drop_last:
            yield self._batch(samples, bad, worker, placeholder=to_skip > 0)
        elif bad:  # bad samples after the last full batch still need counting
            yield {"_worker": worker, "_bad": dict(bad), "_placeholder": True, "_empty": True}

    def _batch(self, samples: list[dict[str, Any]], bad: Counter, worker: int, placeholder: bool) -> dict[str, Any]:
        meta = {"_worker": worker, "_bad": dict(bad), "_placeholder": placeholder, "_empty": False}
        if placeholder:
            return meta
        import numpy as np
        import torch

        pixels = torch.from_numpy(np.stack([self._pixels(sample) for sample in samples]))
        if samples[0].get("texts") is not None:  # per-batch mixing: every type's captions, [types, batch, length]
            captions = [sample["texts"][i] for i in range(len(TEXT_TYPES)) for sample in samples]
            ids = self.processor.tokenize(captions)["input_ids"].long()
            return {"pixel_values": pixels, "input_ids_by_type": ids.view(len(TEXT_TYPES), len(samples), -1), **meta}
        input_ids = self.processor.tokenize([sample["text"] for sample in samples])["input_ids"].long()
        return {"pixel_values": pixels, "input_ids": input_ids, **meta}


    def _pixels(self, sample: dict[str, Any]):
        if self.augment == "random_resized_crop":  # crops drawn per (seed, epoch, key): the same after a resume
            from bioclip_hf.data.augment import train_transform

            rng = random.Random(f"{self.options['seed']}:{self.epoch}:{sample['key']}:crop")
            return train_transform(self.processor.image_processor, sample["image"], rng)
        return self.processor.image_processor.transform(sample["image"])


def _torch_dataset(stream: _BatchStream):
    import torch

    class _Iterable(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(stream)

    return _Iterable()


class StreamingLoader:
    """Iterable over processor batches of a shard stream, with exact resume (`state_dict` / `load_state_dict`).

    One `iter()` is one epoch; the next `iter()` starts the next epoch (reshuffled, text types redrawn).
    Yields `{"pixel_values": float32 [B, 3, S, S], "input_ids": int64 [B, 77]}`. `stats` counts yielded
    and skipped (corrupt) samples.
    """

    def __init__(self, stream: _BatchStream, num_workers: int, stats: StreamStats) -> None:
        self._stream, self.num_workers, self.stats = stream, num_workers, stats
        self._worker_batches = [0] * max(num_workers, 1)
        self._resume: list[int] = [0] * max(num_workers, 1)

    @property
    def epoch(self) -> int:
        return self._stream.epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import torch

        self._stream.resume = list(self._resume)
        loader = torch.utils.data.DataLoader(_torch_dataset(self._stream), batch_size=None,
                                             num_workers=self.num_workers)  # fmt: skip
        for batch in loader:
            placeholder, worker = batch.pop("_placeholder"), int(batch.pop("_worker"))
            bad, empty = batch.pop("_bad"), batch.pop("_empty")
            if placeholder and not empty:
                continue  # consumed before the checkpoint: its samples and bad counts are already in stats
            self.stats.skipped.update(bad)
            if empty:
                continue  # bad samples after the worker's last batch
            self._worker_batches[worker] += 1
            self.stats.samples += len(batch["pixel_values"])
            yield batch
        self._stream.epoch += 1
        self._worker_batches = [0] * len(self._worker_batches)
        self._resume = [0] * len(self._resume)

    def state_dict(self) -> dict[str, Any]:
        """Position of the stream: epoch, batches consumed per loader worker, and the counters."""
        return {"epoch": self._stream.epoch, "worker_batches": list(self._worker_batches),
                "num_workers": self.num_workers, "stats": self.stats.state_dict()}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from `state_dict()`: the next `iter()` continues with the batch that would have come next."""
        if int(state["num_workers"]) != self.num_workers:
            raise ValueError(f"cannot resume a stream saved with num_workers={state['num_workers']} using "
                             f"num_workers={self.num_workers}: batch order depends on the worker count")  # fmt: skip
        self._stream.epoch = int(state["epoch"])
        self._worker_batches = [int(n) for n in state["worker_batches"]]
        self._resume = list(self._worker_batches)
        self.stats.load_state_dict(state["stats"])


def build_dataloader(source: str, processor: Any, batch_size: int, *, split: str = "train", text_type: str = "mixed",
                     seed: int = 0, shuffle_buffer: int = 1000, rank: int = 0, world_size: int = 1,
                     num_workers: int = 0, template: str | None = DEFAULT_TEMPLATE, drop_last: bool = False,
                     text_mixing: str = "per_sample", augment: str = "none") -> tuple[StreamingLoader, StreamStats]:  # fmt: skip
    """Batches of `processor` outputs streamed from a local folder or Hub dataset repo (see `build_stream`).

    Args:
        source / split / text_type / seed / shuffle_buffer / rank / world_size / template / text_mixing: as in
            `build_stream`. With `text_mixing="per_batch"` (and mixed text types) batches hold
            `input_ids_by_type` `[5, B, 77]` (`TEXT_TYPES` order) instead of `input_ids`.
        processor: a `BioCLIPProcessor` (its `image_processor.transform` and `tokenize` are applied).
        batch_size: samples per batch.
        num_workers: DataLoader worker processes (shards are divided among them).
        drop_last: drop the last incomplete batch of each epoch.
        augment: "none" (the processor's resize + centre crop) or "random_resized_crop" (open_clip's training
            transform, `bioclip_hf.data.augment`; crops seeded per sample and epoch).

    Returns:
        `(loader, stats)`: a `StreamingLoader` yielding `{"pixel_values", "input_ids"}` and its `StreamStats`.

    Example:
        >>> loader, stats = build_dataloader("shards/", processor, batch_size=32)  # doctest: +SKIP
        >>> batch = next(iter(loader)); batch["pixel_values"].shape  # doctest: +SKIP
        torch.Size([32, 3, 224, 224])
        >>> state = loader.state_dict()  # save with the checkpoint  # doctest: +SKIP
        >>> loader.load_state_dict(state)  # when resuming: continues with the next batch  # doctest: +SKIP
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if int(num_workers) < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    options = {"text_type": _check_text_type(text_type), "seed": seed, "shuffle_buffer": shuffle_buffer,
               "rank": rank, "world_size": world_size, "template": template,
               "text_mixing": check_text_mixing(text_mixing), "location": str(source)}  # fmt: skip
    _check_node(rank, world_size)
    raw = load_shards(source, split)
    detect_layout(raw.features, str(source))  # a source without caption fields fails here, not in a worker
    from bioclip_hf.data.augment import check_augment

    stream = _BatchStream(raw, processor, int(batch_size), options, drop_last, check_augment(augment))
    stats = StreamStats()
    return StreamingLoader(stream, int(num_workers), stats), stats


__all__ = [
    "TAXON_FIELD",
    "TEXT_FIELDS",
    "TEXT_TYPES",
    "StreamStats",
    "StreamingLoader",
    "build_dataloader",
    "build_stream",
    "choose_text",
    "decode_image",
    "load_shards",
    "make_pipeline",
    "source_num_examples",
]
