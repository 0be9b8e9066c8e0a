"""File formats of Tree-of-Life indexes: memory-mapped embedding matrices, the released `.npy` + `.json` pair, and
subset tables. Used by `treeoflife.index`; nothing here builds Python objects per taxon.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from bioclip_hf.treeoflife.taxonomy import RANKS

_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": None, "F64": np.float64}


def open_matrix(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a 2-D float `.npy` (copy-on-write: nothing is read until used, nothing written back)."""
    try:
        array = np.load(path, mmap_mode="c", allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{path} is not a readable .npy matrix: {err}") from None
    return _check_matrix(array, path)


def open_safetensors_matrix(path: str | os.PathLike, name: str = "embeddings") -> np.ndarray:
    """Memory-map tensor `name` of a safetensors file (its header gives dtype, shape and byte offsets)."""
    path = Path(path)
    with path.open("rb") as handle:
        (header_size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(header_size))
    if name not in header:
        raise ValueError(f"{path} holds no tensor {name!r} (has: {', '.join(k for k in header if k != '__metadata__')})")
    info = header[name]
    dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
    if dtype is None:
        raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']} (use float32 or float16)")
    start, _ = info["data_offsets"]
    array = np.memmap(path, dtype=dtype, mode="c", offset=8 + header_size + start, shape=tuple(info["shape"]))
    return _check_matrix(array, path)


def _check_matrix(array: np.ndarray, path: Any) -> np.ndarray:
    if array.ndim != 2:
        raise ValueError(f"{path} has shape {array.shape}; an embedding matrix must be 2-D")
    if array.dtype.kind != "f" or not array.dtype.isnative:
        raise ValueError(f"{path} has dtype {array.dtype}; expected float32 or float16 embeddings")
    return array


def read_entries(path: str | os.PathLike) -> list:
    """The released names file: a JSON list of `[[kingdom, ..., species_epithet], common_name]` (UTF-8)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a valid JSON names file: {err}") from None


def is_release_names_file(path: str | os.PathLike) -> bool:
    """Whether `path` looks like a released `txt_emb_*.json` (a JSON list whose first entry is [[...], "..."])."""
    path = Path(path)
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    with path.open("rb") as handle:
        head = b"".join(handle.read(4096).split())  # whitespace-free start, whatever the indentation
    return head.startswith(b"[[[")


def write_release_files(npy_path: Path, matrix_dn: np.ndarray, entries: list) -> tuple[Path, Path]:
    """Write `npy_path` (float32 `[D, N]`) and the `.json` names beside it, atomically, as the releases are laid out."""
    from bioclip_hf.utils.io import atomic_directory

    json_path = npy_path.with_suffix(".json")
    with atomic_directory(npy_path.parent) as scratch:
        np.save(scratch / npy_path.name, np.ascontiguousarray(matrix_dn, dtype=np.float32))
        (scratch / json_path.name).write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    return npy_path, json_path


def find_release_files(folder: Path) -> tuple[Path, Path] | None:
    """`txt_emb_species.{npy,json}` (or a single model-named `txt_emb_*.npy`) in `folder` or `folder/embeddings`."""
    for base in (folder, folder / "embeddings"):
        if (base / "txt_emb_species.npy").is_file():
            return base / "txt_emb_species.npy", base / "txt_emb_species.json"
        named = sorted(base.glob("txt_emb_*.npy")) if base.is_dir() else []
        if len(named) == 1:
            return named[0], named[0].with_suffix(".json")
        if len(named) > 1:
            raise ValueError(f"{base} holds several indexes ({', '.join(p.name for p in named)}); pass the .npy file")
    return None


def parse_subset(value: str | None) -> str | list[str] | None:
    """A subset as written on a command line: an existing table's path (kept), or comma-separated clade names
    ("Aves,Mammalia" -> ["Aves", "Mammalia"]); a missing .csv/.tsv/.parquet is a FileNotFoundError, not a name.

    Example:
        >>> parse_subset("Aves, Mammalia")
        ['Aves', 'Mammalia']
    """
    if value is None:
        return None
    if Path(value).is_file():
        return value
    if value.lower().endswith((".csv", ".tsv", ".parquet")):
        raise FileNotFoundError(f"subset file not found: {value}")
    return [name.strip() for name in value.split(",") if name.strip()]


def read_subset_table(table: str | os.PathLike) -> tuple[dict[tuple[str, ...], set[tuple[str, ...]]], list[str]]:
    """Rows of a subset table grouped by which rank columns they fill: {ranks: {values}}, plus bare names.

    Values are lower-cased; an epithet column beside a genus column becomes the binomial.
    """
    import pandas as pd

    table = Path(table)
    if not table.exists():
        raise FileNotFoundError(f"subset table not found: {table}")
    if table.suffix == ".parquet":
        frame = pd.read_parquet(table).astype(str)
    else:
        frame = pd.read_csv(table, sep="\t" if table.suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
    frame.columns = [str(column).strip().lower() for column in frame.columns]
    if "scientific_name" in frame.columns and "species" not in frame.columns:
        frame = frame.rename(columns={"scientific_name": "species"})
    rank_columns = [rank for rank in RANKS if rank in frame.columns]
    if not rank_columns:
        # Header-less list or a single "name" column: every cell is a clade name; the header may be a name too.
        header = [] if len(frame.columns) != 1 or frame.columns[0] in ("name", "names", "taxon", "label") else [frame.columns[0]]
        return {}, header + [str(v) for v in frame.iloc[:, 0].tolist()]
    patterns: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
    for row in frame[rank_columns].to_dict("records"):
        cells = {rank: str(row[rank]).strip() for rank in rank_columns if str(row[rank]).strip() not in ("", "nan")}
        if "species" in cells and " " not in cells["species"] and cells.get("genus"):
            cells["species"] = f"{cells['genus']} {cells['species']}"  # epithet column + genus column
        if cells:
            ranks = tuple(rank for rank in RANKS if rank in cells)
            patterns.setdefault(ranks, set()).add(tuple(cells[rank].lower() for rank in ranks))
    if not patterns:
        raise ValueError(f"subset table {table} has no non-empty rank values")
    return patterns, []
