"""Access to the reference implementation (open_clip) for parity tests and benchmarks."""

from __future__ import annotations

import importlib
from types import ModuleType


def import_open_clip() -> ModuleType:
    """Import `open_clip` (the `dev` extra), with a clear error when it is not installed."""
    try:
        return importlib.import_module("open_clip")
    except ImportError as err:
        raise ImportError(
            f"open_clip is needed for parity checks and benchmarks: pip install 'bioclip-hf[dev]' ({err})"
        ) from None
