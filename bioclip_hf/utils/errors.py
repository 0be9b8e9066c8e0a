"""Errors meant for the person running a command: the CLI prints them as one line (exit status 2)."""

from __future__ import annotations


class UsageError(ValueError):
    """Inputs or options that cannot work together (an option missing, contradicting another, out of range).

    A `ValueError`, so Python callers catch it as one; `bioclip-hf` prints its message alone.
    """


__all__ = ["UsageError"]
