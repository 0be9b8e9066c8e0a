"""Scoring a Tree-of-Life index where it lies: chunked matrix products on a memory-mapped matrix whose file pages
are released after each chunk, so that scoring 867k taxa adds one chunk, not the 2.7 GB matrix, to the process's
resident memory.

File-backed pages of a mapping count in a process's RSS once touched and stay there until the kernel needs the
memory. `madvise(MADV_DONTNEED)` unmaps them from this process only: they stay in the OS page cache, so the next
chunk (or the next batch) maps them again with minor faults and no disk read. (`posix_fadvise(DONTNEED)` would
evict them from the page cache instead, making every batch re-read the file: not what is wanted here.)

The matrix is either the released float32 file (`[D, N]`, scored exactly) or the cached float16 copy (`[N, D]`,
`treeoflife.half_cache`), widened to float32 a chunk at a time: products and sums stay float32, the only change
is float16's rounding of the stored unit vectors (relative 2^-11 per component).
"""

from __future__ import annotations

import logging
import mmap
from typing import Any

import torch

logger = logging.getLogger(__name__)

CHUNK = 16384  # taxa per block: 48 MB of float32 at 768-d, 24 MB (+ 48 MB widened) of a float16 copy

__all__ = ["CHUNK", "gather_columns", "mapped_buffer", "release_pages", "score_chunks"]


def mapped_buffer(array: Any) -> mmap.mmap | None:
    """The `mmap` object behind a numpy memmap (or an array viewing one), None for arrays in memory.

    Example:
        >>> import numpy as np
        >>> mapped_buffer(np.zeros(3)) is None
        True
    """
    seen = 0
    while array is not None and seen < 8:  # views of views: .base chains are short
        buffer = getattr(array, "_mmap", None)
        if isinstance(buffer, mmap.mmap):
            return buffer
        array, seen = getattr(array, "base", None), seen + 1
    return None


def release_pages(buffer: mmap.mmap | None) -> None:
    """Drop this process's resident pages of a read-only file mapping (they stay in the page cache).

    Only for mappings never written to: a copy-on-write page that was modified would be reset to the file's
    content (the index's mappings are read-only in practice).

    Example:
        >>> release_pages(mapped_buffer(np.load("txt_emb_species.npy", mmap_mode="c")))  # doctest: +SKIP
    """
    if buffer is None or not hasattr(buffer, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return  # not mapped, or a platform without madvise (the pages then stay until memory is needed)
    try:
        buffer.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError) as err:  # a closed mapping, an exotic filesystem: keep scoring, just not lean
        logger.debug("madvise(MADV_DONTNEED) failed: %s", err)


def score_chunks(scaled: torch.Tensor, matrix: torch.Tensor, taxa_axis: int, buffer: mmap.mmap | None = None,
                 chunk: int | None = None) -> torch.Tensor:  # fmt: skip
    """`[B, D]` float32 (scaled) features times every taxon's embedding: `[B, N]` float32 logits.

    Blocks are contiguous rows of `matrix`, so each one maps a compact byte range: an `[N, D]` matrix is read a block
    of taxa at a time; a `[D, N]` one (the released layout) a block of dimensions at a time, the partial products
    accumulated in float32. (Strided blocks would not do: the kernel maps a file's large folios whole, so a block of
    columns of `[D, N]` would make most of the file resident at once.)

    Args:
        scaled: `logit_scale * image_features`, float32.
        matrix: the embeddings, `[N, D]` (`taxa_axis=0`) or `[D, N]` (`taxa_axis=1`), row-major, float32 or float16;
            it may view a memory-mapped file.
        taxa_axis: which axis of `matrix` runs over taxa.
        buffer: the mapping behind `matrix` (`mapped_buffer`): its pages are released after every block.
        chunk: taxa per block (default `CHUNK`); a `[D, N]` matrix is read in blocks of as many bytes.

    Example:
        >>> score_chunks(torch.ones(1, 2), torch.eye(2), taxa_axis=0)
        tensor([[1., 1.]])
    """
    chunk = chunk or CHUNK
    if taxa_axis == 0:
        logits = scaled.new_empty(scaled.shape[0], matrix.shape[0])
        for start in range(0, matrix.shape[0], chunk):
            logits[:, start : start + chunk] = scaled @ _widened(matrix[start : start + chunk]).T
            release_pages(buffer)
        return logits
    dim, count = matrix.shape
    rows = max(1, chunk * dim // max(1, count))
    logits = scaled[:, :rows] @ _widened(matrix[:rows])
    release_pages(buffer)
    for start in range(rows, dim, rows):
        logits.addmm_(scaled[:, start : start + rows], _widened(matrix[start : start + rows]))
        release_pages(buffer)
    return logits


def _widened(block: torch.Tensor) -> torch.Tensor:
    """float32 values of a block (exact for float16; products and sums are then float32)."""
    return block if block.dtype == torch.float32 else block.float()


def gather_columns(matrix: torch.Tensor, positions: torch.Tensor, buffer: mmap.mmap | None = None) -> torch.Tensor:
    """`matrix[:, positions]` of a `[D, N]` matrix as a new `[D, len(positions)]` tensor, read a block of rows at a
    time with the mapping's pages released after each (a subset's gather touches most of the file otherwise).

    Example:
        >>> gather_columns(torch.arange(6.0).view(2, 3), torch.tensor([2, 0]))
        tensor([[2., 0.],
                [5., 3.]])
    """
    out = matrix.new_empty(matrix.shape[0], len(positions))
    rows = max(1, CHUNK * matrix.shape[0] // max(1, matrix.shape[1]))
    for start in range(0, matrix.shape[0], rows):
        torch.index_select(matrix[start : start + rows], 1, positions, out=out[start : start + rows])
        release_pages(buffer)
    return out
