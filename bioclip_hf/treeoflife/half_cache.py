"""A float16 copy of a released index's float32 matrix, cached on disk and memory-mapped: half the bytes to
stream per batch and half the page cache (1.33 GB instead of 2.66 GB for TreeOfLife-200M's 867k taxa).

The copy is a safetensors file holding `embeddings` `[N, D]` float16 (rows = taxa, so a chunk of taxa is one
contiguous byte range), written next to the source (`<stem>.bioclip-hf-f16.safetensors`) or, where that folder is
read-only, under `$BIOCLIP_HF_CACHE/tol-index/` (see `cache.cache_locations`). Its metadata records the source's
signature (`cache.source_signature`: resolved path, which in the HF cache is the blob's content hash, size and
modification time): a new revision or a rebuilt file makes it stale, and it is rewritten. It is written atomically
(temporary file, fsync, rename) in blocks, never whole in memory, with the source's pages released as they are read.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from bioclip_hf.treeoflife.cache import cache_locations, source_signature
from bioclip_hf.treeoflife.scoring import mapped_buffer, release_pages

logger = logging.getLogger(__name__)

HALF_FORMAT = "bioclip-hf-f16-index/1"
HALF_SUFFIX = ".bioclip-hf-f16.safetensors"
_BLOCK = 16384  # taxa converted per block (48 MB of float32 source at 768-d)

__all__ = ["HALF_SUFFIX", "half_matrix", "read_half", "write_half"]


def half_matrix(matrix_file: str | os.PathLike, matrix: np.ndarray, taxa_axis: int) -> np.ndarray | None:
    """The cached float16 `[N, D]` copy of `matrix` (read from `matrix_file`), memory-mapped; written on first use.

    Args:
        matrix_file: the source `.npy` / `.safetensors` (identifies the cache).
        matrix: the source matrix as opened (memory-mapped), float32 or float16.
        taxa_axis: the axis of `matrix` that runs over taxa (1 for the released `[D, N]` files).

    Returns None where no cache location is writable (the caller then scores the source itself).

    Raises:
        ValueError: the matrix holds finite values beyond float16's range (not unit vectors).

    Example:
        >>> half = half_matrix("txt_emb_species.npy", np.load("txt_emb_species.npy", mmap_mode="r"), 1)  # doctest: +SKIP
    """
    signature = source_signature(matrix_file)
    cached = read_half(matrix_file, signature, matrix.shape[taxa_axis], matrix.shape[1 - taxa_axis])
    if cached is not None:
        return cached
    path = write_half(matrix_file, signature, matrix, taxa_axis)
    return None if path is None else read_half(matrix_file, signature, matrix.shape[taxa_axis], matrix.shape[1 - taxa_axis])


def read_half(matrix_file: str | os.PathLike, signature: list[dict[str, Any]], count: int, dim: int) -> np.ndarray | None:
    """The valid cached copy for `signature` of a `[count, dim]` matrix, memory-mapped read-only, or None."""
    for path in cache_locations(matrix_file, HALF_SUFFIX):
        if not path.is_file():
            continue
        try:
            header, offset = _read_header(path)
            meta = header.get("__metadata__", {})
            info = header["embeddings"]
            if (meta.get("format") != HALF_FORMAT or json.loads(meta.get("sources", "null")) != signature
                    or info["dtype"] != "F16" or info["shape"] != [count, dim]):  # fmt: skip
                logger.info("float16 index cache %s is stale; rewriting", path)
                continue
            return np.memmap(path, np.float16, "c", offset + info["data_offsets"][0], (count, dim))
        except (OSError, ValueError, KeyError, struct.error) as err:
            logger.warning("ignoring unreadable float16 index cache %s: %s", path, err)
    return None


def write_half(matrix_file: str | os.PathLike, signature: list[dict[str, Any]], matrix: np.ndarray,
               taxa_axis: int) -> Path | None:  # fmt: skip
    """Write the float16 `[N, D]` copy at the first writable cache location (atomically); its path or None."""
    from bioclip_hf.utils.io import atomic_open

    count, dim = matrix.shape[taxa_axis], matrix.shape[1 - taxa_axis]
    meta = {"format": HALF_FORMAT, "sources": json.dumps(signature)}
    header = {"__metadata__": meta, "embeddings": {"dtype": "F16", "shape": [count, dim], "data_offsets": [0, count * dim * 2]}}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors aligns the data to 8 bytes
    buffer = mapped_buffer(matrix)
    for path in cache_locations(matrix_file, HALF_SUFFIX):
        try:
            with atomic_open(path) as out, _TaxaBlocks(matrix, taxa_axis) as blocks:
                out.write(struct.pack("<Q", len(raw)) + raw)
                for start in range(0, count, _BLOCK):
                    block = blocks.read(start, min(count, start + _BLOCK))
                    with np.errstate(over="ignore"):  # an overflow is reported just below
                        half = np.ascontiguousarray(block, dtype=np.float16)
                    if np.isinf(half).any() and (np.isinf(half) & np.isfinite(block)).any():
                        raise ValueError(f"{matrix_file} has values beyond float16's range; scoring stays float32")
                    out.write(half.tobytes())
                    release_pages(buffer)
            logger.info("wrote float16 index cache %s (%d x %d)", path, count, dim)
            return path
        except OSError as err:
            logger.info("cannot write float16 index cache %s: %s", path, err)
    return None


class _TaxaBlocks:
    """`[c, D]` blocks of taxa of a matrix. A memory-mapped `[D, N]` file is read with `readinto` row by row, not
    through its mapping: the kernel maps a file's large folios whole, so a strided block of columns would make most
    of the file resident at once."""

    def __init__(self, matrix: np.ndarray, taxa_axis: int):
        self.matrix, self.taxa_axis, self.handle = matrix, taxa_axis, None
        if taxa_axis == 1 and isinstance(matrix, np.memmap) and matrix.filename and matrix.flags.c_contiguous:
            self.handle = open(matrix.filename, "rb")  # noqa: SIM115  (closed in __exit__)

    def __enter__(self) -> _TaxaBlocks:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.handle is not None:
            self.handle.close()

    def read(self, start: int, stop: int) -> np.ndarray:
        if self.taxa_axis == 0:
            return self.matrix[start:stop]
        if self.handle is None:
            return self.matrix[:, start:stop].T
        dim, count = self.matrix.shape
        item = self.matrix.dtype.itemsize
        block = np.empty((dim, stop - start), self.matrix.dtype)
        for row in range(dim):
            self.handle.seek(self.matrix.offset + (row * count + start) * item)
            if self.handle.readinto(memoryview(block[row]).cast("B")) != block[row].nbytes:
                raise OSError(f"{self.matrix.filename} is shorter than its header says")
        return block.T


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    with path.open("rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        if size > 1 << 20:
            raise ValueError(f"header of {size} bytes")
        return json.loads(handle.read(size)), 8 + size
