"""Synthetic Tree-of-Life data for tests: a hierarchical taxonomy, small PIL images, catalogs and shards.

Example:
    >>> catalog = make_catalog(tmp_path / "catalog", num_images=24)  # doctest: +SKIP
    >>> report = make_shards(tmp_path / "shards", num_images=24, shard_size=6)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import random
import sys
import tarfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASET_SCRIPTS = REPO_ROOT / "dataset_scripts"

# Two kingdoms, shared ranks down the tree so the hierarchy matters; one taxon lacks a common name.
TAXA = [
    ("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "corax", "common raven"),
    ("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "corone", "carrion crow"),
    ("Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Pica", "pica", "Eurasian magpie"),
    ("Animalia", "Chordata", "Mammalia", "Carnivora", "Canidae", "Vulpes", "vulpes", "red fox"),
    ("Animalia", "Arthropoda", "Insecta", "Lepidoptera", "Nymphalidae", "Danaus", "plexippus", "monarch butterfly"),
    ("Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Rosaceae", "Rosa", "canina", ""),
]
RANK_COLUMNS = ("kingdom", "phylum", "class", "order", "family", "genus", "species", "common_name")


def import_dataset_scripts():
    """Make `dataset_scripts/*.py` importable (they are scripts, not a package) and return the folder."""
    if str(DATASET_SCRIPTS) not in sys.path:
        sys.path.insert(0, str(DATASET_SCRIPTS))
    return DATASET_SCRIPTS


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


def make_catalog(folder: Path, num_images: int = 24, bad_rows: bool = True, splits: bool = False) -> Path:
    """Write images + `catalog.csv` into `folder`; returns the catalog path.

    Images cycle through JPEG, PNG, RGBA PNG and grayscale JPEG. With `bad_rows`, three rows are appended
    that build_shards.py must skip: a corrupt JPEG, a missing file and a row without any taxonomy.
    """
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    formats = [("JPEG", "RGB", "jpg"), ("PNG", "RGB", "png"), ("PNG", "RGBA", "png"), ("JPEG", "L", "jpg")]
    rows = []
    for index in range(num_images):
        fmt, mode, ext = formats[index % len(formats)]
        name = f"images/{index:03d}.{ext}"
        (folder / name).write_bytes(make_image(index, fmt, mode))
        taxon = TAXA[index % len(TAXA)]
        row = {"image": name, **dict(zip(RANK_COLUMNS, taxon)), "source": ("inat21", "bioscan", "eol")[index % 3]}
        if splits:
            row["split"] = "validation" if index % 4 == 3 else "train"
        rows.append(row)
    if bad_rows:
        (folder / "images" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00not really a jpeg" * 10)
        rows.append({"image": "images/corrupt.jpg", **dict(zip(RANK_COLUMNS, TAXA[0])), "source": "eol"})
        rows.append({"image": "images/missing.jpg", **dict(zip(RANK_COLUMNS, TAXA[1])), "source": "eol"})
        (folder / "images" / "no_taxon.jpg").write_bytes(make_image(999))
        rows.append({"image": "images/no_taxon.jpg", **dict.fromkeys(RANK_COLUMNS, ""), "source": "eol"})
    catalog = folder / "catalog.csv"
    with catalog.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=sorted({key for row in rows for key in row}))
        writer.writeheader()
        writer.writerows(rows)
    return catalog


def make_shards(out_dir: Path, num_images: int = 24, shard_size: int = 6, bad_rows: bool = True):
    """Catalog -> shards with dataset_scripts/build_shards.py; returns its `BuildReport`."""
    import_dataset_scripts()
    from build_shards import BuildConfig, build_shards

    catalog = make_catalog(Path(out_dir).parent / f"{Path(out_dir).name}_catalog", num_images, bad_rows)
    return build_shards(catalog, out_dir, BuildConfig(shard_size=shard_size, name="synthetic-tol"))


def add_corrupt_shard(out_dir: Path, split: str = "train", good: int = 2) -> Path:
    """Append a shard whose samples are `good` valid ones plus one with a corrupt `jpg` (tests load-time skipping)."""
    import json

    path = Path(out_dir) / split / "zz-corrupt-00000.tar"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for index in range(good + 1):
            key = f"corrupt{index:03d}"
            image = make_image(500 + index) if index < good else b"\xff\xd8\xff garbage that is no image"
            taxon = dict(zip(RANK_COLUMNS, TAXA[0]))
            text = "Animalia Chordata Aves Passeriformes Corvidae Corvus corax"
            fields = {"jpg": image, "taxon.json": json.dumps(taxon).encode(), "source.txt": b"test",
                      "taxonomic.txt": text.encode(), "scientific.txt": b"Corvus corax", "common.txt": b"common raven",
                      "taxonomic_common.txt": (text + " with common name common raven").encode(),
                      "scientific_common.txt": b"Corvus corax with common name common raven"}  # fmt: skip
            for name in sorted(fields):
                info = tarfile.TarInfo(f"{key}.{name}")
                info.size = len(fields[name])
                tar.addfile(info, io.BytesIO(fields[name]))
    return path
