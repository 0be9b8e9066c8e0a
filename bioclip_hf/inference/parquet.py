"""Parquet parts of a batch run, and what they become: one Parquet/.npy file, or a Parquet dataset folder.

A run writes one part per block of inputs, `part-000042.parquet`, each atomically (temporary file + rename), so a
part on disk is always complete. Each part's schema metadata is its manifest entry: the block index, how many
inputs it covered and which of them were unreadable. A part's existence is what a resumed run skips.

Folder outputs keep the parts as they are (pandas' `read_parquet(folder)` and `datasets.load_dataset(folder)` read
them directly); run bookkeeping goes to `__bioclip_hf__/` inside it, which both libraries ignore.

Example:
    >>> write_part("out.parts", 3, table, {"images": 1024, "errors": []})  # doctest: +SKIP
    >>> merge_parquet("out.parts", "predictions.parquet")  # doctest: +SKIP
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bioclip_hf.utils.io import atomic_write_bytes

logger = logging.getLogger(__name__)

PART_RE = re.compile(r"^part-(\d+)\.parquet$")
RUN_DIR = "__bioclip_hf__"  # bookkeeping inside a parts folder: pyarrow skips "_" names, datasets "__" folders
META_KEY = b"bioclip_hf"  # run metadata (model, revision, ...) in every file's schema metadata
PART_KEY = b"bioclip_hf.part"  # the part's own manifest entry


def part_name(block: int) -> str:
    return f"part-{block:06d}.parquet"


def write_part(folder: str | os.PathLike, block: int, table: pa.Table, info: Mapping[str, Any],
               metadata: Mapping[str, Any] | None = None) -> Path:  # fmt: skip
    """Atomically write `table` as the part of `block`, with `info` (its manifest entry) and the run `metadata`."""
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[PART_KEY] = json.dumps({"block": block, **info}, default=str).encode()
    if metadata is not None:
        schema_meta[META_KEY] = json.dumps(dict(metadata), default=str).encode()
    buffer = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(schema_meta), buffer)
    path = Path(folder) / part_name(block)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def list_parts(folder: str | os.PathLike) -> dict[int, Path]:
    """{block: path} of the complete parts in `folder` (temporary files of unfinished writes are hidden)."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    found = {}
    for path in folder.iterdir():
        match = PART_RE.match(path.name)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def part_info(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest entry stored in a part (block, images, errors, ...), read from the footer only."""
    metadata = pq.read_schema(path).metadata or {}
    if PART_KEY not in metadata:
        raise ValueError(f"{path} is not a bioclip-hf part (no {PART_KEY.decode()} metadata)")
    return json.loads(metadata[PART_KEY])


def check_complete(parts: Mapping[int, Path], num_blocks: int | None) -> None:
    """Every block must have its part: blocks 0..num_blocks-1 (or 0..max when the count was unknown)."""
    expected = num_blocks if num_blocks is not None else (max(parts) + 1 if parts else 0)
    missing = [block for block in range(expected) if block not in parts]
    if missing:
        raise RuntimeError(f"{len(missing)} of {expected} parts are missing (first: {part_name(missing[0])}); "
                           "rerun the same command to finish them")  # fmt: skip


def unified_schema(paths: Sequence[Path]) -> pa.Schema | None:
    """One schema for all non-empty parts (columns in first-seen order; null-typed columns take the others' type)."""
    schemas = [pq.read_schema(path) for path in paths if pq.ParquetFile(path).metadata.num_rows]
    if not schemas:
        return None
    schema = pa.unify_schemas([s.remove_metadata() for s in schemas], promote_options="permissive")
    return schema


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly `schema`'s columns, in order and types (missing columns become nulls)."""
    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
               for f in schema]  # fmt: skip
    return pa.Table.from_arrays(columns, schema=schema)


def iter_tables(parts: Mapping[int, Path], schema: pa.Schema | None = None) -> Iterator[pa.Table]:
    """The non-empty parts as tables, in block order (conformed to `schema` when given)."""
    for path in parts.values():
        table = pq.read_table(path)
        if table.num_rows:
            yield conform(table, schema) if schema is not None else table


def iter_records(parts: Mapping[int, Path]) -> Iterator[list[dict[str, Any]]]:
    """The parts' rows as lists of dicts (one list per part), in block order: records for CSV/JSON writers."""
    paths = list(parts.values())
    schema = unified_schema(paths)
    if schema is None:
        return
    for table in iter_tables(parts, schema):
        yield table.to_pylist()


def part_totals(parts: Mapping[int, Path]) -> tuple[list[dict[str, Any]], int]:
    """(the unreadable inputs recorded in the parts, in input order; the inputs they covered), one footer read each."""
    errors: list[dict[str, Any]] = []
    images = 0
    for path in parts.values():
        info = part_info(path)
        errors += info.get("errors", [])
        images += int(info.get("images", 0))
    return errors, images


def merge_parquet(parts: Mapping[int, Path], output: str | os.PathLike, metadata: Mapping[str, Any] | None = None,
                  row_group_size: int = 64 * 1024) -> int:  # fmt: skip
    """Concatenate the parts (block order) into one Parquet file, part by part (memory: one part); returns rows.

    The file is written next to `output` and renamed into place, so `output` is never half-written.
    """
    from bioclip_hf.utils.io import atomic_path

    paths = list(parts.values())
    schema = unified_schema(paths) or pa.schema([])
    if metadata is not None:
        schema = schema.with_metadata({META_KEY: json.dumps(dict(metadata), default=str).encode()})
    rows = 0
    with atomic_path(output) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for table in iter_tables(parts, schema.remove_metadata()):
            writer.write_table(table.replace_schema_metadata(schema.metadata), row_group_size=row_group_size)
            rows += table.num_rows
    return rows


def merge_npy(parts: Mapping[int, Path], output: str | os.PathLike, column: str = "embedding",
              key_column: str = "file") -> int:  # fmt: skip
    """Embedding parts -> `[N, D]` float32 .npy (written through a memory map) + `<stem>.files.txt` of the keys."""
    import numpy as np

    from bioclip_hf.utils.io import atomic_path

    output = Path(output)
    total = sum(pq.ParquetFile(path).metadata.num_rows for path in parts.values())
    tables = iter_tables(parts)
    first = next(tables, None)
    dim = first.schema.field(column).type.list_size if first is not None else 0
    with atomic_path(output) as tmp, atomic_path(output.with_suffix(".files.txt")) as keys_tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(total, dim))
        row = 0
        with open(keys_tmp, "w", encoding="utf-8") as keys:
            for table in itertools.chain([first] if first is not None else [], tables):
                values = table.column(column).combine_chunks().flatten().to_numpy(zero_copy_only=False)
                array[row : row + table.num_rows] = values.reshape(table.num_rows, dim)
                keys.writelines(f"{key}\n" for key in table.column(key_column).to_pylist())
                row += table.num_rows
        array.flush()
        del array
    return total


def embeddings_table(keys: Sequence[Any], key_column: str, features: Any, dtype: str = "float32") -> pa.Table:
    """(key, fixed-size-list embedding) rows; `dtype` "float32" or "float16" (half the size, ~3 significant digits)."""
    import numpy as np

    array = np.ascontiguousarray(np.asarray(features, dtype=np.dtype(dtype)))
    values = pa.array(array.reshape(-1))
    return pa.table({key_column: list(keys), "embedding": pa.FixedSizeListArray.from_arrays(values, array.shape[1])})


def errors_csv(errors: Sequence[Mapping[str, Any]], key_column: str = "file") -> bytes:
    """CSV bytes (`key_column`, error) listing unreadable inputs ({"key", "error"} dicts)."""
    import csv

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([key_column, "error"])
    writer.writerows([error["key"], error["error"]] for error in errors)
    return buffer.getvalue().encode("utf-8")


def write_errors(path: str | os.PathLike, errors: Sequence[Mapping[str, Any]], key_column: str = "file") -> Path | None:
    """Write `errors_csv` to `path` (atomically); removes a stale file when there are no errors."""
    path = Path(path)
    if not errors:
        path.unlink(missing_ok=True)
        return None
    atomic_write_bytes(path, errors_csv(errors, key_column))
    return path


def write_manifest(folder: str | os.PathLike, parts: Mapping[int, Path], run: Mapping[str, Any]) -> int:
    """`__bioclip_hf__/manifest.json` of a finished folder output: the run and every part with its counts.
    Returns the number of rows."""
    entries = []
    for block, path in parts.items():
        info = part_info(path)
        entries.append({"file": path.name, "block": block, "rows": pq.ParquetFile(path).metadata.num_rows,
                        "images": info.get("images"), "errors": len(info.get("errors", []))})  # fmt: skip
    manifest = {**run, "parts": entries, "rows": sum(e["rows"] for e in entries),
                "images": sum(e["images"] or 0 for e in entries), "errors": sum(e["errors"] for e in entries)}  # fmt: skip
    atomic_write_bytes(Path(folder) / RUN_DIR / "manifest.json", json.dumps(manifest, indent=2, default=str).encode())
    return manifest["rows"]
