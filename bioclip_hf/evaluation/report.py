"""Results JSON and markdown table of a harness run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def results_table(results: dict[str, Any]) -> str:
    """Markdown table (the one the model card shows): zero-shot top-1 per text type, few-shot top-1 mean ± std.

    Example:
        >>> print(results_table(json.load(open("eval_results.json"))))  # doctest: +SKIP
    """
    from bioclip_hf.hub.cards import eval_table

    return f"Model: `{results.get('model', '')}`. " + eval_table(results)


def write_results(results: dict[str, Any], output: str | Path) -> Path:
    """Write the results JSON to `output` and the markdown table to `output` with suffix .md; returns the JSON path."""
    from bioclip_hf.utils.io import atomic_write_bytes

    output = Path(output)
    atomic_write_bytes(output, (json.dumps(results, indent=2) + "\n").encode())
    atomic_write_bytes(output.with_suffix(".md"), results_table(results).encode())
    return output
