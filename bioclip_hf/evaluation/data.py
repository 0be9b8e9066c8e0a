"""Read a task's images, labels and per-class taxa from a local folder or a Hub dataset."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bioclip_hf.evaluation.tasks import TaskSpec

logger = logging.getLogger(__name__)


@dataclass
class TaskData:
    """One task's examples: `images[i]` (path or encoded bytes) has class `labels[i]`, an index into `taxa`.

    Args:
        images: per example, a file path (str) or the encoded image bytes.
        labels: per example, the class index.
        class_names: per class, the dataset's class name.
        taxa: per class, a `bioclip_hf.treeoflife.taxonomy.Taxon` built from the task's taxon columns.
    """

    images: list[Any]
    labels: list[int]
    class_names: list[str]
    taxa: list[Any]

    def __len__(self) -> int:
        return len(self.labels)


def _load_split(spec: TaskSpec):
    """The `datasets.Dataset` for the task's split; a lone split of a local folder is used whatever its name."""
    import datasets

    location = spec.location
    if Path(location).is_dir():
        loaded = datasets.load_dataset(location, name=spec.config)
        if spec.split in loaded:
            return loaded[spec.split]
        if len(loaded) == 1:
            only = next(iter(loaded))
            logger.info("%s: split %r not found, using the folder's only split %r", spec.name, spec.split, only)
            return loaded[only]
        raise ValueError(f"{location}: no split {spec.split!r} (has {', '.join(loaded)})")
    if location.startswith((".", "/", "~")) or location.count("/") != 1:  # a path, not an "owner/name" Hub id
        raise FileNotFoundError(f"dataset folder not found: {location}")
    return datasets.load_dataset(location, name=spec.config, split=spec.split)


def _image_refs(dataset, column: str) -> list[Any]:
    """Per example, the image's file path when it has one, else its encoded bytes (no decoding here)."""
    import datasets

    if column not in dataset.column_names:
        raise KeyError(f"image column {column!r} not in dataset columns {dataset.column_names}")
    refs = dataset.cast_column(column, datasets.Image(decode=False))[column]
    return [ref["path"] if ref.get("path") and Path(ref["path"]).is_file() else ref["bytes"] for ref in refs]


def _join_metadata(spec: TaskSpec, rows: list[dict], images: list[Any]) -> None:
    """Add the columns of the task's per-image metadata CSV to `rows`, matched by relative path or file name."""
    import pandas as pd

    root = Path(spec.location).resolve()
    table_path = root / spec.metadata_file
    if not table_path.is_file():
        raise FileNotFoundError(f"task {spec.name}: metadata file not found: {table_path}")
    table = pd.read_csv(table_path, dtype=str, keep_default_na=False)
    if spec.metadata_path_column not in table.columns:
        raise KeyError(f"{table_path}: no column {spec.metadata_path_column!r} (has {', '.join(table.columns)})")
    records = table.to_dict("records")
    by_path = {str(Path(r[spec.metadata_path_column])): r for r in records}
    names = [Path(r[spec.metadata_path_column]).name for r in records]
    # File-name matching only when names are unique (Meta-Album's flat FILE_NAME); else "1.jpg" would be ambiguous.
    by_name = dict(zip(names, records)) if len(set(names)) == len(names) else {}
    unmatched = 0
    for row, image in zip(rows, images):
        path = Path(image).resolve() if isinstance(image, str) else None
        key = str(path.relative_to(root)) if path is not None and path.is_relative_to(root) else None
        match = by_path.get(key) if key else None
        if match is None and path is not None:
            match = by_name.get(path.name)
        if match is None:
            unmatched += 1
            continue
        row.update({k: v for k, v in match.items() if k != spec.metadata_path_column})
    if unmatched:
        raise ValueError(f"task {spec.name}: {unmatched} image(s) have no row in {table_path}")


def _taxon_for(spec: TaskSpec, row: dict):
    """The Taxon described by one example's row, through the task's taxon_columns."""
    from bioclip_hf.treeoflife.taxonomy import Taxon

    values = {}
    for taxon_field, column in spec.taxon_columns.items():
        if column not in row:
            raise KeyError(f"task {spec.name}: taxon column {column!r} (for {taxon_field}) not in {sorted(row)}")
        values[taxon_field] = row[column]
    binomial = str(values.pop("scientific_name", "") or "").split()
    if binomial and not values.get("genus"):
        values["genus"] = binomial[0]
        values.setdefault("species", " ".join(binomial[1:]))
    return Taxon.from_dict(values)


def load_task_data(spec: TaskSpec, max_classes: int | None = None, max_per_class: int | None = None) -> TaskData:
    """Read the task's split: images (paths/bytes), class indices, class names and per-class taxa.

    Args:
        spec: the task spec (its `data_dir`, when set, replaces `dataset`).
        max_classes: keep only the first N classes (sorted by class name) for quick runs.
        max_per_class: keep at most N examples per class (the first ones, in dataset order).

    Example:
        >>> data = load_task_data(load_task("birds525"), max_classes=10)  # doctest: +SKIP
    """
    dataset = _load_split(spec)
    images = _image_refs(dataset, spec.image_column)
    features = dataset.features
    rows = dataset.remove_columns(spec.image_column).to_list()
    if spec.metadata_file:
        _join_metadata(spec, rows, images)
    if not rows or spec.label_column not in rows[0]:
        raise KeyError(f"task {spec.name}: label column {spec.label_column!r} not found (have {sorted(rows[0]) if rows else []})")
    label_feature = features.get(spec.label_column)
    names = getattr(label_feature, "names", None)
    for row in rows:  # the class name is what the label column means, for ClassLabel too
        value = row[spec.label_column]
        row[spec.label_column] = names[value] if names is not None and isinstance(value, int) else str(value)
    order = {name: i for i, name in enumerate(names or [])}  # ClassLabel order first, then by name
    class_names = sorted({row[spec.label_column] for row in rows}, key=lambda n: (order.get(n, len(order)), n))
    if max_classes:
        class_names = class_names[:max_classes]
    index = {name: i for i, name in enumerate(class_names)}
    kept_images, labels, counts, first_row = [], [], [0] * len(class_names), {}
    for image, row in zip(images, rows):
        label = index.get(row[spec.label_column])
        if label is None or (max_per_class and counts[label] >= max_per_class):
            continue
        counts[label] += 1
        first_row.setdefault(label, row)
        kept_images.append(image)
        labels.append(label)
    taxa = [_taxon_for(spec, first_row[i]) for i in range(len(class_names))]
    logger.info("%s: %d examples, %d classes", spec.name, len(labels), len(class_names))
    return TaskData(kept_images, labels, class_names, taxa)
