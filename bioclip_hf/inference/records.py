"""Writing prediction records as CSV, JSON or an aligned table (shared by the predict-style commands).

Standard library only: command modules must import fast (`bioclip-hf --help` < 1 s).
"""

from __future__ import annotations

import csv
import io
import json
import sys
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

FORMATS = ("csv", "json", "table")


def _columns(records: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for record in records for key in record))


def _cell(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else ("" if value is None else str(value))


def format_records(records: Sequence[Mapping[str, Any]], fmt: str = "csv", columns: Sequence[str] = ()) -> str:
    """Render records (dicts) as CSV (header + rows), a JSON list, or a plain aligned table.

    `columns` gives the header when there are no records (e.g. every image was unreadable).

    Example:
        >>> print(format_records([{"file": "a.jpg", "score": 0.5}], "csv").strip())
        file,score
        a.jpg,0.5
    """
    if fmt == "json":
        return json.dumps(list(records), indent=2, ensure_ascii=False) + "\n"
    columns = _columns(records) or list(columns)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        return buffer.getvalue()
    if fmt == "table":
        rows = [columns] + [[_cell(record.get(column)) for column in columns] for record in records]
        widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
        return "".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n" for row in rows)
    raise ValueError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")


def write_records(
    records: Sequence[Mapping[str, Any]], fmt: str = "csv", output: str | None = None, columns: Sequence[str] = ()
) -> None:
    """Write `format_records(records, fmt, columns)` to `output` (a file path) or stdout."""
    text = format_records(records, fmt, columns)
    if output and output != "-":
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


def stream_records(
    batches: Iterable[Sequence[Mapping[str, Any]]], fmt: str = "csv", output: str | None = None, columns: Sequence[str] = ()
) -> int:
    """Write batches of records as they arrive: CSV rows and JSON list items are flushed per batch (memory stays
    flat and a long run's finished rows survive an interruption); a table needs every row for its column widths,
    so it is written at the end. Returns the number of records."""
    if fmt not in ("csv", "json"):
        records = [record for batch in batches for record in batch]
        write_records(records, fmt, output, columns)
        return len(records)
    if output and output != "-":
        Path(output).parent.mkdir(parents=True, exist_ok=True)
    handle = open(output, "w", newline="", encoding="utf-8") if output and output != "-" else sys.stdout
    count = 0
    try:
        writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
        if fmt == "csv":
            writer.writeheader()
        for batch in batches:
            if fmt == "csv":
                writer.writerows(batch)
            for record in batch if fmt == "json" else ():  # the bytes of format_records(records, "json")
                item = textwrap.indent(json.dumps(record, indent=2, ensure_ascii=False), "  ")
                handle.write(("[\n" if count == 0 else ",\n") + item)
                count += 1
            count += len(batch) if fmt == "csv" else 0
            handle.flush()
        if fmt == "json":
            handle.write("\n]\n" if count else "[]\n")
    finally:
        if handle is not sys.stdout:
            handle.close()
    return count
