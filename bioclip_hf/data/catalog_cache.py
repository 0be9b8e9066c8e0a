"""An on-disk, memory-mapped cache of a catalog's `CatalogIndex`: built once, shared by every process of a node.

Reading TreeOfLife-10M's catalog into a lookup takes ~45 s and ~0.6 GB, TreeOfLife-200M's minutes and ~11 GB, and
`accelerate launch` starts one training process per GPU. So the first process builds the lookup once and writes it
beside the catalog (`catalog.csv.bioclip-hf-lookup`), or under `$BIOCLIP_HF_CACHE/tol-catalog/` where that folder
is read-only (`treeoflife.cache.cache_locations`, as for Tree-of-Life indexes); every process then memory-maps the file:
the processes of a node share one copy in the page cache, and a warm start reads only the file's header.

- One file: a magic line, a JSON header (format, the catalog's resolved path / size / mtime and schema, split
  names, counts, array layout) and the lookup's numpy arrays, 64-byte aligned. A changed catalog, schema or
  format makes it stale; it is then rebuilt.
- Built under a file lock (`filelock`, released by the OS if its holder dies), so the other processes of a node
  wait for the first one instead of building too, with or without accelerate. The file is written atomically
  (`utils.io.atomic_open`): where the lock does not hold (some network file systems), concurrent builders each
  write a complete file and the last rename wins, so a reader never sees a partial cache.
- A rebuild replaces the file (a new inode), so lookups already mapped keep their old, complete copy. Never
  overwrite a cache in place (`cp` over it, a truncating write) while processes map it: their arrays change
  under them (or fault past the new end). Delete it instead; the next process rebuilds it.
- A cache that is not one (bad magic or header), truncated or unreadable is ignored with one warning and rebuilt.
- Where no location is writable, the lookup is built and held in memory, as `CatalogIndex.load` does.

Example:
    >>> index = open_catalog_index("metadata/catalog.csv", TOL10M_SCHEMA)  # doctest: +SKIP
    >>> index.mapped_from  # doctest: +SKIP
    PosixPath('metadata/catalog.csv.bioclip-hf-lookup')
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import mmap
import operator
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bioclip_hf.data.catalog import CatalogIndex, CatalogSchema
from bioclip_hf.treeoflife.cache import cache_locations, source_signature
from bioclip_hf.utils.memory import release_freed_memory

logger = logging.getLogger(__name__)

LOOKUP_FORMAT = "bioclip-hf-catalog-lookup/1"
LOOKUP_SUFFIX = ".bioclip-hf-lookup"
_MAGIC = b"BIOCLIP-HF-LOOKUP\n"
_ALIGN = 64  # array offsets: cache-line (and any dtype) aligned
_MAX_HEADER = 1 << 24


class PackedNames(Sequence):
    """Strings as one UTF-8 byte array plus offsets, so a vocabulary of names can live in a mapped file.

    Args:
        offsets: int64, `len(names) + 1` offsets into `data`.
        data: uint8, the names' UTF-8 bytes back to back.

    Example:
        >>> names = PackedNames.pack(["Aves", "Corvus corax"])
        >>> names[1], len(names)
        ('Corvus corax', 2)
    """

    def __init__(self, offsets: np.ndarray, data: np.ndarray) -> None:
        self.offsets, self.data = offsets, data
        # Memoryviews index to Python ints and slice to bytes without numpy scalars: ~4x faster per name.
        self._starts, self._bytes = memoryview(np.ascontiguousarray(offsets, dtype=np.int64)), memoryview(data)
        self._len = len(offsets) - 1

    @classmethod
    def pack(cls, names: Sequence[str]) -> PackedNames:
        encoded = [name.encode("utf-8") for name in names]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
        return cls(offsets, np.frombuffer(b"".join(encoded), dtype=np.uint8))

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, item: Any) -> Any:
        if type(item) is int and 0 <= item < self._len:  # the common case, first (taxon() per sample)
            return self._bytes[self._starts[item] : self._starts[item + 1]].tobytes().decode("utf-8")
        if isinstance(item, slice):
            return [self[i] for i in range(*item.indices(self._len))]
        i = operator.index(item)
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(f"name {item} of {self._len}")
        return self._bytes[self._starts[i] : self._starts[i + 1]].tobytes().decode("utf-8")

    @property
    def nbytes(self) -> int:
        return int(self.offsets.nbytes + self.data.nbytes)


def lookup_signature(catalog: str | os.PathLike, schema: CatalogSchema) -> dict[str, Any]:
    """What a cache must have been built from: the format, the catalog's identity and the schema."""
    return {"format": LOOKUP_FORMAT, "schema": dataclasses.asdict(schema), "sources": source_signature(catalog)}


def lookup_locations(catalog: str | os.PathLike) -> list[Path]:
    """Where the lookup cache of `catalog` is looked for and written, in order (beside it, then the user cache)."""
    catalog = Path(catalog)
    return cache_locations(catalog, suffix=catalog.suffix + LOOKUP_SUFFIX, folder="tol-catalog")


def _aligned(offset: int) -> int:
    return -(-offset // _ALIGN) * _ALIGN


def _arrays(index: CatalogIndex) -> dict[str, np.ndarray]:
    arrays = {"ids": index.ids, "split_masks": index.split_masks}
    for j, (codes, names) in enumerate(zip(index.codes, index.vocab)):
        arrays[f"codes/{j}"] = codes
        if names is not None:
            packed = names if isinstance(names, PackedNames) else PackedNames.pack(names)
            arrays[f"names/{j}/offsets"], arrays[f"names/{j}/data"] = packed.offsets, packed.data
    return {name: np.ascontiguousarray(array) for name, array in arrays.items()}


def write_lookup(path: str | os.PathLike, index: CatalogIndex, signature: dict[str, Any]) -> None:
    """Write `index` as a lookup cache at `path` (atomically, streamed: no second copy of the arrays in memory)."""
    from bioclip_hf.utils.io import atomic_open

    arrays = _arrays(index)
    layout, end = {}, 0
    for name, array in arrays.items():
        layout[name] = {"dtype": array.dtype.str, "shape": list(array.shape), "offset": end}
        end = _aligned(end + array.nbytes)
    header = json.dumps({"signature": signature, "num_rows": index.num_rows, "uuids": index.uuids,
                         "split_names": index.split_names, "counts": index.counts,
                         "vocab": [names is not None for names in index.vocab], "arrays": layout,
                         "data_bytes": end}).encode()  # fmt: skip
    start = _aligned(len(_MAGIC) + 8 + len(header))
    with atomic_open(path) as fh:
        fh.write(_MAGIC + len(header).to_bytes(8, "little") + header)
        for name, array in arrays.items():
            fh.write(b"\0" * (start + layout[name]["offset"] - fh.tell()))
            fh.write(array.reshape(-1).view(np.uint8).data)
        fh.write(b"\0" * (start + end - fh.tell()))


def _read_header(fh: Any) -> tuple[dict[str, Any], int] | None:
    """(header, start of the arrays) of an open cache file; None unless it is one."""
    head = fh.read(len(_MAGIC) + 8)
    if len(head) < len(_MAGIC) + 8 or not head.startswith(_MAGIC):
        return None
    size = int.from_bytes(head[len(_MAGIC) :], "little")
    if size > _MAX_HEADER:
        return None
    return json.loads(fh.read(size)), _aligned(len(_MAGIC) + 8 + size)


def read_lookup(path: str | os.PathLike, signature: dict[str, Any], warn: bool = True) -> CatalogIndex | None:
    """The memory-mapped `CatalogIndex` of a valid cache at `path`; None when it is missing, stale or unreadable.

    Args:
        path: the cache file.
        signature: what it must have been built from (`lookup_signature`).
        warn: log a damaged file as a warning (False: at debug level, for a second look at the same file).

    Example:
        >>> signature = lookup_signature("catalog.csv", TOL10M_SCHEMA)  # doctest: +SKIP
        >>> index = read_lookup(lookup_locations("catalog.csv")[0], signature)  # doctest: +SKIP
    """
    path = Path(path)
    damaged = logger.warning if warn else logger.debug
    if not path.is_file():
        return None
    try:
        with path.open("rb") as fh:
            found = _read_header(fh)
            if found is None:
                damaged("ignoring %s: not a catalog lookup cache", path)
                return None
            header, start = found
            if header.get("signature") != signature:
                logger.info("catalog lookup cache %s is stale (the catalog or format changed)", path)
                return None
            if os.fstat(fh.fileno()).st_size != start + header["data_bytes"]:
                damaged("ignoring truncated catalog lookup cache %s", path)
                return None
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)  # the mapping outlives the descriptor
        arrays = {name: _view(mapped, start, spec) for name, spec in header["arrays"].items()}
        codes = [arrays[f"codes/{j}"] for j in range(len(header["vocab"]))]
        vocab = [PackedNames(arrays[f"names/{j}/offsets"], arrays[f"names/{j}/data"]) if present else None
                 for j, present in enumerate(header["vocab"])]  # fmt: skip
        index = CatalogIndex(arrays["ids"], arrays["split_masks"], header["split_names"], codes, vocab,
                             header["counts"], header["num_rows"], header["uuids"])  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:  # a damaged header or layout
        damaged("ignoring unreadable catalog lookup cache %s: %s", path, err)
        return None
    index.mapped_from = path
    return index


def _view(mapped: mmap.mmap, start: int, spec: dict[str, Any]) -> np.ndarray:
    dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
    count = math.prod(shape)
    if count == 0:
        return np.empty(shape, dtype=dtype)
    return np.frombuffer(mapped, dtype=dtype, count=count, offset=start + spec["offset"]).reshape(shape)


def _read_any(locations: list[Path], signature: dict[str, Any], warn: bool = True) -> CatalogIndex | None:
    for path in locations:
        index = read_lookup(path, signature, warn)
        if index is not None:
            logger.info("catalog lookup of %s: %d ids, %.1f MB memory-mapped from %s", signature["sources"][0]["path"],
                        len(index), index.nbytes / 1e6, path)  # fmt: skip
            return index
    return None


@contextlib.contextmanager
def _build_lock(locations: list[Path]) -> Iterator[Path | None]:
    """Hold the lock file of the first location where one can be created (every process picks the same one)."""
    from filelock import FileLock, Timeout

    for path in locations:
        lock = FileLock(str(path.with_name(path.name + ".lock")))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                logger.info("waiting for another process to build the catalog lookup cache %s", path)
                lock.acquire()
        except OSError as err:  # a read-only folder: try the next location
            logger.info("cannot lock %s: %s", lock.lock_file, err)
            continue
        try:
            yield path
        finally:
            lock.release()
        return
    yield None


def open_catalog_index(catalog: str | os.PathLike, schema: CatalogSchema, cache: bool = True) -> CatalogIndex:
    """The catalog's lookup, memory-mapped from its cache; built and written first where no valid cache exists.

    Args:
        catalog: the catalog file (CSV or Parquet).
        schema: its column names (`TOL10M_SCHEMA`, `TOL200M_SCHEMA`).
        cache: False reads the catalog into memory (`CatalogIndex.load`) and writes nothing.

    Example:
        >>> index = open_catalog_index("catalog.parquet", TOL200M_SCHEMA)  # doctest: +SKIP
    """
    if not cache:
        return CatalogIndex.load(catalog, schema)
    catalog = Path(catalog)
    if not catalog.is_file():
        raise FileNotFoundError(f"catalog not found: {catalog}")
    signature, locations = lookup_signature(catalog, schema), lookup_locations(catalog)
    index = _read_any(locations, signature)
    if index is not None:
        return index
    with _build_lock(locations) as lock_location:
        index = _read_any(locations, signature, warn=False)  # built by another process while this one waited
        if index is not None:
            return index
        built = CatalogIndex.load(catalog, schema)
        for path in locations if lock_location is not None else []:
            try:
                write_lookup(path, built, signature)
            except OSError as err:
                logger.info("cannot write catalog lookup cache %s: %s", path, err)
                continue
            index = read_lookup(path, signature)
            if index is not None:
                logger.info("wrote catalog lookup cache %s", path)
                del built  # this process, too, keeps only the mapped copy
                release_freed_memory()
                return index
    logger.warning("no writable place for the catalog lookup cache of %s (set BIOCLIP_HF_CACHE); it is held in "
                   "this process's memory", catalog)  # fmt: skip
    return built


__all__ = ["LOOKUP_FORMAT", "PackedNames", "lookup_locations", "lookup_signature", "open_catalog_index",
           "read_lookup", "write_lookup"]  # fmt: skip
