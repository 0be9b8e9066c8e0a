"""Synthetic TreeOfLife training data in every layout the loaders read (no real data can be downloaded in tests).

- `make_catalog` / `make_shards`: images + `catalog.csv`, and the shards `dataset_scripts/build_shards.py` makes of
  them; `add_corrupt_shard` appends a shard with an unreadable image.
- `write_official_shards`: WebDataset shards as Imageomics' `make_wds.py` writes them (webdataset's TarWriter,
  `shard-######.tar`, members `<treeoflife_id>.jpg` + the ten text members of `make_txt` + `classes`).
- `make_tol10m_repo`: the `imageomics/TreeOfLife-10M` repo layout: `dataset/EOL/image_set_NN.tar.gz` (members
  `<treeoflife_id>.jpg`), `metadata/catalog.csv` with its 17 columns, `metadata/licenses.csv`.
- `make_tol200m_folder`: TreeOfLife-200M rebuilt locally: `shard-######.tar` (members `<uuid>.jpg` plus the
  downloader's other members) + `catalog.parquet` keyed by `uuid`.

Example:
    >>> catalog = make_catalog(tmp_path / "catalog", num_images=24)  # doctest: +SKIP
    >>> report = make_shards(tmp_path / "shards", num_images=24, shard_size=6)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import tarfile
import uuid
from pathlib import Path

from bioclip_hf.treeoflife.taxonomy import Taxon

from .images import make_image
from .paths import import_dataset_scripts

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


TOL10M_COLUMNS = ("split", "treeoflife_id", "eol_content_id", "eol_page_id", "bioscan_part", "bioscan_filename",
                  "inat21_filename", "inat21_cls_name", "inat21_cls_num", "kingdom", "phylum", "class", "order",
                  "family", "genus", "species", "common")  # fmt: skip
LICENSE_COLUMNS = ("treeoflife_id", "eol_content_id", "eol_page_id", "md5", "medium_source_url", "eol_full_size_copy_url",
                   "license_name", "copyright_owner", "license_link", "title")  # fmt: skip


def tol_id(index: int) -> str:
    """A deterministic uuid, the form of TreeOfLife ids."""
    return str(uuid.UUID(int=(index * 0x9E3779B97F4A7C15 + 12345) % (1 << 128), version=4))


def make_txt(taxon: Taxon) -> dict[str, str]:
    """The ten text members of Imageomics' make_wds.py for one taxon (common falls back to scientific, then taxonomic)."""
    taxonomic, scientific = " ".join(name for name in taxon.ranks() if name), taxon.scientific_name
    common = taxon.common_name or scientific or taxonomic
    tags = " ".join(f"{rank} {name}" for rank, name in zip(("kingdom", "phylum", "class", "order", "family", "genus",
                                                              "species"), taxon.ranks()) if name)  # fmt: skip
    return {
        "scientific_name.txt": scientific, "taxonomic_name.txt": taxonomic, "common_name.txt": common,
        "sci.txt": f"a photo of {scientific}.", "com.txt": f"a photo of {common}.", "taxon.txt": f"a photo of {taxonomic}.",
        "taxonTag.txt": f"a photo of {tags}.", "sci_com.txt": f"a photo of {scientific} with common name {common}.",
        "taxon_com.txt": f"a photo of {taxonomic} with common name {common}.",
        "taxonTag_com.txt": f"a photo of {tags} with common name {common}.",
    }  # fmt: skip


def taxon_of(index: int) -> Taxon:
    return Taxon(*TAXA[index % len(TAXA)])


def write_official_shards(
    out: Path, num_images: int = 20, shard_size: int = 5, corrupt: int | None = None
) -> list[str]:
    """`out/shard-000000.tar`, ... in make_wds.py's layout; returns the sample keys in order.

    `corrupt`: index of a sample whose jpg is not an image (it must be skipped and counted).
    """
    import webdataset

    out.mkdir(parents=True, exist_ok=True)
    keys = []
    for start in range(0, num_images, shard_size):
        with webdataset.TarWriter(str(out / f"shard-{start // shard_size:06d}.tar"), mtime=0) as sink:
            for index in range(start, min(start + shard_size, num_images)):
                key = tol_id(index)
                image = b"\xff\xd8\xff not a jpeg" if index == corrupt else make_image(index)
                classes = f"[{index % len(TAXA)}, {index % 3}]".encode()  # make_wds.py's unused list of numbers
                sink.write({"__key__": key, "jpg": image, **make_txt(taxon_of(index)), "classes": classes})
                keys.append(key)
    return keys


def _tar_gz(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def catalog_row(split: str, key: str, index: int, source: str = "eol", taxon: Taxon | None = None) -> dict[str, str]:
    taxon = taxon or taxon_of(index)
    ids = {"eol": {"eol_content_id": str(20_000 + index), "eol_page_id": str(45_000 + index % len(TAXA))},
           "bioscan": {"bioscan_part": str(1 + index % 113), "bioscan_filename": f"{index:08x}.jpg"},
           "inat21": {"inat21_filename": f"{key}.jpg", "inat21_cls_name": "_".join(taxon.ranks()),
                      "inat21_cls_num": str(index % 10_000)}}[source]  # fmt: skip
    ranks = dict(zip(("kingdom", "phylum", "class", "order", "family", "genus", "species"), taxon.ranks()))
    common = taxon.common_name or taxon.scientific_name  # the catalog's `common` falls back like make_wds.py
    return {**dict.fromkeys(TOL10M_COLUMNS, ""), "split": split, "treeoflife_id": key, **ids, **ranks, "common": common}


def make_tol10m_repo(root: Path, train: int = 16, val: int = 4, per_tar: int = 7) -> dict:
    """A miniature `imageomics/TreeOfLife-10M` in its repo layout; returns what the tests check against.

    EOL images: `train` train ones (every third also listed as train_small), `val` val ones, one image with no
    catalog row, one corrupt JPEG (train). iNat21 / BIOSCAN rows have no image in the repo (as on the Hub).
    One train row has no kingdom..family (missing ranks are kept empty).
    """
    root = Path(root)
    rows, images = [], {}
    for index in range(train + val):
        key, split = tol_id(index), ("val" if index >= train else "train")
        taxon = Taxon("", "", "", "", "", "Rosa", "canina", "dog rose") if index == 5 else None
        rows.append(catalog_row(split, key, index, taxon=taxon))
        if split == "train" and index % 3 == 0:
            rows.append(catalog_row("train_small", key, index, taxon=taxon))
        images[f"{key}.jpg"] = make_image(index)
    corrupt = tol_id(900)
    rows.append(catalog_row("train", corrupt, 900))
    images[f"{corrupt}.jpg"] = b"\xff\xd8\xff\xe0 truncated"
    orphan = tol_id(901)
    images[f"{orphan}.jpg"] = make_image(901)  # in a tar, but not in the catalog
    for index in range(950, 956):
        rows.append(catalog_row("train", tol_id(index), index, source="inat21" if index % 2 else "bioscan"))
    (root / "dataset" / "EOL").mkdir(parents=True, exist_ok=True)
    names = list(images)
    for n, start in enumerate(range(0, len(names), per_tar)):
        _tar_gz(
            root / "dataset" / "EOL" / f"image_set_{n + 1:02d}.tar.gz",
            {k: images[k] for k in names[start : start + per_tar]},
        )
    (root / "metadata").mkdir(exist_ok=True)
    with (root / "metadata" / "catalog.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=TOL10M_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    with (root / "metadata" / "licenses.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LICENSE_COLUMNS)
        writer.writeheader()
        writer.writerows({"treeoflife_id": r["treeoflife_id"], "eol_content_id": r["eol_content_id"],
                          "eol_page_id": r["eol_page_id"], "license_name": "cc-by"} for r in rows if r["eol_content_id"])  # fmt: skip
    return {"train": [tol_id(i) for i in range(train)], "val": [tol_id(i) for i in range(train, train + val)],
            "corrupt": corrupt, "orphan": orphan, "tars": n + 1}  # fmt: skip


def make_tol200m_folder(root: Path, num_images: int = 12, per_shard: int = 4) -> list[str]:
    """TreeOfLife-200M rebuilt locally: `catalog.parquet` (uuid-keyed) + `shard-######.tar`; returns the uuids."""
    import pandas as pd

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    keys, records = [], []
    for index in range(num_images):
        key, taxon = tol_id(300 + index), taxon_of(index)
        keys.append(key)
        records.append({
            "uuid": key, "source_url": f"https://example.org/{index}.jpg",
            **dict(zip(("kingdom", "phylum", "class", "order", "family", "genus", "species"), taxon.ranks())),
            "scientific_name": taxon.scientific_name, "common": taxon.common_name or None,
            "data_source": "gbif", "publisher": "example", "basisOfRecord": "HUMAN_OBSERVATION", "img_type": "Image",
            "source_id": str(index), "shard_filename": f"shard-{index // per_shard:06d}.tar",
            "shard_file_path": f"shards/shard-{index // per_shard:06d}.tar",
        })  # fmt: skip
    pd.DataFrame(records).to_parquet(root / "catalog.parquet", index=False)
    (root / "shards").mkdir(exist_ok=True)
    for start in range(0, num_images, per_shard):
        with tarfile.open(root / "shards" / f"shard-{start // per_shard:06d}.tar", "w") as tar:
            for index in range(start, min(start + per_shard, num_images)):
                for name, data in ((f"{keys[index]}.jpg", make_image(300 + index)),
                                   (f"{keys[index]}.json", b'{"source": "gbif"}')):  # fmt: skip
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return keys
