"""Labelled photo sets in every form `load_labelled_data` reads: a folder by class, tables, taxa files, datasets.

`make_labelled_folder` lays out `tmp/photos/<label>/<n>.jpg` from the shared birds525 photos (label: the common name;
lineage: Animalia Chordata Aves + genus and epithet from the scientific name + common name; skipped when the photos are
absent) or from generated coloured images (`from_birds=False`; the four `support.images.CLASSES` with full lineages,
then made-up ones). The other builders write the same set as a table, a taxa file or a `datasets` dataset.

Example:
    >>> photos = make_labelled_folder(tmp_path, n_classes=4, per_class=5)  # doctest: +SKIP
    >>> table = write_table(photos, tmp_path / "labels.csv")  # doctest: +SKIP
    >>> dataset_dir = write_dataset(photos, tmp_path / "ds", val=True)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .images import CLASSES
from .paths import BIRDS

LINEAGE_FIELDS = ("kingdom", "phylum", "class", "order", "family", "genus", "species", "common_name")


@dataclass
class LabelledSet:
    """A labelled photo set on disk.

    Attributes:
        root: the folder of class folders (`root/<label>/<n>.jpg`).
        labels: the class labels, sorted (the class ids `load_labelled_data` gives).
        lineages: label -> {kingdom, phylum, class, order, family, genus, species (epithet), common_name}.
        files: (path relative to `root`, label) per photo, in sorted path order.
    """

    root: Path
    labels: list[str]
    lineages: dict[str, dict[str, str]]
    files: list[tuple[str, str]]

    def paths(self) -> list[Path]:
        return [self.root / relative for relative, _ in self.files]


def _bird_species(n_classes: int) -> list[dict[str, str]]:
    """`n_classes` species spread evenly over birds525 (sorted by folder), each with its photo paths."""
    import pytest

    labels = BIRDS / "labels.csv"
    if not labels.is_file():
        pytest.skip(f"real photos not available at {BIRDS}")
    by_folder: dict[str, dict[str, Any]] = {}
    with labels.open() as fh:
        for row in csv.DictReader(fh):
            entry = by_folder.setdefault(Path(row["file"]).parent.name, {**row, "files": []})
            entry["files"].append(BIRDS / row["file"])
    folders = sorted(by_folder)
    step = len(folders) / n_classes
    return [by_folder[folders[int(i * step)]] for i in range(n_classes)]


def bird_lineage(common_name: str, scientific_name: str) -> dict[str, str]:
    """The known part of a birds525 species' lineage (no order or family in labels.csv)."""
    genus, _, epithet = scientific_name.strip().partition(" ")
    return dict(zip(LINEAGE_FIELDS, ("Animalia", "Chordata", "Aves", "", "", genus, epithet, common_name)))


def _write_generated(folder: Path, colour: tuple[int, int, int], count: int, seed: int) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        pixels = np.clip(np.array(colour) + rng.normal(0, 12, (40, 48, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i + 1}.jpg", quality=95)
        paths.append(folder / f"{i + 1}.jpg")
    return paths


def make_labelled_folder(tmp: Path, n_classes: int = 4, per_class: int = 5, *, from_birds: bool = True,
                         name: str = "photos") -> LabelledSet:  # fmt: skip
    """`tmp/name/<label>/<n>.jpg`: `per_class` photos of each of `n_classes` classes (birds525 has 5 per class)."""
    root = Path(tmp) / name
    lineages: dict[str, dict[str, str]] = {}
    if from_birds:
        if per_class > 5:
            raise ValueError("birds525 has 5 photos per class")
        for species in _bird_species(n_classes):
            label = species["common_name"]
            (root / label).mkdir(parents=True, exist_ok=True)
            for i, source in enumerate(species["files"][:per_class]):
                shutil.copy(source, root / label / f"{i + 1}.jpg")
            lineages[label] = bird_lineage(label, species["scientific_name"])
    else:
        specs = list(CLASSES.items())
        rng = np.random.default_rng(1)
        for i in range(n_classes):
            if i < len(specs):
                label, (ranks, common, colour) = specs[i]
            else:
                label, colour = f"bird{i:02d}", tuple(int(c) for c in rng.integers(0, 256, 3))
                ranks, common = ("Animalia", "Chordata", "Aves", "Passeriformes", "Fringillidae", f"Avis{i}", "minor"), ""
            _write_generated(root / label, colour, per_class, seed=i)
            lineages[label] = dict(zip(LINEAGE_FIELDS, (*ranks, common)))
    files = sorted((p.relative_to(root).as_posix(), p.parent.name) for p in root.rglob("*.jpg"))
    return LabelledSet(root, sorted(lineages), lineages, files)


def write_table(photos: LabelledSet, path: Path, *, lineage: bool = True, label_column: str = "label",
                file_column: str = "file", split: dict[str, str] | None = None, absolute: bool = False) -> Path:  # fmt: skip
    """A .csv/.tsv/.parquet table (format from `path`'s suffix) of `photos`: file (relative to the table's folder,
    or absolute), label, the lineage columns when `lineage`, and a `split` column from `split` (relative file ->
    value) when given."""
    import os

    import pandas as pd

    path = Path(path)
    rows = []
    for relative, label in photos.files:
        file = photos.root / relative
        row = {file_column: str(file) if absolute else os.path.relpath(file, path.parent), label_column: label}
        if lineage:
            row.update(photos.lineages[label])
        if split is not None:
            row["split"] = split.get(relative, "train")
        rows.append(row)
    frame = pd.DataFrame(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, sep="\t" if path.suffix == ".tsv" else ",", index=False)
    return path


def write_taxa(photos: LabelledSet, path: Path, *, leave_out: int = 0) -> Path:
    """A `--label-taxa` CSV: label + lineage columns per class (the last `leave_out` classes left out)."""
    path = Path(path)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["label", *LINEAGE_FIELDS])
        writer.writeheader()
        for label in photos.labels[: len(photos.labels) - leave_out]:
            writer.writerow({"label": label, **photos.lineages[label]})
    return path


def to_dataset(photos: LabelledSet, *, class_label: bool = True, relatives: list[str] | None = None) -> Any:
    """A `datasets.Dataset` with an `image` column (encoded bytes) and a `label` column (ClassLabel over
    `photos.labels`, or the label string)."""
    import datasets

    chosen = [(r, label) for r, label in photos.files if relatives is None or r in relatives]
    images = [{"bytes": (photos.root / r).read_bytes(), "path": r} for r, _ in chosen]
    label_feature = datasets.ClassLabel(names=photos.labels) if class_label else datasets.Value("string")
    labels = [photos.labels.index(label) if class_label else label for _, label in chosen]
    features = datasets.Features({"image": datasets.Image(), "label": label_feature})
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


def split_files(photos: LabelledSet, val_per_class: int = 1) -> tuple[list[str], list[str]]:
    """(train, val) relative files: the last `val_per_class` photos of each class are val."""
    by_label: dict[str, list[str]] = {}
    for relative, label in photos.files:
        by_label.setdefault(label, []).append(relative)
    val = [r for files in by_label.values() for r in files[len(files) - val_per_class :]]
    return [r for r, _ in photos.files if r not in val], val


def write_dataset(photos: LabelledSet, path: Path, *, class_label: bool = True, val: bool = False) -> Path:
    """`save_to_disk` of `photos` as a Dataset, or (`val=True`) a DatasetDict with train and validation splits
    (the last photo of each class in validation)."""
    import datasets

    if val:
        train_files, val_files = split_files(photos)
        data = datasets.DatasetDict({"train": to_dataset(photos, class_label=class_label, relatives=train_files),
                                     "validation": to_dataset(photos, class_label=class_label, relatives=val_files)})  # fmt: skip
    else:
        data = to_dataset(photos, class_label=class_label)
    data.save_to_disk(str(path))
    return Path(path)
