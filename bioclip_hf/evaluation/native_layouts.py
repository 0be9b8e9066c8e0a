"""Annotation rows for the tasks beyond species, read from each dataset's own download layout.

A folder without `metadata.csv` is read as the dataset ships (and as BioCLIP 2's scripts read it):

- NeWT: `newt2021_labels.csv` (id, task, label, split, ...) and `newt2021_images/<id>.jpg`;
- FishNet: `train.csv` / `test.csv` and `Image_Library/<folder>/<image>`; the script picks the image and folder by
  position (columns 4 and 13 after polars' row index, i.e. the CSV's 4th and 13th columns), as done here;
- AwA2: `JPEGImages/<class>/*` for the classes of `trainclasses.txt` and `testclasses.txt` (+ the class files);
- Herbarium19: `small-train/<class>/*` (an image folder);
- PlantDoc: `train/<class>/*` and `test/<class>/*` (image folders).

Each reader returns rows in the annotation layout (`filepath` relative to the folder, plus the columns the task's
protocol reads), so both layouts go through the same checks and the same feature cache.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's


def _csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _image_folder(folder: Path, prefix: str, classes: list[str] | None = None) -> list[tuple[str, str]]:
    """(class, filepath relative to the task folder) of an ImageFolder: classes and files in sorted order."""
    base = folder / prefix
    names = classes if classes is not None else sorted(p.name for p in base.iterdir() if p.is_dir())
    found = []
    for name in names:
        files = sorted(p for p in (base / name).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        found += [(name, str(p.relative_to(folder))) for p in files]
    return found


def newt_rows(folder: Path) -> list[dict[str, str]]:
    _, rows = _csv_rows(folder / "newt2021_labels.csv")
    return [{**row, "filepath": f"newt2021_images/{row['id']}.jpg"} for row in rows]


def fishnet_rows(folder: Path) -> list[dict[str, str]]:
    rows = []
    for split in ("train", "test"):
        header, table = _csv_rows(folder / f"{split}.csv")
        if len(header) < 13:
            raise ValueError(f"{folder / f'{split}.csv'}: expected FishNet's columns (image 4th, folder 13th), got {header}")
        image, family = header[3], header[12]
        rows += [{**row, "split": split, "filepath": f"Image_Library/{row[family]}/{row[image].split('/')[-1]}"}
                 for row in table]  # fmt: skip
    return rows


def awa2_rows(folder: Path) -> list[dict[str, str]]:
    classes = []
    for name in ("trainclasses.txt", "testclasses.txt"):
        classes += [line.split()[-1] for line in (folder / name).read_text().splitlines() if line.strip()]
    return [{"class": c, "filepath": p} for c, p in _image_folder(folder, "JPEGImages", classes)]


def herbarium19_rows(folder: Path) -> list[dict[str, str]]:
    return [{"class": c, "filepath": p, "split": "train"} for c, p in _image_folder(folder, "small-train")]


def plantdoc_rows(folder: Path) -> list[dict[str, str]]:
    return [{"class": c, "filepath": p, "split": split} for split in ("train", "test")
            for c, p in _image_folder(folder, split)]  # fmt: skip


READERS: dict[str, tuple[str, Callable[[Path], list[dict[str, str]]]]] = {  # protocol -> (file it needs, reader)
    "newt": ("newt2021_labels.csv", newt_rows),
    "fishnet": ("train.csv", fishnet_rows),
    "awa2": ("trainclasses.txt", awa2_rows),
    "herbarium19": ("small-train", herbarium19_rows),
    "plantdoc": ("train", plantdoc_rows),
}


def native_rows(protocol: str, folder: str | Path) -> list[dict[str, str]] | None:
    """The dataset's own layout read into annotation rows, or None when `folder` is not in that layout.

    Example:
        >>> native_rows("newt", "data/newt")[0]["filepath"]  # doctest: +SKIP
        'newt2021_images/3ae6e1f4-....jpg'
    """
    entry = READERS.get(protocol)
    folder = Path(folder)
    if entry is None or not (folder / entry[0]).exists():
        return None
    return entry[1](folder)
