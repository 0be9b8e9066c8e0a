"""`datasets` sources of `load_labelled_data`: a Hub id, a folder written by `save_to_disk`, a datasets-loadable folder.

Streaming rule (`streaming=None`): a Hub dataset is streamed when its card's `dataset_info` says the training split
holds more than `STREAM_ABOVE` examples, or does not say how many it holds; local datasets are read from disk
(memory-mapped Arrow, nothing held in memory). `streaming=True` streams any source, `False` never streams.

A streamed training split is read twice before training, both times without decoding an image: once for its label
column (the classes and per-class counts), and, when the data brings no validation split, once more up to the last
held-out row (the first examples of each class in stream order, see `labelled.first_per_class`).

Example:
    >>> raw = read_dataset("owner/fish-survey", split="train")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bioclip_hf.data.labelled_sources import (
    DATASET_MARKERS,
    VAL_SPLITS,
    RawData,
    Rows,
    dataset_columns,
    dataset_rows,
    label_names,
    label_text,
    lineage_columns,
    listed,
    taxa_by_label,
)
from bioclip_hf.utils.errors import UsageError

logger = logging.getLogger(__name__)

STREAM_ABOVE = 50_000  # examples in the training split above which a Hub dataset is streamed rather than downloaded


def is_dataset_folder(path: Path) -> bool:
    """A folder written by `save_to_disk` (a Dataset or a DatasetDict)."""
    return any((path / marker).is_file() for marker in DATASET_MARKERS)


def looks_like_hub_id(source: str) -> bool:
    return source.count("/") == 1 and not source.startswith((".", "/", "~")) and not Path(source).exists()


def choose_splits(available: Sequence[str], split: str | None, val_split: str | None, name: str) -> tuple[str, str | None]:
    """(training split, held-out split or None): `split` (default "train", or the only split) and `val_split`
    (default: the first of val, validation, valid, test present)."""
    available = list(available)
    if split is not None and split not in available:
        raise UsageError(f"dataset {name} has no split {split!r}; its splits: {', '.join(available)}")
    if split is None:
        if "train" in available:
            split = "train"
        elif len(available) == 1:
            split = available[0]
        else:
            raise UsageError(f"dataset {name} has no 'train' split; choose one with --split: {', '.join(available)}")
    if val_split is not None and val_split not in available:
        raise UsageError(f"dataset {name} has no split {val_split!r} for --val-split; its splits: {', '.join(available)}")
    if val_split is None:
        val_split = next((s for s in VAL_SPLITS if s in available and s != split), None)
    return split, val_split


@dataclass
class StreamOpener:
    """Opens one split of a dataset as a stream of undecoded rows; plain fields, so it pickles into workers."""

    name: str
    config: str | None
    split: str

    def open(self) -> Any:
        import datasets

        return datasets.load_dataset(self.name, self.config, split=self.split, streaming=True)

    def features(self) -> Any:
        stream = self.open()
        return stream.features if stream.features is not None else stream._resolve_features().features

    def rows(self, columns: Sequence[str], block_size: int = 256) -> Iterator[dict[str, Any]]:
        """The rows' `columns`, images as `{"bytes", "path"}` dicts (never decoded here).

        Read through `IterableDataset.iter`, which (unlike iterating the dataset) does not split the shards between
        DataLoader workers: every loader worker sees the whole stream and keeps its own batches.
        """
        import datasets

        columns = list(dict.fromkeys(columns))
        stream = self.open().select_columns(columns)
        features = stream.features or {}
        for column in columns:
            if isinstance(features.get(column), datasets.Image):
                stream = stream.cast_column(column, datasets.Image(decode=False))
        for block in stream.iter(batch_size=block_size):
            values = [block[column] for column in columns]
            for row in zip(*values):
                yield dict(zip(columns, row))


def hub_split_size(name: str, config: str | None, split: str | None) -> int | None:
    """The number of examples the dataset's card records for `split` (or "train"), or None when unknown."""
    import datasets

    try:
        splits = datasets.load_dataset_builder(name, config).info.splits
    except (OSError, ValueError) as err:
        logger.info("%s: no dataset info (%s); streaming", name, err)
        return None
    if not splits:
        return None
    wanted = split or ("train" if "train" in splits else next(iter(splits)))
    info = splits.get(wanted)
    return int(info.num_examples) if info is not None and info.num_examples else None


def should_stream(source: str, streaming: bool | None, config: str | None = None, split: str | None = None) -> bool:
    """The streaming rule (module docstring): explicit choice, else Hub datasets over `STREAM_ABOVE` or unknown."""
    if streaming is not None:
        return bool(streaming)
    if not looks_like_hub_id(source):
        return False
    size = hub_split_size(source, config, split)
    stream = size is None or size > STREAM_ABOVE
    logger.info("%s: %s examples in the training split; %s", source, size if size is not None else "unknown",
                "streaming" if stream else "downloading")  # fmt: skip
    return stream


def _load(source: str, config: str | None) -> Any:
    """The Dataset or DatasetDict at `source` (saved folder, loadable folder or Hub id), not streamed."""
    import datasets

    path = Path(source)
    if is_dataset_folder(path):
        return datasets.load_from_disk(str(path))
    if path.is_dir() or looks_like_hub_id(source):
        return datasets.load_dataset(source, config)
    raise FileNotFoundError(f"data not found: {source} (expected an image folder, a .csv/.tsv/.parquet table, a dataset "
                            "folder or a Hub dataset id 'owner/name')")  # fmt: skip


def read_dataset(source: str, *, image_column: str | None = None, label_column: str | None = None,
                 split: str | None = None, val_split: str | None = None, streaming: bool | None = None,
                 config: str | None = None, val_positions: Callable[[list[str]], list[int]] | None = None) -> RawData:  # fmt: skip
    """Read a `datasets` source into `RawData` (map-style: lazy rows; streamed: `RawData.stream` is set).

    Args:
        source: Hub id, folder written by `save_to_disk`, or a folder `datasets.load_dataset` reads.
        image_column, label_column: default: the first `Image` / `ClassLabel` column, else usual names.
        split, val_split: see `choose_splits`.
        streaming: see the module docstring.
        config: the dataset configuration.
        val_positions: for a streamed dataset without a validation split, picks the held-out positions from the
            stream's labels (in stream order).
    """
    if should_stream(source, streaming, config, split):
        return _read_streamed(source, config, image_column, label_column, split, val_split, val_positions)
    loaded = _load(source, config)
    parts = dict(loaded) if hasattr(loaded, "keys") else {split or "train": loaded}
    train_name, val_name = choose_splits(list(parts), split, val_split, source)
    features = parts[train_name].features
    image_column, label_column = dataset_columns(features, image_column, label_column, source)
    names = label_names(features, label_column)
    train = dataset_rows(parts[train_name], image_column, label_column, names, f"{train_name}/")
    val = None
    if val_name is not None:
        val_features = parts[val_name].features
        for column in (image_column, label_column):
            if column not in val_features:
                raise UsageError(f"split {val_name!r} of dataset {source} has no column {column!r}; its columns: "
                                 f"{', '.join(val_features)}")  # fmt: skip
        val = dataset_rows(parts[val_name], image_column, label_column, label_names(val_features, label_column),
                           f"{val_name}/")  # fmt: skip
    lineage = lineage_columns(list(features), label_column, image_column)
    taxa = {}
    if lineage:
        records = parts[train_name].select_columns(lineage).to_list()
        taxa = taxa_by_label(train.labels, records, source)
    note = f"the dataset's own {val_name!r} split" if val is not None else ""
    description = f"dataset {source} (split {train_name!r})"
    return RawData("dataset", description, train, val, note, class_order=names, lineages=taxa)


@dataclass
class StreamPart:
    """A streamed training split: how to open it, its columns, and every row's label in stream order."""

    opener: StreamOpener
    image_column: str
    label_column: str
    names: list[str] | None
    labels: list[str]
    held_out: frozenset[int]


def _read_streamed(source: str, config: str | None, image_column: str | None, label_column: str | None,
                   split: str | None, val_split: str | None, val_positions: Any) -> RawData:  # fmt: skip
    import datasets

    available = list(datasets.get_dataset_split_names(source, config))
    train_name, val_name = choose_splits(available, split, val_split, source)
    opener = StreamOpener(source, config, train_name)
    features = opener.features()
    image_column, label_column = dataset_columns(features, image_column, label_column, source)
    names = label_names(features, label_column)
    labels = [label_text(row[label_column], names) for row in opener.rows([label_column])]
    if val_name is not None:
        val_opener = StreamOpener(source, config, val_name)
        val_names = label_names(val_opener.features(), label_column)
        val_rows = list(val_opener.rows([image_column, label_column]))
        val = Rows([r[image_column] for r in val_rows], [label_text(r[label_column], val_names) for r in val_rows],
                   [f"{val_name}/{i}" for i in range(len(val_rows))])  # fmt: skip
        held_out: frozenset[int] = frozenset()
        note = f"the dataset's own {val_name!r} split (streamed)"
    else:
        held_out = frozenset(val_positions(labels) if val_positions else ())
        val = _collect(opener, image_column, label_column, names, held_out, f"{train_name}/")
        note = "the first examples of each class in stream order (streamed)"
    stream = StreamPart(opener, image_column, label_column, names, labels, held_out)
    description = f"dataset {source} (split {train_name!r}, streamed)"
    raw = RawData("dataset", description, None, val, note, class_order=names, stream=stream)
    logger.info("%s: %d streamed training rows, %d held out", source, len(labels), len(val) if val is not None else 0)
    return raw


def _collect(opener: StreamOpener, image_column: str, label_column: str, names: list[str] | None,
             positions: frozenset[int], prefix: str) -> Rows:  # fmt: skip
    """The rows at `positions` of the stream, read up to the last of them (images undecoded)."""
    images, labels, keys = [], [], []
    last = max(positions, default=-1)
    if last < 0:
        return Rows(images, labels, keys)
    for position, row in enumerate(opener.rows([image_column, label_column])):
        if position in positions:
            images.append(row[image_column])
            labels.append(label_text(row[label_column], names))
            keys.append(f"{prefix}{position}")
        if position >= last:
            break
    if len(labels) != len(positions):
        raise OSError(f"stream {opener.name} ended after {position + 1} rows, before its held-out rows "
                      f"({listed(sorted(positions))})")  # fmt: skip
    return Rows(images, labels, keys)


__all__ = ["STREAM_ABOVE", "StreamOpener", "StreamPart", "choose_splits", "is_dataset_folder", "read_dataset",
           "should_stream"]  # fmt: skip
