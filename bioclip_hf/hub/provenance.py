"""Run logs: what produced a set of predictions, so they can be reproduced (pybioclip #113, #160).

A log names the model (id, requested revision, resolved commit), the Tree-of-Life index (repo, revision, commit,
files or local path), the preprocessing (the image processor's saved config), the prediction settings, package
versions, the device and how many images were predicted or skipped.

Example:
    >>> log = run_log(classifier, settings={"rank": "species"}, images_total=3)  # doctest: +SKIP
    >>> write_run_log("run.json", log)  # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

LOG_FORMAT = "bioclip-hf-run-log/1"
PACKAGES = ("bioclip-hf", "torch", "transformers", "huggingface_hub", "safetensors", "numpy", "pillow", "open_clip_torch")


def now() -> str:
    """Local time, ISO 8601 to the second (with UTC offset)."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def package_versions(packages: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of the packages that shape results (None when not installed), plus Python's."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    if versions.get("bioclip-hf") is None:  # running from a source checkout
        from bioclip_hf import __version__

        versions["bioclip-hf"] = __version__
    return versions


def run_log(
    classifier: Any, settings: Mapping[str, Any], images_total: int, skipped: Sequence[Mapping[str, str]] = (),
    start: str | None = None, output: str | None = None, records: int | None = None,
) -> dict[str, Any]:
    """The provenance of one prediction run as a JSON-ready dict.

    Args:
        classifier: the classifier that predicted (its `provenance()` gives model, index, preprocessing, device).
        settings: the prediction options (mode, rank, k, min_prob, labels, subset ...).
        images_total: images asked for (found files + missing paths).
        skipped: one {file, error} per image that could not be read.
        start: when the run started (default: now).
        output: where the predictions were written (None: stdout).
        records: how many prediction rows were written.
    """
    return {
        "format": LOG_FORMAT,
        "start": start or now(),
        "end": now(),
        "command_line": " ".join(sys.argv),
        "working_directory": os.getcwd(),
        **classifier.provenance(),
        "settings": dict(settings),
        "images": {"total": images_total, "predicted": images_total - len(skipped), "skipped": len(skipped)},
        "skipped": [dict(error) for error in skipped],
        "output": str(Path(output).resolve()) if output and output != "-" else "stdout",
        "records": records,
        "packages": package_versions(),
        "platform": platform.platform(),
    }


def write_run_log(path: str | os.PathLike, log: Mapping[str, Any]) -> Path:
    """Write `log` as JSON to `path` (atomically); an existing file is never overwritten (it records another run)."""
    from bioclip_hf.utils.io import atomic_write_bytes

    path = Path(path)
    check_run_log_path(path)
    atomic_write_bytes(path, (json.dumps(log, indent=2, ensure_ascii=False, default=str) + "\n").encode("utf-8"))
    return path


def check_run_log_path(path: str | os.PathLike) -> None:
    """Fail before any work when the log could not be written later (wrong suffix, file exists)."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise ValueError(f"the run log must be a .json file, got {path.name}")
    if path.exists():
        raise FileExistsError(f"run log {path} already exists; choose another name (a log describes one run)")
