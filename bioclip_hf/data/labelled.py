"""Your own labelled photos, in whatever form you hold them, as classes with texts and a train / held-out split.

`load_labelled_data` reads an image folder by class, a CSV/TSV/Parquet table, or a `datasets` dataset (Hub id, a
`save_to_disk` folder or a datasets-loadable folder), optionally maps labels to lineages with a taxa file, and builds
each class's text the way the base model was trained: the Tree-of-Life text type (`taxonomic+common` by default)
where a lineage is known, the label as written otherwise.

The held-out split is stratified and seeded: within each class, `numpy.random.default_rng([seed, crc32(label)])`
permutes the class's examples (in the data's order) and the first `round(val_fraction * n)` (at least one, at most
n - 1) are held out. That depends on nothing but the seed, the label and the data's order, so it is the same on every
platform and a class's split does not change when other classes are added. A class with a single photo trains and is
listed in the report. Data that brings its own held-out part (train/ + val/ folders, a table's `split` column, a
dataset's validation/test split) is used as it is.

Example:
    >>> data = load_labelled_data("photos/", val_fraction=0.2, seed=0)  # doctest: +SKIP
    >>> data.labels, len(data.train), len(data.val), data.class_texts()[0]  # doctest: +SKIP
    (['mallard', 'raven'], 16, 4, 'a photo of mallard.')
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bioclip_hf.data.labelled_loader import LabelledLoader, labelled_loader
from bioclip_hf.data.labelled_sources import (
    TABLE_SUFFIXES,
    LabelledExample,
    RawData,
    Rows,
    StreamedExamples,
    is_image_folder,
    listed,
    read_folder,
    read_label_taxa,
    read_table,
)
from bioclip_hf.treeoflife.taxonomy import DEFAULT_TEMPLATE, Taxon, apply_template, check_text_type
from bioclip_hf.utils.errors import UsageError

logger = logging.getLogger(__name__)

DEFAULT_TEXT_TYPE = "taxonomic+common"  # the text of the Tree-of-Life index and of the base models' training


@dataclass(frozen=True)
class LabelledClass:
    """One class: its label as written, its lineage (None when unknown) and its text (no template applied).

    Example:
        >>> LabelledClass("raven", None, "raven").text
        'raven'
    """

    label: str
    taxon: Taxon | None
    text: str


@dataclass
class DataReport:
    """What was read and what was set aside.

    Args:
        source: the data, described ("image folder photos", "table labels.csv", "dataset owner/name (split 'train')").
        kind: "folder", "table" or "dataset".
        split: how the held-out part was made.
        train_counts, val_counts: examples per class label.
        singleton_classes: classes with a single photo (trained on, none held out).
        skipped: unreadable images met by loaders (key -> reason); loaders given `report=` add to it.

    Example:
        >>> DataReport("image folder photos", "folder", "held out", {"a": 2}, {"a": 1}).num_skipped
        0
    """

    source: str
    kind: str
    split: str
    train_counts: dict[str, int]
    val_counts: dict[str, int]
    singleton_classes: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def add_skipped(self, skipped: dict[str, str]) -> None:
        """Record unreadable images (each key once, whichever loader met it)."""
        self.skipped.update(skipped)

    def summary(self) -> str:
        """One line for logs: sizes, classes, singletons, skipped images."""
        line = (f"{self.source}: {sum(self.train_counts.values())} training and {sum(self.val_counts.values())} "
                f"held-out photos of {len(self.train_counts)} classes; held out: {self.split}")  # fmt: skip
        if self.singleton_classes:
            line += f"; {len(self.singleton_classes)} class(es) with one photo (not held out): {listed(self.singleton_classes)}"
        if self.skipped:
            line += f"; {self.num_skipped} unreadable image(s) skipped: {listed(list(self.skipped))}"
        return line


@dataclass
class LabelledData:
    """Classes, training and held-out examples, and the report of `load_labelled_data`.

    Args:
        classes: per class id, its `LabelledClass` (sorted by label; ClassLabel order for datasets that have one).
        train: `LabelledExample`s (a sequence; an iterable `StreamedExamples` when `streamed`).
        val: held-out `LabelledExample`s (empty when every class has a single photo, or `val_fraction` is 0).
        report: the `DataReport`.
        lineage_known: every class has a lineage.
        text_type: the text type the class texts were built with.
        streamed: `train` is a stream (no random access; the loader shuffles it with a buffer).
        source: the data as given.

    Example:
        >>> data.class_texts()  # doctest: +SKIP
        ['a photo of Animalia Chordata Aves Anseriformes Anatidae Anas platyrhynchos with common name mallard.', ...]
    """

    classes: list[LabelledClass]
    train: Any
    val: Sequence[LabelledExample]
    report: DataReport
    lineage_known: bool
    text_type: str = DEFAULT_TEXT_TYPE
    streamed: bool = False
    source: str = ""

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.classes]

    @property
    def taxa(self) -> list[Taxon | None]:
        return [c.taxon for c in self.classes]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_texts(self, template: str | Callable[[str], str] = DEFAULT_TEMPLATE) -> list[str]:
        """Per class, its text in `template` ("a photo of {}." by default; a format string or a callable)."""
        return [apply_template(template, c.text) for c in self.classes]

    def describe(self) -> dict[str, Any]:
        """What the model card and results.json say about the data (plain JSON types): `source` describes it,
        `data` is what was given (a Hub dataset id is linked from the card)."""
        report = self.report
        return {
            "source": report.source, "data": self.source, "kind": report.kind, "num_classes": self.num_classes,
            "num_train": sum(report.train_counts.values()), "num_val": sum(report.val_counts.values()),
            "split": report.split, "lineage_known": self.lineage_known, "text_type": self.text_type,
            "streamed": self.streamed, "classes": self.labels, "singleton_classes": list(report.singleton_classes),
            "skipped_images": report.num_skipped,
        }  # fmt: skip


class Examples(Sequence):
    """`LabelledExample`s of `rows` at `positions` (a lazy view: Arrow-backed images are read when asked)."""

    def __init__(self, rows: Rows, positions: Sequence[int], label_ids: dict[str, int]):
        self.rows, self.positions, self.label_ids = rows, np.asarray(positions, dtype=np.int64), label_ids

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        position = int(self.positions[index])
        label = self.rows.labels[position]
        return LabelledExample(self.rows.images[position], self.label_ids[label], self.rows.keys[position])

    def label_ids_array(self) -> np.ndarray:
        """Every example's class id, without touching the images."""
        return np.asarray([self.label_ids[self.rows.labels[p]] for p in self.positions], dtype=np.int64)


# -- the split ------------------------------------------------------------------------------------


def val_count(n: int, val_fraction: float) -> int:
    """Examples held out of a class of `n`: round(fraction * n) (halves up), at least 1 and at most n - 1; 0 when
    n < 2 or the fraction is 0."""
    if n < 2 or val_fraction <= 0:
        return 0
    return min(n - 1, max(1, math.floor(n * val_fraction + 0.5)))


def _by_label(labels: Sequence[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for position, label in enumerate(labels):
        groups.setdefault(label, []).append(position)
    return groups


def stratified_split(labels: Sequence[str], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train positions, held-out positions), both ascending: per class, a seeded permutation picks `val_count`.

    Example:
        >>> stratified_split(["a"] * 5 + ["b"] * 5, 0.2, seed=0)[1]
        [0, 9]
    """
    val: list[int] = []
    for label, positions in _by_label(labels).items():
        rng = np.random.default_rng([int(seed), zlib.crc32(label.encode("utf-8"))])
        order = rng.permutation(len(positions))
        val.extend(positions[int(i)] for i in order[: val_count(len(positions), val_fraction)])
    held = set(val)
    return [p for p in range(len(labels)) if p not in held], sorted(val)


def first_per_class(labels: Sequence[str], val_fraction: float) -> list[int]:
    """Held-out positions of a stream: the first `val_count` examples of each class, in stream order."""
    return sorted(p for positions in _by_label(labels).values() for p in positions[: val_count(len(positions), val_fraction)])


# -- classes and texts ----------------------------------------------------------------------------


def build_classes(labels: Sequence[str], taxa: dict[str, Taxon], text_type: str) -> list[LabelledClass]:
    """Per label, its lineage (when one names any rank) and its text: `taxon.text(text_type)`, else the label."""
    classes = []
    for label in labels:
        taxon = taxa.get(label)
        if taxon is not None and not any(taxon.ranks()):
            taxon = None
        classes.append(LabelledClass(label, taxon, taxon.text(text_type) if taxon is not None else label))
    return classes


def _apply_label_taxa(path: str | os.PathLike, labels: Sequence[str]) -> dict[str, Taxon]:
    taxa = read_label_taxa(path)
    uncovered = [label for label in labels if label not in taxa]
    if uncovered:
        raise UsageError(f"the taxa file {path} does not cover {len(uncovered)} label(s): {listed(uncovered)}")
    return taxa


def _class_order(labels: Iterable[str], order: list[str] | None) -> list[str]:
    present = set(labels)
    if order:  # the dataset's ClassLabel order, then labels it does not name
        return [n for n in order if n in present] + sorted(present - set(order))
    return sorted(present)


# -- reading --------------------------------------------------------------------------------------


def _read(source: str | os.PathLike, options: dict[str, Any]) -> RawData:
    from bioclip_hf.data.labelled_datasets import is_dataset_folder, looks_like_hub_id, read_dataset

    path = Path(source)
    kind_options = {k: options[k] for k in ("split", "val_split")}
    if path.is_file():
        if path.suffix.lower() not in TABLE_SUFFIXES:
            raise UsageError(f"unknown data format {path.name!r}: use an image folder, a .csv/.tsv/.parquet table or a dataset")
        return read_table(path, options["file_column"], options["label_column"], **kind_options)
    if path.is_dir() and not is_dataset_folder(path) and is_image_folder(path) and not options["streaming"]:
        return read_folder(path, **kind_options)
    if path.is_dir() and not is_dataset_folder(path) and not _has_data_files(path):
        raise UsageError(f"no images found in {path} (expected {path}/<label>/*.jpg: one sub-folder per class)")
    if path.is_dir() or looks_like_hub_id(str(source)):
        val_fraction = options["val_fraction"]
        return read_dataset(str(source), image_column=options["image_column"], label_column=options["label_column"],
                            streaming=options["streaming"], val_positions=lambda labels: first_per_class(labels, val_fraction),
                            **kind_options)  # fmt: skip
    raise FileNotFoundError(f"data not found: {source}")


def _has_data_files(path: Path) -> bool:
    """Whether a folder holds files `datasets.load_dataset` could read as a dataset (Parquet, Arrow, CSV, JSON)."""
    suffixes = (".parquet", ".arrow", ".csv", ".tsv", ".json", ".jsonl")
    return any(p.is_file() and p.suffix.lower() in suffixes for p in path.rglob("*"))


def _check_options(text_type: str | None, val_fraction: float, max_per_class: int | None) -> str:
    text_type = check_text_type(text_type or DEFAULT_TEXT_TYPE)
    if not 0 <= val_fraction < 1:
        raise UsageError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if max_per_class is not None and max_per_class < 1:
        raise UsageError(f"max_per_class must be >= 1, got {max_per_class}")
    return text_type


def load_labelled_data(source: str | os.PathLike, *, image_column: str | None = None, label_column: str | None = None,
                       file_column: str | None = None, label_taxa: str | os.PathLike | None = None,
                       text_type: str | None = None, val_fraction: float = 0.2, seed: int = 0, split: str | None = None,
                       val_split: str | None = None, streaming: bool | None = None,
                       max_per_class: int | None = None) -> LabelledData:  # fmt: skip
    """Read labelled photos, build each class's text and split off a stratified held-out part.

    Args:
        source: an image folder by class (`photos/<label>/*.jpg`, or with train/ and val/ sub-folders); a .csv/.tsv/
            .parquet table with a file column, a label column, optional lineage columns (kingdom ... species,
            common_name) and an optional `split` column; a `datasets` folder (`save_to_disk` or loadable); a Hub id.
        image_column: a dataset's image column (default: its first Image column).
        label_column: the label column of a table or dataset (default: a ClassLabel column, else label, class, ...).
        file_column: a table's file column (default: file, filepath, path, image, ...).
        label_taxa: a table mapping labels to lineages (columns label, kingdom ... species, common_name); it must
            cover every label.
        text_type: one of the Tree-of-Life text types (default "taxonomic+common"), used where a lineage is known.
        val_fraction: share of each class held out when the data brings no held-out part.
        seed: seeds the held-out split.
        split: the training split / sub-folder / `split` value (default "train").
        val_split: the held-out one (default: val, validation, valid or test when present).
        streaming: stream a dataset (None: Hub datasets over `labelled_datasets.STREAM_ABOVE` examples).
        max_per_class: keep only the first N photos of each class (of each part), for quick runs.

    Raises:
        UsageError: one class only, no images, missing files, missing columns, uncovered labels, bad options.
        FileNotFoundError: `source` does not exist.

    Example:
        >>> data = load_labelled_data("labels.csv", label_taxa="taxa.csv", text_type="scientific")  # doctest: +SKIP
    """
    text_type = _check_options(text_type, val_fraction, max_per_class)
    options = dict(image_column=image_column, label_column=label_column, file_column=file_column, split=split,
                   val_split=val_split, streaming=streaming, val_fraction=val_fraction)  # fmt: skip
    raw = _read(source, options)
    if raw.stream is not None:
        return _streamed_data(raw, source, label_taxa, text_type, max_per_class)
    train, val = raw.train.capped(max_per_class), raw.val.capped(max_per_class) if raw.val is not None else None
    labels = _class_order(train.labels + (val.labels if val is not None else []), raw.class_order)
    _check_classes(labels, raw.description)
    taxa = _apply_label_taxa(label_taxa, labels) if label_taxa is not None else raw.lineages
    label_ids = {label: i for i, label in enumerate(labels)}
    if val is None:
        train_positions, val_positions = stratified_split(train.labels, val_fraction, seed)
        note = f"stratified {val_fraction:g} of each class, seed {seed}"
        train_part, val_part = Examples(train, train_positions, label_ids), Examples(train, val_positions, label_ids)
    else:
        note = raw.split_note
        train_part, val_part = Examples(train, range(len(train)), label_ids), Examples(val, range(len(val)), label_ids)
    report = _report(raw, note, labels, train_part, val_part)
    classes = build_classes(labels, taxa, text_type)
    data = LabelledData(classes, train_part, val_part, report, all(c.taxon is not None for c in classes), text_type,
                        False, str(source))  # fmt: skip
    logger.info("%s", report.summary())
    return data


def _check_classes(labels: Sequence[str], description: str) -> None:
    if not labels:
        raise UsageError(f"no labelled photos found in {description}")
    if len(labels) < 2:
        raise UsageError(f"{description} has one class only ({labels[0]!r}); fine-tuning needs at least two")


def _counts(labels: Iterable[str], order: Sequence[str]) -> dict[str, int]:
    counts = Counter(labels)
    return {label: counts.get(label, 0) for label in order}


def _report(raw: RawData, note: str, labels: list[str], train: Examples, val: Examples) -> DataReport:
    train_counts = _counts((train.rows.labels[p] for p in train.positions), labels)
    val_counts = _counts((val.rows.labels[p] for p in val.positions), labels)
    singletons = [label for label in labels if train_counts[label] + val_counts[label] == 1]
    return DataReport(raw.description, raw.kind, note, train_counts, val_counts, singletons)


def _streamed_data(raw: RawData, source: Any, label_taxa: Any, text_type: str, max_per_class: int | None) -> LabelledData:
    """LabelledData over a streamed training split (see `labelled_datasets`)."""
    stream = raw.stream
    val = raw.val.capped(max_per_class) if raw.val is not None else Rows([], [], [])
    train_labels = [label for p, label in enumerate(stream.labels) if p not in stream.held_out]
    train_counts = Counter(train_labels)
    if max_per_class:
        train_counts = Counter({k: min(v, max_per_class) for k, v in train_counts.items()})
    labels = _class_order(list(train_counts) + val.labels, raw.class_order)
    _check_classes(labels, raw.description)
    taxa = _apply_label_taxa(label_taxa, labels) if label_taxa is not None else raw.lineages
    label_ids = {label: i for i, label in enumerate(labels)}
    train = StreamedExamples(stream.opener, stream.image_column, stream.label_column, stream.names, label_ids,
                             stream.held_out, max_per_class, sum(train_counts.values()),
                             f"{stream.opener.split}/")  # fmt: skip
    val_counts = _counts(val.labels, labels)
    train_dict = {label: train_counts.get(label, 0) for label in labels}
    singletons = [label for label in labels if train_dict[label] + val_counts[label] == 1]
    report = DataReport(raw.description, raw.kind, raw.split_note, train_dict, val_counts, singletons)
    classes = build_classes(labels, taxa, text_type)
    logger.info("%s", report.summary())
    return LabelledData(classes, train, Examples(val, range(len(val)), label_ids), report,
                        all(c.taxon is not None for c in classes), text_type, True, str(source))  # fmt: skip


__all__ = ["DEFAULT_TEXT_TYPE", "DataReport", "Examples", "LabelledClass", "LabelledData", "LabelledExample",
           "LabelledLoader", "StreamedExamples", "build_classes", "first_per_class", "labelled_loader",
           "load_labelled_data", "stratified_split", "val_count"]  # fmt: skip
