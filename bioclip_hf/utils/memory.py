"""Giving freed memory back to the operating system (Arrow's pool, glibc's heap) in long-running processes.

Example:
    >>> release_freed_memory()  # doctest: +SKIP  (after a large build whose buffers are no longer needed)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Iterable
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


MADV_DONTNEED = 4  # linux/mman.h


def release_clean_file_pages(tensors: Iterable[Any]) -> int:
    """Drop this process's resident pages of the memory-mapped files that `tensors` view, where the mapping holds no
    modified page; returns the bytes released.

    Weights loaded from safetensors are memory-mapped: reading them (e.g. to cast Linear weights to bf16) makes
    their file pages resident, and they stay counted in RSS while any tensor still views the mapping. For a private
    mapping none of whose pages was written (no copy-on-write page: `Anonymous: 0 kB` in /proc/self/smaps)
    `madvise(DONTNEED)` is lossless: the pages stay in the page cache and a later read maps them again. Mappings
    with written pages are left alone (DONTNEED would revert them to the file's content). Linux only; else a no-op.

    Args:
        tensors: CPU tensors (e.g. a model's parameters and buffers); their mappings are the ones released.

    Example:
        >>> release_clean_file_pages(model.parameters())  # doctest: +SKIP
        1288490188
    """
    libc = glibc()
    addresses = sorted({t.data_ptr() for t in tensors if t.device.type == "cpu" and t.numel()})
    if libc is None or not addresses:
        return 0
    released = 0
    for start, end, rss in _clean_file_mappings():
        if any(start <= address < end for address in addresses):
            if libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_DONTNEED) == 0:
                released += rss
    return released


def _clean_file_mappings() -> list[tuple[int, int, int]]:
    """(start, end, resident bytes) of this process's private file mappings without copy-on-write pages."""
    try:
        with open("/proc/self/smaps") as smaps:
            lines = smaps.read().splitlines()
    except OSError:
        return []
    found: list[tuple[int, int, int]] = []
    current, fields = None, {}
    for line in [*lines, "0-0 ---p 0 0:0 0"]:
        head = line.split(None, 5)
        if len(head) >= 5 and "-" in head[0] and ":" in head[3]:  # a mapping's header line
            if current is not None and fields.get("Anonymous", 1) == 0:  # no copy-on-write page: never written
                found.append((*current, fields.get("Rss", 0) * 1024))
            start, end = (int(value, 16) for value in head[0].split("-"))
            is_file = head[4] != "0" and len(head) > 5 and head[5].startswith("/")
            current = (start, end) if is_file and head[1].endswith("p") else None
            fields = {}
        elif current is not None and line.endswith(" kB"):
            name, _, value = line.partition(":")
            fields[name] = int(value.split()[0])
    return found
