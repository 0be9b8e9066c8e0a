"""A cache of what loading a Tree-of-Life index derives from its files (columnar taxa, clade ids per rank, problem
flags), written next to the downloaded files so the next load reads a memory-mapped Arrow file instead of parsing
~65 MB of JSON and scanning a 2.7 GB matrix. (`data.catalog_cache` caches TreeOfLife catalog lookups the same way.)

The cache is keyed on the source files (resolved path, size, modification time): replacing a file (a new Hub
revision, a rebuilt index) invalidates it. Where the index folder is read-only (a shared HPC cache) it goes to
`$BIOCLIP_HF_CACHE` (default `~/.cache/bioclip_hf`) instead; where neither is writable, loading works uncached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bioclip_hf.treeoflife.taxa import FIELDS, TaxaColumns, column_maxabs, find_problems
from bioclip_hf.treeoflife.taxonomy import RANKS
from bioclip_hf.utils.io import cache_root

logger = logging.getLogger(__name__)

CACHE_FORMAT = "bioclip-hf-taxa-cache/1"
CACHE_SUFFIX = ".bioclip-hf-cache.arrow"
_PROBLEMS = "problem"


def source_signature(*files: str | os.PathLike) -> list[dict[str, Any]]:
    """Identity of the source files: resolved path (an HF cache blob name is the content hash), size, mtime."""
    out = []
    for file in files:
        real = Path(file).resolve()
        stat = real.stat()
        out.append({"path": str(real), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return out


def cache_locations(names_file: str | os.PathLike, suffix: str = CACHE_SUFFIX, folder: str = "tol-index") -> list[Path]:
    """Where the cache derived from `names_file` is looked for and written, in order: beside it
    (`<stem><suffix>`), then `$BIOCLIP_HF_CACHE/<folder>/` (for read-only folders) under a digest of its path.

    Example:
        >>> cache_locations("/data/txt_emb_species.json")[0].name
        'txt_emb_species.bioclip-hf-cache.arrow'
    """
    names_file = Path(names_file)
    beside = names_file.with_name(names_file.stem + suffix)
    digest = hashlib.sha256(str(names_file.resolve()).encode()).hexdigest()[:20]
    return [beside, cache_root() / folder / f"{digest}{suffix}"]


def read_cache(names_file: str | os.PathLike, signature: list[dict[str, Any]]) -> tuple[TaxaColumns, np.ndarray] | None:
    """(taxa with their lineage ids, problem codes) from a valid cache, or None (missing, stale or unreadable)."""
    for path in cache_locations(names_file):
        if not path.is_file():
            continue
        try:
            table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()  # zero-copy: buffers map the file
            meta = json.loads((table.schema.metadata or {}).get(b"bioclip_hf", b"{}"))
            if meta.get("format") != CACHE_FORMAT or meta.get("sources") != signature:
                logger.info("taxa cache %s is stale; rebuilding", path)
                continue
            lineage = {depth: table.column(f"lineage:{depth}").chunk(0).to_numpy() for depth in range(len(RANKS) + 1)}
            columns = TaxaColumns.from_arrow(table.select(list(FIELDS)))
            columns._lineage.update(lineage)
            return columns, table.column(_PROBLEMS).chunk(0).to_numpy()
        except (OSError, ValueError, KeyError, pa.ArrowException) as err:
            logger.warning("ignoring unreadable taxa cache %s: %s", path, err)
    return None


def write_cache(names_file: str | os.PathLike, signature: list[dict[str, Any]], columns: TaxaColumns,
                problems: np.ndarray) -> Path | None:  # fmt: skip
    """Write the cache (atomically) at the first writable location; returns its path or None."""
    from bioclip_hf.utils.io import atomic_write_bytes

    table = columns.to_arrow(dictionary=True)
    for depth in range(len(RANKS) + 1):
        table = table.append_column(f"lineage:{depth}", pa.array(columns.lineage_ids(depth), pa.int32()))
    table = table.append_column(_PROBLEMS, pa.array(problems, pa.int8()))
    table = table.replace_schema_metadata({"bioclip_hf": json.dumps({"format": CACHE_FORMAT, "sources": signature})})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(1, len(columns)))  # one batch: one dictionary per column
    data = sink.getvalue().to_pybytes()
    for path in cache_locations(names_file):
        try:
            atomic_write_bytes(path, data)
            logger.info("wrote taxa cache %s", path)
            return path
        except OSError as err:
            logger.info("cannot write taxa cache %s: %s", path, err)
    return None


def derived_taxa(matrix_file: Any, taxa_file: Any, matrix: np.ndarray, taxa_axis: int,
                 read_taxa: Callable[[], TaxaColumns], cache: bool) -> tuple[TaxaColumns, np.ndarray]:  # fmt: skip
    """(taxa columns, problem codes) of an index from the cache, or read with `read_taxa` and the matrix scanned
    (`column_maxabs` along `taxa_axis`) on a first load, then cached."""
    signature = source_signature(matrix_file, taxa_file)
    cached = read_cache(taxa_file, signature) if cache else None
    if cached is not None:
        columns, problems = cached
    else:
        columns = read_taxa()
        _check_count(matrix_file, taxa_file, matrix, taxa_axis, len(columns))
        problems = find_problems(column_maxabs(matrix, taxa_axis), columns)
        for depth in range(len(RANKS) + 1):
            columns.lineage_ids(depth)  # computed now so the cache holds them
        if cache:
            write_cache(taxa_file, signature, columns, problems)
    _check_count(matrix_file, taxa_file, matrix, taxa_axis, len(columns))
    return columns, problems


def _check_count(matrix_file: Any, taxa_file: Any, matrix: np.ndarray, taxa_axis: int, count: int) -> None:
    if matrix.shape[taxa_axis] != count:
        expected = f"[dim, {count}]" if taxa_axis == 1 else f"[{count}, dim]"
        raise ValueError(f"{matrix_file} has shape {tuple(matrix.shape)}; expected {expected} to match {taxa_file}")
