"""Giving freed memory back to the operating system (Arrow's pool, glibc's heap) in long-running processes.

Example:
    >>> release_freed_memory()  # doctest: +SKIP  (after a large build whose buffers are no longer needed)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


@functools.lru_cache(maxsize=1)
def glibc() -> Any:
    """The C library through ctypes when it is glibc (has `malloc_trim` and `mallopt`), else None (macOS, musl:
    their allocators need none of this)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def release_freed_memory() -> None:
    """Hand the buffers freed so far back to the OS: Arrow's default pool, then glibc's heap."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)


def return_large_blocks(threshold: int = 64 * 1024) -> None:
    """Make glibc serve blocks of `threshold` bytes or more with mmap and trim its heap above `threshold`, so
    large freed buffers go back to the OS instead of fragmenting the heap (glibc's adaptive thresholds drift up to
    32 MB). For our own worker processes: it changes the allocator of the whole process."""
    libc = glibc()
    if libc is not None:
        for option in (M_TRIM_THRESHOLD, M_MMAP_THRESHOLD):
            libc.mallopt(option, threshold)
