"""Small generated photos: encoded bytes, random-noise files, and a labelled folder of coloured classes."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import numpy as np

CLASSES = {  # folder -> (lineage kingdom..species epithet, common name, RGB colour of its generated photos)
    "raven": (("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "corax"), "common raven", (20, 20, 30)),
    "magpie": (("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Pica", "pica"), "magpie", (240, 240, 250)),
    "mallard": (("Animalia", "Chordata", "Aves", "Anseriformes", "Anatidae", "Anas", "platyrhynchos"), "mallard", (30, 160, 40)),
    "rose": (("Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Rosaceae", "Rosa", "canina"), "dog rose", (220, 40, 60)),
}  # fmt: skip
PER_CLASS = 7


def make_image(index: int, fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    """A small deterministic image (size and colours vary with `index`) encoded as `fmt`."""
    from PIL import Image

    rng = random.Random(index)
    size = (24 + index % 17, 20 + (index * 7) % 13)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(6):  # a few rectangles so images differ in content, not only in colour
        x0, y0 = rng.randrange(size[0] - 4), rng.randrange(size[1] - 4)
        image.paste(tuple(rng.randrange(256) for _ in range(3)), (x0, y0, x0 + 4, y0 + 4))
    out = io.BytesIO()
    image.convert(mode).save(out, format=fmt)
    return out.getvalue()


def write_image(path: Path, seed: int, scale: int = 255) -> Path:
    """A random-noise image file at `path` (format from its suffix; size varies with `seed`)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    array = (np.random.default_rng(seed).random((24 + seed % 7, 31, 3)) * scale).astype("uint8")
    Image.fromarray(array).save(path)
    return path


def make_image_folder(root: Path) -> Path:
    """root/images/<class>/<n>.png (a colour per class of `CLASSES` plus noise, `PER_CLASS` each) and
    root/labels.csv with the lineage of each image; returns `root`."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for name, (lineage, common, colour) in CLASSES.items():
        (root / "images" / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            pixels = np.clip(np.array(colour) + rng.normal(0, 12, (40, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "images" / name / f"{i}.png")
            rows.append(
                {
                    "file": f"images/{name}/{i}.png",
                    **dict(zip(("kingdom", "phylum", "class", "order", "family", "genus", "species"), lineage)),
                    "common": common,
                }
            )
    with (root / "labels.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root
