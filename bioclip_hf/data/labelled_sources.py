"""Readers behind `load_labelled_data`: an image folder by class, a CSV/TSV/Parquet table, a `datasets` dataset.

Each reader returns `RawData`: per part (train, and the data's own validation part when it brings one) the images,
their labels as written and a stable key per image, plus any lineage columns found. Images are not opened here:
a path, a `{"bytes", "path"}` dict or a row of an Arrow dataset is kept, and decoded by the loader.

Example:
    >>> raw = read_folder("photos/")  # doctest: +SKIP
    >>> raw.train.labels[:2], raw.train.keys[:2]  # doctest: +SKIP
    (['mallard', 'mallard'], ['mallard/1.jpg', 'mallard/2.jpg'])
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bioclip_hf.treeoflife.taxonomy import RANKS, Taxon
from bioclip_hf.utils.errors import UsageError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")
FILE_COLUMNS = ("file", "filepath", "file_path", "path", "image", "image_path", "filename", "file_name", "img")
LABEL_COLUMNS = ("label", "labels", "class_name", "category", "scientific_name", "taxon", "species", "class", "cls")
LINEAGE_COLUMNS = (*RANKS, "class_", "cls", "scientific_name", "common_name", "common")
VAL_SPLITS = ("val", "validation", "valid", "test")
DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")  # what save_to_disk writes


def listed(names: Sequence[Any], limit: int = 5) -> str:
    """'a, b, c' or 'a, b, c, ... (12 in all)': the first few of a long list, for one-line messages."""
    names = [str(name) for name in names]
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"


@dataclass(frozen=True)
class LabelledExample:
    """One training or validation photo.

    Args:
        image: what `decode_image` takes: a file path, a `{"bytes", "path"}` dict, encoded bytes or a PIL image.
        label_id: index of its class in `LabelledData.classes`.
        key: a stable name (relative path, or row index in a dataset); seeds the photo's augmentation.

    Example:
        >>> LabelledExample("photos/mallard/1.jpg", 0, "mallard/1.jpg").label_id
        0
    """

    image: Any
    label_id: int
    key: str


@dataclass
class Rows:
    """One part of the data, in the data's own order: `images[i]` (or a lazy `ArrowImages`) has `labels[i]`."""

    images: Sequence[Any]
    labels: list[str]
    keys: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def capped(self, max_per_class: int | None) -> Rows:
        """The first `max_per_class` rows of each class (all rows when None)."""
        if not max_per_class:
            return self
        seen: dict[str, int] = {}
        keep = []
        for position, label in enumerate(self.labels):
            seen[label] = seen.get(label, 0) + 1
            if seen[label] <= max_per_class:
                keep.append(position)
        if len(keep) == len(self.labels):
            return self
        images = self.images.subset(keep) if isinstance(self.images, ArrowImages) else [self.images[i] for i in keep]
        return Rows(images, [self.labels[i] for i in keep], [self.keys[i] for i in keep])


@dataclass
class RawData:
    """What a reader found: `train` and (when the data brings one) `val`, lineages by label, a class order.

    `stream` is set instead of `train` for a streamed dataset (`StreamedExamples` without label ids yet).
    """

    kind: str
    description: str
    train: Rows | None
    val: Rows | None = None
    split_note: str = ""
    class_order: list[str] | None = None
    lineages: dict[str, Taxon] = field(default_factory=dict)
    stream: Any = None


class ArrowImages:
    """Lazy image column of an Arrow-backed `datasets.Dataset` (undecoded `{"bytes", "path"}` dicts), read by row
    when the loader asks, so a large dataset on disk is never held in memory. Pickles (memory-mapped files).

    Example:
        >>> images = ArrowImages.from_dataset(dataset, "image")  # doctest: +SKIP
        >>> images[0]["bytes"][:2]  # doctest: +SKIP
        b'\\xff\\xd8'
    """

    def __init__(self, dataset: Any, column: str, rows: Sequence[int]):
        self.dataset, self.column, self.rows = dataset, column, list(rows)

    @classmethod
    def from_dataset(cls, dataset: Any, column: str) -> ArrowImages:
        """Every row of `dataset[column]`, images left undecoded."""
        import datasets

        dataset = dataset.select_columns([column])
        if isinstance(dataset.features[column], datasets.Image):
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
        return cls(dataset, column, range(len(dataset)))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[int(self.rows[index])][self.column]

    def subset(self, positions: Sequence[int]) -> ArrowImages:
        return ArrowImages(self.dataset, self.column, [self.rows[i] for i in positions])


# -- lineage columns ------------------------------------------------------------------------------


def lineage_columns(columns: Sequence[str], label_column: str | None, file_column: str | None = None) -> list[str]:
    """The columns that describe a lineage (ranks, common name), not counting the file and label columns.

    A `scientific_name` column gives the genus and epithet (when no genus/species columns do). A label column named
    like a rank ("species", "class") counts only beside other rank columns: alone it names the photo's class, not a
    lineage; a `scientific_name` label alone is the label as written, with a common name beside it a lineage.
    """
    lowered = {str(c).strip().lower(): c for c in columns}
    found = [lowered[name] for name in LINEAGE_COLUMNS if name in lowered and lowered[name] != file_column]
    ranks = [c for c in found if str(c).lower() not in ("common_name", "common")]
    if ranks == [label_column] and (str(label_column).lower() != "scientific_name" or len(found) == 1):
        found.remove(label_column)
        ranks = []
    return found if ranks else []


def lineage_record(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with genus and species taken from its scientific_name when it has no genus/species of its own."""
    lowered = {str(k).strip().lower(): v for k, v in record.items()}
    binomial = str(lowered.get("scientific_name") or "").split()
    if binomial and not lowered.get("genus") and not lowered.get("species"):
        lowered["genus"], lowered["species"] = binomial[0], " ".join(binomial[1:])
    return lowered


def taxa_by_label(labels: Sequence[str], records: Sequence[dict[str, Any]], source: str) -> dict[str, Taxon]:
    """Per label, the Taxon of its first row naming any rank; rows that disagree with it are logged once."""
    taxa: dict[str, Taxon] = {}
    conflicts: list[str] = []
    for label, record in zip(labels, records):
        taxon = Taxon.from_dict(lineage_record(record))
        if not any(taxon.ranks()):
            continue
        if label not in taxa:
            taxa[label] = taxon
        elif taxa[label] != taxon and label not in conflicts:
            conflicts.append(label)
    if conflicts:
        logger.warning("%s: rows of %d label(s) give different lineages (the first is used): %s", source,
                       len(conflicts), listed(conflicts))  # fmt: skip
    return taxa


def read_label_taxa(path: str | os.PathLike) -> dict[str, Taxon]:
    """Read a `--label-taxa` table (CSV/TSV/Parquet): a label column plus kingdom ... species, common_name.

    Example:
        >>> read_label_taxa("taxa.csv")["raven"].genus  # doctest: +SKIP
        'Corvus'
    """
    frame = read_frame(path)
    columns = [str(c) for c in frame.columns]
    label = next((c for c in ("label", "labels", "class_name", "category", "name", "scientific_name") if c in columns), None)
    if label is None:
        raise UsageError(f"taxa file {path} has no label column (label, class_name, category, name or scientific_name); "
                         f"its columns: {', '.join(columns)}")  # fmt: skip
    lineage = [c for c in lineage_columns(columns, None) if c != label]
    if not lineage:
        raise UsageError(f"taxa file {path} has no lineage columns ({', '.join(RANKS)}, common_name); "
                         f"its columns: {', '.join(columns)}")  # fmt: skip
    labels = [str(v).strip() for v in frame[label].tolist()]
    return taxa_by_label(labels, frame[lineage].to_dict("records"), str(path))


# -- image folders --------------------------------------------------------------------------------


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_under(folder: Path) -> list[Path]:
    """Image files under `folder` at any depth (extensions compared case-insensitively), sorted, hidden ones left out."""
    found = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder).parts
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not any(p.startswith(".") for p in relative):
            found.append(path)
    return sorted(found)


def _folder_rows(root: Path, base: Path) -> Rows:
    images, labels, keys = [], [], []
    for class_dir in _class_dirs(root):
        for path in _images_under(class_dir):
            images.append(str(path))
            labels.append(class_dir.name)
            keys.append(path.relative_to(base).as_posix())
    stray = [p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if stray:
        logger.warning("%s: %d image(s) outside class folders are left out: %s", root, len(stray), listed(sorted(stray)))
    return Rows(images, labels, keys)


def is_image_folder(root: Path) -> bool:
    """A folder whose sub-folders hold images (class folders, or train/ and val/ holding class folders)."""
    return any(_images_under(d) for d in _class_dirs(root)) if root.is_dir() else False


def read_folder(root: str | os.PathLike, split: str | None = None, val_split: str | None = None) -> RawData:
    """`root/<label>/**/*.jpg`, or `root/train/<label>/...` plus `root/val/<label>/...` (also validation, valid, test).

    Args:
        root: the folder.
        split: the training sub-folder when the folder is split (default "train").
        val_split: the held-out sub-folder (default: the first of val, validation, valid, test present).
    """
    root = Path(root)
    names = {p.name for p in _class_dirs(root)}
    train_name = split or "train"
    if split is not None and split not in names:
        raise UsageError(f"{root} has no sub-folder {split!r} for --split; its folders: {listed(sorted(names))}")
    val_name = val_split or next((n for n in VAL_SPLITS if n in names), None)
    if val_split is not None and val_split not in names:
        raise UsageError(f"{root} has no sub-folder {val_split!r} for --val-split; its folders: {listed(sorted(names))}")
    # Split sub-folders: train/ (alone or beside val/ ...) holding class folders; otherwise every sub-folder is a class.
    split_layout = split is not None or (names <= {train_name, *VAL_SPLITS} and is_image_folder(root / train_name))
    if split_layout and train_name in names:
        train = _folder_rows(root / train_name, root)
        val = _folder_rows(root / val_name, root) if val_name is not None else None
        note = f"the folder's own {val_name}/ split" if val is not None else ""
    else:
        train, val, note = _folder_rows(root, root), None, ""
    if not len(train):
        raise UsageError(f"no images found in {root} (expected {root}/<label>/*.jpg: one sub-folder per class)")
    return RawData("folder", f"image folder {root}", train, val, note)


# -- tables ---------------------------------------------------------------------------------------


def read_frame(path: str | os.PathLike) -> Any:
    """A CSV/TSV (all values as strings) or Parquet table as a pandas DataFrame."""
    import pandas as pd

    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise FileNotFoundError(f"table not found: {path}")
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix in (".csv", ".tsv"):
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
    raise UsageError(f"unknown table format {path.name!r}: use .csv, .tsv or .parquet")


def pick_column(columns: Sequence[str], wanted: str | None, candidates: Sequence[str], role: str, where: str,
                exclude: Sequence[str] = ()) -> str:  # fmt: skip
    """`wanted` if a column, else the first of `candidates` present (case-insensitive, `exclude` left out); else a
    one-line error naming all the columns."""
    if wanted is not None:
        if wanted in columns:
            return wanted
        raise UsageError(f"{where} has no {role} column {wanted!r}; its columns: {', '.join(map(str, columns))}")
    lowered = {str(c).strip().lower(): c for c in columns if c not in exclude}
    found = next((lowered[name] for name in candidates if name in lowered), None)
    if found is None:
        raise UsageError(f"{where} has no {role} column (looked for {', '.join(candidates)}); its columns: "
                         f"{', '.join(map(str, columns))} (use --{role}-column)")  # fmt: skip
    return found


def _table_labels(frame: Any, label_column: str) -> list[str]:
    """The label of each row; a "species" column holding epithets beside a genus column gives the binomial."""
    values = [str(v).strip() for v in frame[label_column].tolist()]
    lowered = {str(c).strip().lower(): c for c in frame.columns}
    if str(label_column).lower() == "species" and "genus" in lowered:
        genera = [str(v).strip() for v in frame[lowered["genus"]].tolist()]
        values = [f"{g} {s}" if g and s and not s.startswith(g + " ") else s for g, s in zip(genera, values)]
    return values


def read_table(path: str | os.PathLike, file_column: str | None = None, label_column: str | None = None,
               split: str | None = None, val_split: str | None = None) -> RawData:  # fmt: skip
    """A table of photos: a file column (paths relative to the table's folder, or absolute), a label column, optional
    lineage columns and an optional `split` column (train / val, validation, valid, test).

    Raises:
        UsageError: a column is missing (the table's columns are named), or files the table names do not exist
            (the first few are listed with their count), or a split value is unknown.
    """
    path = Path(path)
    frame = read_frame(path)
    columns = [str(c) for c in frame.columns]
    file_column = pick_column(columns, file_column, FILE_COLUMNS, "file", str(path))
    label_column = pick_column(columns, label_column, LABEL_COLUMNS, "label", str(path), exclude=[file_column])
    frame = frame[[str(v).strip() != "" for v in frame[file_column].tolist()]]
    names = [str(v).strip() for v in frame[file_column].tolist()]
    files = [name if os.path.isabs(name) else str(path.parent / name) for name in names]
    missing = [name for name, file in zip(names, files) if not os.path.isfile(file)]
    if missing:
        raise UsageError(f"{path} names {len(missing)} file(s) that do not exist: {listed(missing)}")
    labels = _table_labels(frame, label_column)
    if any(not label for label in labels):
        empty = [name for name, label in zip(names, labels) if not label]
        raise UsageError(f"{path}: {len(empty)} row(s) have an empty {label_column!r}: {listed(empty)}")
    lineage = lineage_columns(columns, label_column, file_column)
    taxa = taxa_by_label(labels, frame[lineage].to_dict("records"), str(path)) if lineage else {}
    rows = Rows(files, labels, names)
    lowered = {c.lower(): c for c in columns}
    if "split" not in lowered or lowered["split"] in (file_column, label_column):
        return RawData("table", f"table {path}", rows, lineages=taxa)
    return _split_by_column(path, rows, [str(v).strip() for v in frame[lowered["split"]].tolist()], split, val_split, taxa)


def _split_by_column(path: Path, rows: Rows, values: list[str], split: str | None, val_split: str | None,
                     taxa: dict[str, Taxon]) -> RawData:  # fmt: skip
    """Parts from a table's `split` column: `split` (default "train") trains, `val_split` (default any of
    VAL_SPLITS present) validates; any other value is an error."""
    train_name = split or "train"
    present = sorted(set(values))
    val_names = [val_split] if val_split else [n for n in VAL_SPLITS if n in present]
    unknown = [v for v in present if v != train_name and v not in val_names]
    if unknown or train_name not in present:
        raise UsageError(f"{path}: split column values must be {train_name!r} or one of {', '.join(val_names or VAL_SPLITS)};"
                         f" found {listed(present)}")  # fmt: skip
    parts = []
    for wanted in ([train_name], val_names):
        keep = [i for i, v in enumerate(values) if v in wanted]
        parts.append(Rows([rows.images[i] for i in keep], [rows.labels[i] for i in keep], [rows.keys[i] for i in keep]))
    val = parts[1] if len(parts[1]) else None
    note = f"the table's own split column ({', '.join(val_names)})" if val is not None else ""
    return RawData("table", f"table {path}", parts[0], val, note, lineages=taxa)


# -- datasets -------------------------------------------------------------------------------------


def _columns(features: Any) -> list[str]:
    return [str(c) for c in features]


def dataset_columns(features: Any, image_column: str | None, label_column: str | None, name: str) -> tuple[str, str]:
    """The image column (`image_column`, or the first `Image` feature, or a file-name column) and the label column
    (`label_column`, or the first `ClassLabel`, or a usual label name); one-line errors name the dataset's columns."""
    import datasets

    columns = _columns(features)
    if image_column is None:
        image_column = next((c for c in columns if isinstance(features[c], datasets.Image)), None)
    image_column = pick_column(columns, image_column, FILE_COLUMNS, "image", f"dataset {name}")
    if label_column is None:
        label_column = next((c for c in columns if isinstance(features[c], datasets.ClassLabel)), None)
    label_column = pick_column(columns, label_column, LABEL_COLUMNS, "label", f"dataset {name}", exclude=[image_column])
    feature = features[image_column]
    if not isinstance(feature, datasets.Image) and not (isinstance(feature, datasets.Value) and "string" in feature.dtype):
        raise UsageError(f"column {image_column!r} of dataset {name} holds {feature}, not images; its columns: "
                         f"{', '.join(columns)}")  # fmt: skip
    return image_column, label_column


def label_names(features: Any, label_column: str) -> list[str] | None:
    """The ClassLabel names of `label_column`, or None for a plain (string/int) label."""
    return list(getattr(features[label_column], "names", None) or []) or None


def label_text(value: Any, names: list[str] | None) -> str:
    """A label value as text: a ClassLabel index becomes its name."""
    if names is not None and isinstance(value, int) and not isinstance(value, bool):
        return names[value]
    return str(value).strip()


def dataset_rows(dataset: Any, image_column: str, label_column: str, names: list[str] | None, prefix: str) -> Rows:
    """Rows of a map-style dataset: lazy images, labels read from the label column only, keys "<split>/<row>"."""
    labels = [label_text(v, names) for v in dataset[label_column]]
    images = ArrowImages.from_dataset(dataset, image_column)
    return Rows(images, labels, [f"{prefix}{row}" for row in range(len(labels))])


class StreamedExamples:
    """The training part of a streamed dataset, as `LabelledExample`s in stream order.

    Re-opens the stream on each iteration (so it pickles into loader workers); rows held out for validation
    (`held_out`, positions in the stream) and rows past `max_per_class` of their class are left out.
    """

    def __init__(self, opener: Any, image_column: str, label_column: str, names: list[str] | None,
                 label_ids: dict[str, int], held_out: frozenset[int] = frozenset(), max_per_class: int | None = None,
                 len_hint: int | None = None, prefix: str = "") -> None:  # fmt: skip
        self.opener, self.image_column, self.label_column, self.names = opener, image_column, label_column, names
        self.label_ids, self.held_out, self.max_per_class = label_ids, held_out, max_per_class
        self.len_hint, self.prefix = len_hint, prefix

    def __iter__(self) -> Iterator[LabelledExample]:
        counts: dict[int, int] = {}
        for position, row in enumerate(self.opener.rows([self.image_column, self.label_column])):
            if position in self.held_out:
                continue
            label_id = self.label_ids.get(label_text(row[self.label_column], self.names))
            if label_id is None:
                continue
            counts[label_id] = counts.get(label_id, 0) + 1
            if self.max_per_class and counts[label_id] > self.max_per_class:
                continue
            yield LabelledExample(row[self.image_column], label_id, f"{self.prefix}{position}")


__all__ = ["ArrowImages", "IMAGE_EXTENSIONS", "LabelledExample", "RawData", "Rows", "StreamedExamples", "is_image_folder",
           "listed", "read_folder", "read_label_taxa", "read_table"]  # fmt: skip
