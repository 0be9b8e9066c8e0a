"""Build TreeOfLife-10M-style WebDataset shards from an image catalog.

One sample = the image (JPEG) + the five BioCLIP text types + the taxon as JSON:

    <key>.jpg  <key>.taxonomic.txt  <key>.scientific.txt  <key>.common.txt
    <key>.taxonomic_common.txt  <key>.scientific_common.txt  <key>.taxon.json  <key>.source.txt

The catalog is a CSV/TSV/parquet table with an image column (`image`, `path`, `filepath`, `file` or
`url`: a local path, relative to the catalog, or an http(s)/file URL), the rank columns `kingdom` ...
`species` (any subset), `common_name` (or `common`), and optionally `source`, `split` and `key`
(or `uuid`, `treeoflife_id`).
Output is deterministic (same catalog -> byte-identical tars: fixed tar headers, catalog order,
no timestamps). Unreadable or corrupt images and rows without any taxon are skipped and listed in
`build_report.json`. A dataset card (`README.md`) is written next to the shards.

Example:
    python dataset_scripts/build_shards.py catalog.csv out/ --shard-size 1000 --name my-tol
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import re
import sys
import tarfile
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bioclip_hf.data.layouts import OURS, TAXON_FIELD

logger = logging.getLogger("build_shards")

IMAGE_COLUMNS = ("image", "path", "filepath", "file", "image_path", "url", "image_url")
# The shard's members come from the layout the trainer reads (one definition: bioclip_hf.data.layouts.OURS).
TEXT_KEYS = OURS.fields  # text type -> member name
JPEG_QUALITY = 95


@dataclass
class BuildConfig:
    """Options of `build_shards`.

    Args:
        shard_size: samples per shard (the last shard of a split may hold fewer).
        prefix: shard file name prefix; shards are `<split>/<prefix>-<n:05d>.tar`.
        default_split: split for rows without a `split` column value.
        url_timeout: seconds to wait for each http(s) image.
        name: dataset name used in the card.
        license: SPDX-like license id written to the card.
    """

    shard_size: int = 1000
    prefix: str = "shard"
    default_split: str = "train"
    url_timeout: float = 30.0
    name: str = "tree-of-life-shards"
    license: str = "cc0-1.0"

    def __post_init__(self) -> None:
        if int(self.shard_size) < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.prefix):
            raise ValueError(f"bad shard prefix {self.prefix!r}: use letters, digits, '_' or '-'")


@dataclass
class BuildReport:
    """What `build_shards` wrote and skipped (saved as `build_report.json`)."""

    num_samples: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    shards: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict[str, Any]:
        return {"num_samples": self.num_samples, "num_skipped": self.num_skipped, "splits": self.splits,
                "skipped": self.skipped, "shards": self.shards, "skipped_rows": self.skipped_rows}  # fmt: skip


class SkipSample(Exception):
    """A catalog row that cannot become a sample; `reason` is the report category."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def read_catalog(path: str | Path) -> list[dict[str, Any]]:
    """Read a catalog table (CSV, TSV, parquet, JSON lines) into a list of row dicts with lower-cased keys."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"catalog not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif suffix in (".jsonl", ".json"):
        frame = pd.read_json(path, lines=suffix == ".jsonl", dtype=False)
    elif suffix in (".csv", ".tsv"):
        frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
    else:
        raise ValueError(f"unsupported catalog format {suffix!r} ({path}); use .csv, .tsv, .parquet or .jsonl")
    frame.columns = [str(column).strip().lower() for column in frame.columns]
    if not any(column in frame.columns for column in IMAGE_COLUMNS):
        raise ValueError(f"catalog {path} has no image column; expected one of {', '.join(IMAGE_COLUMNS)}")
    return frame.to_dict("records")


def _image_reference(row: dict[str, Any]) -> str:
    for column in IMAGE_COLUMNS:
        value = row.get(column)
        if value is not None and str(value).strip() and str(value).strip().lower() != "nan":
            return str(value).strip()
    raise SkipSample("missing", "row has no image path or URL")


def read_image_bytes(reference: str, base_dir: Path, timeout: float = 30.0) -> bytes:
    """Raw bytes of a local image (absolute or relative to `base_dir`) or an http(s)/file URL."""
    if re.match(r"^(https?|file)://", reference):
        try:
            with urllib.request.urlopen(reference, timeout=timeout) as response:  # noqa: S310 (catalog URLs)
                return response.read()
        except (OSError, ValueError) as err:
            raise SkipSample("unreachable", f"cannot fetch {reference}: {err}") from None
    path = Path(reference)
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        raise SkipSample("missing", f"image not found: {path}")
    return path.read_bytes()


def to_jpeg(data: bytes) -> bytes:
    """Validate image bytes by decoding them fully; JPEGs are kept as-is, other formats re-encoded as RGB JPEG."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # a full decode catches truncated files that Image.open alone accepts
            if image.format == "JPEG" and image.mode in ("RGB", "L"):
                return data
            out = io.BytesIO()
            image.convert("RGB").save(out, format="JPEG", quality=JPEG_QUALITY)
            return out.getvalue()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise SkipSample("corrupt", f"cannot decode image: {err}") from None


def sample_fields(row: dict[str, Any], image: bytes) -> dict[str, bytes]:
    """The shard fields of one sample (everything but the key)."""
    from bioclip_hf.treeoflife.taxonomy import TEXT_TYPES, Taxon

    taxon = Taxon.from_dict(row)
    if not any(taxon.ranks()) and not taxon.common_name:
        raise SkipSample("no_taxon", "row has no taxonomy and no common name")
    fields = {"jpg": image}
    for text_type in TEXT_TYPES:
        fields[TEXT_KEYS[text_type]] = taxon.text(text_type).encode("utf-8")
    fields[TAXON_FIELD] = json.dumps(taxon.to_dict(), sort_keys=True).encode("utf-8")
    fields["source.txt"] = str(row.get("source") or "").strip().encode("utf-8")
    return fields


class _ShardWriter:
    """Writes `<split>/<prefix>-NNNNN.tar` files with reproducible tar headers."""

    def __init__(self, out_dir: Path, split: str, config: BuildConfig, report: BuildReport) -> None:
        self.out_dir, self.split, self.config, self.report = out_dir, split, config, report
        self.tar: tarfile.TarFile | None = None
        self.path: Path | None = None
        self.count = 0
        self.index = 0

    def add(self, key: str, fields: dict[str, bytes]) -> None:
        if self.tar is None:
            self.path = self.out_dir / self.split / f"{self.config.prefix}-{self.index:05d}.tar"
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.tar = tarfile.open(self.path, "w", format=tarfile.USTAR_FORMAT)
        for name in sorted(fields):
            info = tarfile.TarInfo(f"{key}.{name}")
            info.size, info.mtime, info.mode = len(fields[name]), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self.tar.addfile(info, io.BytesIO(fields[name]))
        self.count += 1
        if self.count == self.config.shard_size:
            self.close()

    def close(self) -> None:
        if self.tar is None:
            return
        self.tar.close()
        data = self.path.read_bytes()
        self.report.shards.append({"path": self.path.relative_to(self.out_dir).as_posix(), "num_samples": self.count,
                                   "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})  # fmt: skip
        self.tar, self.count, self.index = None, 0, self.index + 1


def _sample_key(row: dict[str, Any], index: int) -> str:
    # WebDataset splits a member name at its first dot: keys must be dot- and slash-free.
    key = str(row.get("key") or row.get("uuid") or row.get("treeoflife_id") or "").strip()
    key = re.sub(r"[^A-Za-z0-9_-]", "_", key) if key and key.lower() != "nan" else ""
    return key or f"{index:09d}"


def build_shards(catalog: str | Path, out_dir: str | Path, config: BuildConfig | None = None) -> BuildReport:
    """Write shards + `build_report.json` + `README.md` (dataset card) for `catalog` into `out_dir`.

    Args:
        catalog: table path (see module docstring for columns).
        out_dir: output folder; existing shards with the same names are overwritten.
        config: `BuildConfig` (shard size, prefix, ...).

    Returns:
        The `BuildReport` (also saved as `out_dir/build_report.json`).

    Example:
        >>> report = build_shards("catalog.csv", "shards", BuildConfig(shard_size=500))  # doctest: +SKIP
        >>> report.num_samples, report.skipped  # doctest: +SKIP
    """
    config = config or BuildConfig()
    catalog, out_dir = Path(catalog), Path(out_dir)
    rows = read_catalog(catalog)
    out_dir.mkdir(parents=True, exist_ok=True)
    report, writers, skipped, seen_keys = BuildReport(), {}, Counter(), set()
    for index, row in enumerate(rows):
        split = str(row.get("split") or "").strip() or config.default_split
        key = _sample_key(row, index)
        try:
            if not re.fullmatch(r"[A-Za-z0-9_-]+", split):
                raise SkipSample("bad_split", f"bad split name {split!r}")
            if key in seen_keys:
                raise SkipSample("duplicate_key", f"duplicate sample key {key!r}")
            reference = _image_reference(row)
            fields = sample_fields(row, to_jpeg(read_image_bytes(reference, catalog.parent, config.url_timeout)))
        except SkipSample as err:
            skipped[err.reason] += 1
            report.skipped_rows.append({"row": index, "key": key, "reason": err.reason, "message": str(err)})
            logger.warning("skipping catalog row %d: %s", index, err)
            continue
        seen_keys.add(key)
        writers.setdefault(split, _ShardWriter(out_dir, split, config, report)).add(key, fields)
        report.splits[split] = report.splits.get(split, 0) + 1
        report.num_samples += 1
    for writer in writers.values():
        writer.close()
    report.skipped = dict(sorted(skipped.items()))
    if report.num_samples == 0:
        raise ValueError(f"no valid samples in {catalog} ({report.num_skipped} rows skipped: {report.skipped})")
    (out_dir / "build_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    from dataset_card import write_dataset_card

    write_dataset_card(out_dir, report, name=config.name, license=config.license)
    logger.info("wrote %d samples in %d shards to %s (%d skipped)", report.num_samples, len(report.shards), out_dir,
                report.num_skipped)  # fmt: skip
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("catalog", help="CSV/TSV/parquet/JSONL catalog of images + taxonomy")
    parser.add_argument("out_dir", help="output folder for <split>/*.tar, README.md and build_report.json")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    parser.add_argument("--prefix", default="shard", help="shard file name prefix (default 'shard')")
    parser.add_argument("--split", default="train", help="split for rows without a 'split' value (default train)")
    parser.add_argument("--name", default="tree-of-life-shards", help="dataset name for the card")
    parser.add_argument("--license", default="cc0-1.0", help="license id for the card (default cc0-1.0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        config = BuildConfig(shard_size=args.shard_size, prefix=args.prefix, default_split=args.split,
                             name=args.name, license=args.license)  # fmt: skip
        report = build_shards(args.catalog, args.out_dir, config)
    except (ValueError, FileNotFoundError) as err:
        print(f"build_shards: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in report.to_dict().items() if k != "skipped_rows"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
