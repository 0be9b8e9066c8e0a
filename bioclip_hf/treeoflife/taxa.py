"""Columnar taxa of a Tree-of-Life index and the checks run on its embedding matrix.

A released index lists 450k-867k taxa. One Python `Taxon` per entry costs seconds and hundreds of MB, so here each
field (the seven ranks and the common name) is an Arrow array of its *unique* strings plus one int32 code per taxon.
Rank grouping, name matching, subsets and duplicate detection are then numpy operations on the codes, and `Taxon`
objects are built only for the predictions a caller gets back.

Example:
    >>> cols = TaxaColumns.from_entries([[["Animalia", "Chordata", "Aves", "", "", "Corvus", "corax"], "raven"]])
    >>> cols.taxon(0).name_at("species"), len(cols)
    ('Corvus corax', 1)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from bioclip_hf.treeoflife.taxonomy import RANKS, Taxon, _clean

FIELDS: tuple[str, ...] = RANKS + ("common_name",)
GENUS, SPECIES, COMMON = RANKS.index("genus"), RANKS.index("species"), len(RANKS)

# Problem codes of index entries (0 = fine). Entries with a problem are excluded from prediction.
ZERO, NON_FINITE, DUPLICATE = 1, 2, 3
PROBLEMS = {ZERO: "all-zero embedding", NON_FINITE: "non-finite embedding", DUPLICATE: "duplicate entry"}


def first_appearance_ids(key: np.ndarray) -> tuple[np.ndarray, int]:
    """Relabel `key` with compact int32 ids numbered in order of first appearance; returns (ids, count).

    Example:
        >>> first_appearance_ids(np.array([7, 3, 7, 9]))
        (array([0, 1, 0, 2], dtype=int32), 3)
    """
    import pandas as pd

    ids, uniques = pd.factorize(np.asarray(key), sort=False)  # hash-based, O(N), ids in order of first appearance
    return ids.astype(np.int32, copy=False), len(uniques)


def combine_keys(columns: Sequence[np.ndarray]) -> np.ndarray:
    """One int64 key per row such that two rows share a key iff they agree in every column (ids may be -1)."""
    key = np.asarray(columns[0], np.int64)
    for column in columns[1:]:
        column = np.asarray(column, np.int64) + 1  # -1 ("unknown") becomes 0
        key = key * (int(column.max(initial=0)) + 1) + column
        key = first_appearance_ids(key)[0].astype(np.int64)  # compact again: keeps the next product small
    return key


def first_rows(ids: np.ndarray) -> np.ndarray:
    """Row of the first member of each group, for ids numbered in order of first appearance (O(N))."""
    if len(ids) == 0:
        return np.zeros(0, np.int64)
    seen = np.maximum.accumulate(ids)
    new = np.empty(len(ids), bool)
    new[0] = True
    new[1:] = ids[1:] > seen[:-1]
    return np.flatnonzero(new)


class TaxaColumns:
    """Taxa as dictionary-encoded columns: `vocab[f]` holds the unique (cleaned) strings of field `f` (an Arrow
    string array) and `codes[f][i]` the position of taxon `i`'s value in it. Fields are `FIELDS`.

    Args:
        codes: one int32 array per field, all of length N.
        vocab: one Arrow string array per field.
        lineage: optional precomputed `lineage_ids` per depth (from a cache).
    """

    def __init__(self, codes: Sequence[np.ndarray], vocab: Sequence[pa.Array], lineage: dict[int, np.ndarray] | None = None):
        if len(codes) != len(FIELDS) or len(vocab) != len(FIELDS):
            raise ValueError(f"taxa columns need {len(FIELDS)} fields ({', '.join(FIELDS)})")
        self.codes = [np.asarray(c) for c in codes]
        self.vocab = list(vocab)
        if len({len(c) for c in self.codes}) != 1:
            raise ValueError("taxa columns have different lengths")
        self._lineage: dict[int, np.ndarray] = dict(lineage or {})
        self._lower_vocab: dict[int, tuple[np.ndarray, dict[str, int]]] = {}
        self._lower_rows: dict[int, np.ndarray] = {}
        self._parent: tuple[TaxaColumns, np.ndarray] | None = None

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_strings(cls, columns: Sequence[Sequence[Any] | pa.Array]) -> TaxaColumns:
        """Build from one sequence (or Arrow array) of values per field; values are cleaned as `Taxon` does
        (stripped; None, "nan", "none", "null" -> "")."""
        codes, vocab = [], []
        for values in columns:
            if isinstance(values, pa.Array):
                array = values
            else:
                try:
                    array = pa.array(values, pa.string())
                except (pa.ArrowInvalid, pa.ArrowTypeError):  # numbers or other objects: stringify like Taxon
                    array = pa.array([_clean(v) for v in values], pa.string())
            encoded = array.fill_null("").dictionary_encode()
            indices = encoded.indices.to_numpy().astype(np.int32, copy=False)
            dictionary = encoded.dictionary
            cleaned = _clean_dictionary(dictionary)
            if cleaned is not None:  # cleaning may merge values (" Aves" and "Aves"): re-encode
                recoded = cleaned.dictionary_encode()
                indices = recoded.indices.to_numpy().astype(np.int32)[indices]
                dictionary = recoded.dictionary
            codes.append(indices)
            vocab.append(dictionary)
        return cls(codes, vocab)

    @classmethod
    def from_taxa(cls, taxa: Iterable[Taxon]) -> TaxaColumns:
        """Columns of a sequence of `Taxon`."""
        rows = [(*taxon.ranks(), taxon.common_name) for taxon in taxa]
        return cls.from_strings([[row[f] for row in rows] for f in range(len(FIELDS))])

    @classmethod
    def from_entries(cls, entries: Sequence[Any], source: str = "taxa") -> TaxaColumns:
        """Columns of a released `txt_emb_species.json`: a list of `[[kingdom, ..., species_epithet], common_name]`."""
        import pyarrow.compute as pc

        if not isinstance(entries, list):
            raise ValueError(f"{source}: expected a JSON list of [[kingdom, ..., species], common_name] entries")
        try:  # vectorized: one Arrow list array of the rank lists, split into rank columns by stride
            if not (np.fromiter(map(len, entries), np.int64, len(entries)) == 2).all():
                raise TypeError
            ranks = pa.array([entry[0] for entry in entries], pa.list_(pa.string()))
            if ranks.null_count or not (pc.list_value_length(ranks).to_numpy() == len(RANKS)).all():
                raise TypeError
            flat = ranks.flatten()
            columns: list[Any] = [flat.take(pa.array(np.arange(r, len(flat), len(RANKS)))) for r in range(len(RANKS))]
        except (TypeError, pa.ArrowInvalid, pa.ArrowTypeError):
            bad = next((i for i, e in enumerate(entries) if not _is_entry(e)), None)
            if bad is not None:
                raise ValueError(f"{source}: bad taxon entry {bad}: {entries[bad]!r}; expected "
                                 f"[[{len(RANKS)} ranks, kingdom ... species epithet], common_name]") from None  # fmt: skip
            columns = [[entry[0][r] for entry in entries] for r in range(len(RANKS))]  # e.g. numbers as names
        columns.append([entry[1] for entry in entries])
        return cls.from_strings(columns)

    @classmethod
    def from_arrow(cls, table: pa.Table) -> TaxaColumns:
        """Columns of an Arrow table with one (plain or dictionary-encoded) string column per field."""
        missing = [f for f in FIELDS if f not in table.column_names]
        if missing:
            raise ValueError(f"taxa table lacks column(s): {', '.join(missing)}")
        arrays = [table.column(f).combine_chunks() for f in FIELDS]
        if all(pa.types.is_dictionary(a.type) for a in arrays):  # our own cache: already clean and unique
            return cls([a.indices.to_numpy() for a in arrays], [a.dictionary for a in arrays])
        return cls.from_strings([a.cast(pa.string()) if pa.types.is_dictionary(a.type) else a for a in arrays])

    def to_arrow(self, dictionary: bool = True) -> pa.Table:
        """An Arrow table, one column per field (dictionary-encoded, or plain strings)."""
        columns = {}
        for f, name in enumerate(FIELDS):
            array = pa.DictionaryArray.from_arrays(pa.array(self.codes[f], pa.int32()), self.vocab[f])
            columns[name] = array if dictionary else array.cast(pa.string())
        return pa.table(columns)

    def to_entries(self) -> list[list]:
        """The released JSON layout: `[[kingdom, ..., species_epithet], common_name]` per taxon."""
        values = [self.strings(f).to_pylist() for f in range(len(FIELDS))]
        return [[list(ranks), common] for *ranks, common in zip(*values)]

    # -- access ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.codes[0])

    def strings(self, field: int) -> pa.Array:
        """The values of one field for every taxon (an Arrow string array)."""
        return self.vocab[field].take(pa.array(self.codes[field], pa.int32()))

    def values(self, row: int) -> tuple[str, ...]:
        """The eight stored strings of taxon `row` (ranks, then common name)."""
        return tuple(self.vocab[f][int(self.codes[f][row])].as_py() for f in range(len(FIELDS)))

    def taxon(self, row: int) -> Taxon:
        """Taxon `row` as a `Taxon` object."""
        return Taxon(*self.values(row))

    def take(self, rows: np.ndarray) -> TaxaColumns:
        """The taxa at `rows` (same vocabularies; lineage ids are derived from this table's when first needed)."""
        rows = np.asarray(rows, np.int64)
        taken = TaxaColumns([c[rows] for c in self.codes], self.vocab)
        taken._parent = (self, rows)
        taken._lower_vocab = self._lower_vocab
        return taken

    # -- grouping --------------------------------------------------------------------------------
    def lineage_ids(self, depth: int) -> np.ndarray:
        """Clade id of every taxon at rank `RANKS[depth]`, keyed by the full lineage (kingdom .. that rank, empty
        names included), numbered in order of first appearance; depth `len(RANKS)` adds the common name (entries)."""
        if depth not in self._lineage and self._parent is not None:
            parent, rows = self._parent
            self._lineage[depth] = first_appearance_ids(parent.lineage_ids(depth)[rows])[0]
        if depth not in self._lineage:
            key = self.codes[0] if depth == 0 else combine_keys([self.lineage_ids(depth - 1), self.codes[depth]])
            self._lineage[depth] = first_appearance_ids(key)[0]
        return self._lineage[depth]

    # -- name matching (case-insensitive, as `Taxon.name_at(rank).lower()`) -----------------------
    def _lower_ids(self, field: int) -> tuple[np.ndarray, dict[str, int]]:
        """Per taxon, the id of its lower-cased value of `field`; and lower-cased value -> id."""
        if field not in self._lower_vocab:  # shared with tables taken from this one (same vocabularies)
            mapping: dict[str, int] = {}
            per_value = np.fromiter((mapping.setdefault(s.lower(), len(mapping)) for s in self.vocab[field].to_pylist()),
                                    np.int64, count=len(self.vocab[field]))  # fmt: skip
            self._lower_vocab[field] = (per_value, mapping)
        if field not in self._lower_rows:
            self._lower_rows[field] = self._lower_vocab[field][0][self.codes[field]]
        return self._lower_rows[field], self._lower_vocab[field][1]

    def name_columns(self, rank: str) -> list[np.ndarray]:
        """Per-taxon id columns identifying the lower-cased name at `rank` (genus + epithet ids for "species")."""
        if rank == "species":
            return [self._lower_ids(GENUS)[0], self._lower_ids(SPECIES)[0]]
        return [self._lower_ids(RANKS.index(rank))[0]]

    def name_keys(self, rank: str, name: str) -> list[list[int]]:
        """The id tuples (see `name_columns`) a taxon may have for its name at `rank` to equal `name` (lower-cased).

        A binomial "genus epithet" may split at any space, or be a bare epithet under an empty genus.
        """
        if rank != "species":
            found = self._lower_ids(RANKS.index(rank))[1].get(name)
            return [] if found is None else [[found]]
        genera, epithets = self._lower_ids(GENUS)[1], self._lower_ids(SPECIES)[1]
        splits = [("", name)] + [(name[:i], name[i + 1 :]) for i, char in enumerate(name) if char == " "]
        return [[genera[g], epithets[e]] for g, e in splits if g in genera and e in epithets and e]

    def match(self, ranks: Sequence[str], values: Iterable[Sequence[str]]) -> np.ndarray:
        """Per taxon: do its lower-cased names at `ranks` equal one of the `values` tuples (lower-cased)?"""
        return self.match_values(ranks, values)[0]

    def match_values(self, ranks: Sequence[str], values: Iterable[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """(`match`, per value tuple: does some taxon equal it?) in one pass over the taxa."""
        patterns: list[list[int]] = []
        owners: list[int] = []
        values = list(values)
        for i, value in enumerate(values):
            options: list[list[int]] = [[]]
            for rank, name in zip(ranks, value):
                options = [done + key for done in options for key in self.name_keys(rank, name)]
            patterns += options
            owners += [i] * len(options)
        hits, present = self._match(ranks, patterns)
        found = np.zeros(len(values), bool)
        np.logical_or.at(found, np.asarray(owners, np.int64), present)
        return hits, found

    def find_names(self, names: Iterable[str]) -> tuple[np.ndarray, set[str]]:
        """Taxa having any of `names` (lower-cased) at any rank (species as binomial); and the names that matched."""
        names = list(dict.fromkeys(names))
        keep = np.zeros(len(self), bool)
        found: set[str] = set()
        for rank in RANKS:
            per_name = [self.name_keys(rank, name) for name in names]
            hits, present = self._match([rank], [key for keys in per_name for key in keys])
            keep |= hits
            ends = np.cumsum([len(keys) for keys in per_name])
            found.update(name for name, end, keys in zip(names, ends, per_name) if keys and present[end - len(keys) : end].any())
        return keep, found

    def _match(self, ranks: Sequence[str], patterns: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """(per taxon: equals a pattern, per pattern: some taxon equals it) for id tuples over `name_columns`."""
        if not patterns:
            return np.zeros(len(self), bool), np.zeros(0, bool)
        rows = [column for rank in ranks for column in self.name_columns(rank)]
        stacked = [np.concatenate([column, np.array([p[c] for p in patterns], np.int64)]) for c, column in enumerate(rows)]
        keys = combine_keys(stacked)
        row_keys, pattern_keys = keys[: len(self)], keys[len(self) :]
        return np.isin(row_keys, pattern_keys), np.isin(pattern_keys, row_keys)


def _clean_dictionary(dictionary: pa.Array) -> pa.Array | None:
    """`taxonomy._clean` applied to unique strings, or None when none changes (the usual case; found vectorized)."""
    import pyarrow.compute as pc

    changes = pc.or_(
        pc.not_equal(dictionary, pc.utf8_trim_whitespace(dictionary)),
        pc.or_(pc.is_in(pc.utf8_lower(dictionary), pa.array(["nan", "none", "null"])),
               pc.match_substring_regex(dictionary, "^[\x1c-\x1f]|[\x1c-\x1f]$")),  # Python whitespace, not Unicode's
    ).to_numpy(zero_copy_only=False)  # fmt: skip
    if not changes.any():
        return None
    values = dictionary.to_pylist()
    for i in np.flatnonzero(changes):
        values[i] = _clean(values[i])
    return pa.array(values, pa.string())


def _is_entry(entry: Any) -> bool:
    try:
        return len(entry) == 2 and len(entry[0]) == len(RANKS) and not isinstance(entry[0], str)
    except TypeError:
        return False


class TaxonSequence(Sequence):
    """A read-only list of `Taxon` over columns, built one at a time on access (`index.taxa[i]`)."""

    def __init__(self, columns: TaxaColumns, rows: np.ndarray | None = None, depth: int = len(RANKS) - 1):
        self.columns, self.rows, self.depth = columns, rows, depth

    def __len__(self) -> int:
        return len(self.columns) if self.rows is None else len(self.rows)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"taxon {i} out of range ({len(self)} taxa)")
        row = i if self.rows is None else int(self.rows[i])
        values = self.columns.values(row)
        if self.depth == len(RANKS) - 1:
            return Taxon(*values)
        return Taxon(*values[: self.depth + 1])  # a clade: its lineage only, no common name

    def __iter__(self) -> Iterator[Taxon]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and len(other) == len(self) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # mutable-looking sequence compared by value

    def __repr__(self) -> str:
        return f"TaxonSequence({len(self)} taxa)"


def column_maxabs(matrix: np.ndarray, taxa_axis: int) -> np.ndarray:
    """Largest |value| of every taxon's embedding (NaN when one is NaN, inf when one is infinite), reading blocks
    along the contiguous axis so a memory-mapped file is streamed once."""
    import torch

    from bioclip_hf.treeoflife.scoring import mapped_buffer, release_pages

    other = 1 - taxa_axis
    running = torch.zeros(matrix.shape[taxa_axis], dtype=torch.float32)
    step = max(1, (1 << 24) // max(1, matrix.shape[taxa_axis]))  # ~16M values per block
    buffer = mapped_buffer(matrix)  # a mapped file's pages are dropped from RSS block by block (see `scoring`)
    for start in range(0, matrix.shape[other], step):
        block = torch.from_numpy(np.asarray(matrix[start : start + step] if other == 0 else matrix[:, start : start + step]))
        running = torch.maximum(running, block.abs().amax(dim=other).float())  # both propagate NaN
        release_pages(buffer)
    return running.numpy()


def embedding_problems(maxabs: np.ndarray) -> np.ndarray:
    """Problem code per taxon from its embedding's largest |value| (`column_maxabs`): ZERO, NON_FINITE or 0."""
    problems = np.zeros(len(maxabs), np.int8)
    problems[maxabs == 0] = ZERO
    problems[~np.isfinite(maxabs)] = NON_FINITE
    return problems


def mark_duplicates(problems: np.ndarray, columns: TaxaColumns) -> np.ndarray:
    """`problems` plus DUPLICATE for every repeat of an entry (same ranks and common name) after its first usable
    copy; entries that already have a problem keep their code."""
    entry = columns.lineage_ids(len(RANKS))
    order = np.lexsort((np.arange(len(entry)), problems != 0, entry))  # per entry: usable copies first
    repeated = np.zeros(len(entry), bool)
    repeated[order[1:]] = entry[order[1:]] == entry[order[:-1]]
    out = problems.astype(np.int8, copy=True)
    out[repeated & (out == 0)] = DUPLICATE
    return out


def find_problems(maxabs: np.ndarray, columns: TaxaColumns) -> np.ndarray:
    """Problem code per taxon (`PROBLEMS`): all-zero or non-finite embedding, or a repeated entry. 0 = fine."""
    return mark_duplicates(embedding_problems(maxabs), columns)
