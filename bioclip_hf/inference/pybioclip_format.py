"""pybioclip's record keys and column order (checked against pybioclip 2.1.6), for `record_keys="pybioclip"`.

bioclip-hf records say `file`, `label`, `rank`, `taxon`; pybioclip's say `file_name`, `classification` and, for
Tree-of-Life predictions, only the lineage down to the rank (plus `species_epithet`, `species` = genus + " " +
epithet, and `common_name` at species rank). These helpers translate one record at a time, so streamed output
(CSV rows per batch) works the same in both spellings.

Standard library only: the CLI imports it to name its columns.

Example:
    >>> to_pybioclip_label_record({"file": "a.jpg", "label": "duck", "score": 0.9})
    {'file_name': 'a.jpg', 'classification': 'duck', 'score': 0.9}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import Enum
from typing import Any

RECORD_KEYS = ("bioclip-hf", "pybioclip")
_RANK_NAMES = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
_IN_MEMORY = re.compile(r"<image (\d+)>")


class Rank(Enum):
    """pybioclip's `Rank` (same members and values); any bioclip-hf `rank=` argument also accepts it.

    Example:
        >>> Rank.FAMILY.get_label()
        'family'
    """

    KINGDOM = 0
    PHYLUM = 1
    CLASS = 2
    ORDER = 3
    FAMILY = 4
    GENUS = 5
    SPECIES = 6

    def get_label(self) -> str:
        return self.name.lower()


def check_record_keys(record_keys: str) -> str:
    """Return `record_keys` if it is one of `RECORD_KEYS`, else raise a clear ValueError."""
    if record_keys not in RECORD_KEYS:
        raise ValueError(f"unknown record_keys {record_keys!r}; choose one of: {', '.join(RECORD_KEYS)}")
    return record_keys


def pybioclip_file_key(file: str) -> str:
    """pybioclip keys in-memory images by their position ("3"), paths by the path as given."""
    match = _IN_MEMORY.fullmatch(file)
    return match.group(1) if match else file


def pybioclip_columns(rank: str | None) -> list[str]:
    """pybioclip's output columns: Tree-of-Life at `rank`, or custom labels / bins when `rank` is None."""
    if rank is None:
        return ["file_name", "classification", "score"]
    lineage = list(_RANK_NAMES[: _RANK_NAMES.index(rank) + 1])
    if rank == "species":
        lineage[-1:] = ["species_epithet", "species", "common_name"]
    return ["file_name", *lineage, "score"]


def to_pybioclip_taxon_record(record: Mapping[str, Any], ranks: tuple[str, ...]) -> dict[str, Any]:
    """A bioclip-hf Tree-of-Life record (see `classify.taxon_record`) in pybioclip's keys.

    Args:
        record: the bioclip-hf record.
        ranks: the taxon's seven raw rank values (`Taxon.ranks()`, species = epithet).
    """
    rank = record["rank"]
    out: dict[str, Any] = {"file_name": pybioclip_file_key(record["file"])}
    depth = _RANK_NAMES.index(rank)
    out.update(zip(_RANK_NAMES[:depth], ranks[:depth]))
    if rank == "species":
        # pybioclip joins genus and epithet unconditionally: "Corvus " for a taxon without an epithet.
        out.update(species_epithet=ranks[6], species=f"{ranks[5]} {ranks[6]}", common_name=record["common_name"])
    else:
        out[rank] = ranks[depth]
    out["score"] = record["score"]
    return out


def to_pybioclip_label_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A custom-label (or bin) record in pybioclip's keys: file_name, classification, score."""
    return {"file_name": pybioclip_file_key(record["file"]), "classification": record["label"], "score": record["score"]}
