"""A compact, read-only lookup from image id to taxon over a TreeOfLife catalog (millions of rows).

TreeOfLife-10M's `metadata/catalog.csv` has ~11M rows (train_small rows repeat train ids) and
TreeOfLife-200M's `catalog.parquet` ~200M, so the lookup holds no Python object per row:

- ids: one numpy fixed-width bytes array (`S<len>`), sorted, so a lookup is one `np.searchsorted`;
- taxonomy: per rank (and the common name) an int32 code into an Arrow dictionary of distinct names;
- splits: a bit mask per id (an id listed under several splits, like train + train_small, keeps all bits).

The catalog is read with Arrow's multithreaded CSV/Parquet readers straight into dictionary-encoded
columns. `benchmarks/bench_catalog_memory.py` measures the peak RSS per million rows. `catalog_cache.open_catalog_index`
builds it once into an on-disk cache that every process memory-maps (`bioclip_hf.data.catalog_cache`).

Example:
    >>> index = CatalogIndex.load("metadata/catalog.csv", TOL10M_SCHEMA)  # doctest: +SKIP
    >>> row = index.lookup("4fe2a6ab-..."); index.in_split(row, "train"), index.taxon(row)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bioclip_hf.treeoflife.taxonomy import RANKS, Taxon

logger = logging.getLogger(__name__)

CATALOG_RANK_COLUMNS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
DEFAULT_SPLIT = "train"  # rows without a split value (and catalogs without a split column)


@dataclass(frozen=True)
class CatalogSchema:
    """Column names of one catalog flavour.

    Args:
        key: the image id column (file names in the image tars are `<key>.jpg`).
        common: the common-name column.
        split: the split column (optional in the file).
        image_marker: a column set only on rows whose image the source holds (counted per split for the
            dataset size); None when every row has an image.
    """

    key: str
    common: str = "common"
    split: str = "split"
    image_marker: str | None = None


TOL10M_SCHEMA = CatalogSchema(key="treeoflife_id", image_marker="eol_content_id")  # EOL rows have an eol_content_id
TOL200M_SCHEMA = CatalogSchema(key="uuid")


def _catalog_columns(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    import csv

    with path.open("r", encoding="utf-8", newline="") as fh:
        return next(csv.reader(fh), [])


@dataclass(frozen=True)
class _Columns:
    key: str
    dictionary: tuple[str, ...]  # split, ranks and common name present in the file
    marker: str | None


def _plan(path: Path, schema: CatalogSchema) -> _Columns:
    present = _catalog_columns(path)
    if schema.key not in present:
        raise ValueError(f"{path}: no {schema.key!r} column (columns: {', '.join(present) or 'none'})")
    names = (schema.split, *CATALOG_RANK_COLUMNS, schema.common)
    marker = schema.image_marker if schema.image_marker in present else None
    return _Columns(schema.key, tuple(name for name in names if name in present), marker)


def iter_catalog_batches(path: str | Path, schema: CatalogSchema, batch_rows: int = 1 << 16):
    """Record batches of the catalog's key, split, rank, common (dictionary-encoded) and marker columns.

    Streams (Arrow's CSV reader / Parquet row groups), so only one batch of raw text is in memory at a time.
    """
    import pyarrow as pa

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"catalog not found: {path}")
    columns = _plan(path, schema)
    wanted = [columns.key, *columns.dictionary] + ([columns.marker] if columns.marker else [])
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        target = pa.schema([pa.field(n, pa.dictionary(pa.int32(), pa.string()) if n in columns.dictionary else pa.string())
                            for n in wanted])  # fmt: skip
        reader = pq.ParquetFile(path, read_dictionary=list(columns.dictionary))
        for batch in reader.iter_batches(batch_size=batch_rows, columns=wanted):
            yield batch.cast(target)
        return
    import pyarrow.csv as pcsv

    types = {name: pa.dictionary(pa.int32(), pa.string()) for name in columns.dictionary}
    types.update({name: pa.string() for name in (columns.key, columns.marker) if name})
    convert = pcsv.ConvertOptions(include_columns=wanted, column_types=types, strings_can_be_null=True)
    # Arrow's default 1 MB blocks: larger ones raise the peak (the reader parses several blocks ahead).
    yield from pcsv.open_csv(path, convert_options=convert)


def _batch_ids(column: Any) -> np.ndarray:
    """Arrow string array -> numpy `S<width>` array without a Python object per row ("" for nulls)."""
    import pyarrow.compute as pc

    n = len(column)
    lengths = pc.binary_length(column)
    width = max(pc.max(lengths).as_py() or 0, 1)
    if n and column.null_count == 0 and pc.min(lengths).as_py() == width:
        # Equal lengths (uuids): the data buffer already is the fixed-width array.
        offsets = np.frombuffer(column.buffers()[1], dtype=np.int32, count=column.offset + n + 1)
        return np.frombuffer(column.buffers()[2], dtype=f"S{width}", count=n, offset=int(offsets[column.offset])).copy()
    return np.array([(value or "").encode("utf-8") for value in column.to_pylist()], dtype=f"S{width}")


_DASHES = (8, 13, 18, 23)
_HEX_POSITIONS = [i for i in range(36) if i not in _DASHES]
_NIBBLE = np.full(256, 255, dtype=np.uint8)
_NIBBLE[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16)
_NIBBLE[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", np.uint8)


def pack_uuids(ids: np.ndarray) -> np.ndarray | None:
    """`S36` canonical uuid strings -> `S16` (their 128 bits); None unless every id is one.

    A uuid is then 16 bytes instead of 36, which is most of the lookup's memory.
    """
    if ids.dtype.itemsize != 36 or not len(ids):
        return None
    chars = ids.view(np.uint8).reshape(-1, 36)
    if not (chars[:, _DASHES] == ord("-")).all():
        return None
    nibbles = _NIBBLE[chars[:, _HEX_POSITIONS]]
    if (nibbles == 255).any():
        return None
    return np.ascontiguousarray((nibbles[:, 0::2] << 4) | nibbles[:, 1::2]).view("S16").ravel()


def unpack_uuids(packed: np.ndarray) -> np.ndarray:
    """Inverse of `pack_uuids` (lower-case canonical strings)."""
    raw = np.frombuffer(packed.tobytes(), np.uint8).reshape(-1, 16)
    chars = np.full((len(raw), 36), ord("-"), dtype=np.uint8)
    chars[:, _HEX_POSITIONS[0::2]] = _HEX_DIGITS[raw >> 4]
    chars[:, _HEX_POSITIONS[1::2]] = _HEX_DIGITS[raw & 15]
    return chars.view("S36").ravel()


def _uuid_key(key: str) -> bytes | None:
    if len(key) != 36 or any(key[i] != "-" for i in _DASHES):
        return None
    try:
        return bytes.fromhex(key.replace("-", ""))
    except ValueError:
        return None


class _Ids:
    """Collects id chunks, packed as 16-byte uuids while every id so far is a canonical uuid."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.uuids = True

    def add(self, column: Any) -> None:
        raw = _batch_ids(column)
        packed = pack_uuids(raw) if self.uuids else None
        if self.uuids and packed is None:  # not (all) uuids after all: back to plain strings
            self.uuids = False
            self.chunks = [unpack_uuids(chunk) for chunk in self.chunks]
        self.chunks.append(packed if packed is not None else raw)

    def concatenate(self) -> np.ndarray:
        ids = np.concatenate(self.chunks) if self.chunks else np.empty(0, dtype="S1")
        self.chunks = []
        return ids


class _Vocabulary:
    """Distinct names of one column in order of first appearance (one Python string per name, not per row)."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.names: list[str] = []

    def encode(self, chunk: Any) -> np.ndarray:
        """int32 codes of a dictionary-array chunk in this vocabulary (-1 for nulls)."""
        mapping = np.fromiter((self._code(str(value)) for value in chunk.dictionary.to_pylist()), dtype=np.int32,
                              count=len(chunk.dictionary))  # fmt: skip
        local = chunk.indices.fill_null(-1).to_numpy(zero_copy_only=False)
        return np.where(local >= 0, mapping[np.maximum(local, 0)] if len(mapping) else -1, -1).astype(np.int32)

    def _code(self, name: str) -> int:
        code = self.codes.get(name)
        if code is None:
            code = self.codes[name] = len(self.names)
            self.names.append(name)
        return code


def _split_codes(codes: np.ndarray | None, names: list[str]) -> tuple[list[str], np.ndarray]:
    """(split names, per-row index into them); rows without a split value belong to `DEFAULT_SPLIT`."""
    if codes is None:
        return [DEFAULT_SPLIT], np.zeros(0, dtype=np.int32)
    names = list(names)
    if (codes < 0).any():
        if DEFAULT_SPLIT not in names:
            names.append(DEFAULT_SPLIT)
        codes[codes < 0] = names.index(DEFAULT_SPLIT)
    if len(names) > 32:
        raise ValueError(f"catalog has {len(names)} split names; at most 32 are supported")
    return names, codes


class CatalogIndex:
    """Sorted-id lookup over a catalog (see the module docstring); build with `CatalogIndex.load` (in this
    process's memory) or `bioclip_hf.data.catalog_cache.open_catalog_index` (memory-mapped from a cache shared by
    processes).

    Attributes:
        ids: sorted unique ids (`S<width>`).
        split_names: the split names; bit i of `split_masks[row]` marks membership of split i.
        counts: per split, the number of ids that have an image (see `CatalogSchema.image_marker`).
        num_rows: rows read from the file (before merging ids listed under several splits).
        vocab: per rank column (and the common name) the names its codes index (None: no such column).
        mapped_from: the cache file the arrays are mapped from (None: held in memory).
    """

    def __init__(self, ids: np.ndarray, split_masks: np.ndarray, split_names: list[str], codes: list[np.ndarray],
                 vocab: list[Any], counts: dict[str, int], num_rows: int, uuids: bool = False) -> None:  # fmt: skip
        self.ids, self.split_masks, self.split_names = ids, split_masks, split_names
        self.codes, self.vocab, self.counts, self.num_rows = codes, vocab, counts, num_rows
        self.uuids = uuids  # ids are packed 16-byte uuids (see `pack_uuids`)
        self.mapped_from: Path | None = None

    @classmethod
    def load(cls, path: str | Path, schema: CatalogSchema) -> CatalogIndex:
        """Read `path` (CSV or Parquet) into an index, one batch at a time.

        Example:
            >>> index = CatalogIndex.load("catalog.parquet", TOL200M_SCHEMA)  # doctest: +SKIP
        """
        index = cls._sorted(*cls._read(path, schema))
        logger.info("catalog %s: %d rows, %d ids, images per split %s (%.1f MB in memory)", path, index.num_rows,
                    len(index.ids), index.counts, index.nbytes / 1e6)  # fmt: skip
        return index

    @staticmethod
    def _read(path: str | Path, schema: CatalogSchema) -> tuple:
        columns = [*CATALOG_RANK_COLUMNS, schema.common]
        id_chunks, marker_chunks = _Ids(), []
        code_chunks: dict[str, list[np.ndarray]] = {}
        vocabularies: dict[str, _Vocabulary] = {}
        for batch in iter_catalog_batches(path, schema):
            for name in batch.schema.names:
                column = batch.column(name)
                if name == schema.key:
                    id_chunks.add(column)
                elif name == schema.image_marker:
                    marker_chunks.append(column.is_valid().to_numpy(zero_copy_only=False))
                else:
                    code_chunks.setdefault(name, []).append(vocabularies.setdefault(name, _Vocabulary()).encode(column))
        uuids = id_chunks.uuids
        ids = id_chunks.concatenate()
        num_rows = len(ids)
        has_image = np.concatenate(marker_chunks) if schema.image_marker and marker_chunks else np.ones(num_rows, bool)

        def codes_of(name: str) -> np.ndarray | None:
            chunks = code_chunks.pop(name, None)
            return np.concatenate(chunks) if chunks else (np.empty(0, np.int32) if name in vocabularies else None)

        split_codes = codes_of(schema.split)
        split_names, split_codes = _split_codes(split_codes, vocabularies.get(schema.split, _Vocabulary()).names)
        masks = (np.left_shift(np.uint32(1), split_codes.astype(np.uint32)).astype(np.uint32) if len(split_codes)
                 else np.ones(num_rows, np.uint32))  # fmt: skip
        codes, vocab = [], []
        for name in columns:
            column_codes = codes_of(name)
            codes.append(column_codes if column_codes is not None else np.full(num_rows, -1, dtype=np.int32))
            vocab.append(vocabularies[name].names if name in vocabularies else None)
        return ids, masks, codes, has_image, split_names, vocab, num_rows, uuids

    @classmethod
    def _sorted(cls, ids, masks, codes, has_image, split_names, vocab, num_rows, uuids) -> CatalogIndex:
        """Sort by id (arrays permuted one at a time to bound the peak), drop empty ids, merge repeated ids."""
        keep = ids != b""
        order = np.argsort(ids, kind="stable")
        order = order[keep[order]] if not keep.all() else order
        del keep
        ids = ids[order]
        masks, has_image = masks[order], has_image[order]
        for j in range(len(codes)):
            codes[j] = codes[j][order]
        del order
        first = np.ones(len(ids), dtype=bool)
        first[1:] = ids[1:] != ids[:-1]
        if not first.all():  # ids listed under several splits (train_small repeats train): merge their bits
            starts = np.flatnonzero(first)
            masks = np.bitwise_or.reduceat(masks, starts)
            has_image = np.logical_or.reduceat(has_image, starts)
            ids = ids[starts]
            codes = [column[starts] for column in codes]
        counts = {name: int(np.count_nonzero((masks & np.uint32(1 << bit)).astype(bool) & has_image))
                  for bit, name in enumerate(split_names)}  # fmt: skip
        return cls(ids, masks, split_names, codes, vocab, counts, num_rows, uuids)

    # -- lookups ----------------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes of the id, mask and code arrays plus the name dictionaries (mapped or held)."""
        names = sum(names.nbytes if hasattr(names, "nbytes") else sum(sys.getsizeof(name) for name in names)
                    for names in self.vocab if names is not None)  # fmt: skip
        return int(self.ids.nbytes + self.split_masks.nbytes + sum(c.nbytes for c in self.codes) + names)

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, key: str) -> int:
        """Row of `key`, or -1 when the catalog has no such id (uuids match in either case)."""
        raw = _uuid_key(key) if self.uuids else key.encode("utf-8")
        row = self._find(raw) if raw else -1
        if row < 0 and not self.uuids and key != key.lower() and _uuid_key(key) is not None:
            row = self._find(key.lower().encode())  # uuids read back from their packed form are lower case
        return row

    def _find(self, raw: bytes) -> int:
        if len(raw) > self.ids.dtype.itemsize:
            return -1
        row = int(np.searchsorted(self.ids, raw))
        return row if row < len(self.ids) and self.ids[row] == raw else -1

    def split_bit(self, split: str) -> int:
        """The mask bit of `split`; ValueError naming the catalog's splits otherwise."""
        if split not in self.split_names:
            raise ValueError(f"no split {split!r} in the catalog (splits: {', '.join(self.split_names) or 'none'})")
        return 1 << self.split_names.index(split)

    def in_split(self, row: int, split: str) -> bool:
        return bool(int(self.split_masks[row]) & self.split_bit(split))

    def taxon(self, row: int) -> dict[str, str]:
        """The row's ranks and common name as `Taxon.to_dict()` (empty strings for missing values)."""
        values = []
        for codes, names in zip(self.codes, self.vocab):
            code = int(codes[row])
            values.append(names[code] if code >= 0 and names is not None else "")
        return Taxon.from_dict({**dict(zip(RANKS, values[:-1])), "common_name": values[-1]}).to_dict()


__all__ = [
    "CATALOG_RANK_COLUMNS",
    "CatalogIndex",
    "CatalogSchema",
    "TOL10M_SCHEMA",
    "TOL200M_SCHEMA",
    "iter_catalog_batches",
    "pack_uuids",
    "unpack_uuids",
]
