"""`bioclip-hf list-taxa`: the taxa (or clades at a rank) a Tree-of-Life index can predict."""

from __future__ import annotations

import argparse

from ..taxonomy import RANKS
from ._records import FORMATS, write_records


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..registry import DEFAULT_MODEL

    parser.add_argument("--index", help="index folder from build-index or txt_emb_species.npy (default: the model's)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model whose released index to list (default: {DEFAULT_MODEL})")
    parser.add_argument("--index-revision", help="branch, tag or commit of the model's released index (default: the registry's)")
    parser.add_argument("--rank", type=str.lower, choices=RANKS, default="species", help="list clades at this rank")
    parser.add_argument("--subset", help="only clades inside: CSV of clades or 'Aves,Mammalia'")
    parser.add_argument("--format", choices=FORMATS, default="csv", help="output format (default: csv)")
    parser.add_argument("--output", "-o", help="output file (default: stdout)")


def run(args: argparse.Namespace) -> int:
    from collections import Counter

    from ..registry import load_registry_index
    from ..tol_index import clade_label, load_index
    from .predict import _subset

    index = load_index(args.index) if args.index else load_registry_index(args.model, args.index_revision)
    subset = _subset(args.subset)
    if subset is not None:
        index = index.subset(table=subset) if isinstance(subset, str) else index.subset(names=subset)
    groups = index.groups(args.rank)
    counts = Counter(groups.group_ids.tolist())
    position = RANKS.index(args.rank)
    records = []
    for g, taxon in enumerate(groups.taxa):
        record = dict(zip(RANKS[:position], taxon.ranks()))
        record[args.rank] = taxon.name_at(args.rank)
        if args.rank == "species":
            record["common_name"] = taxon.common_name
        record.update(taxon=clade_label(taxon, args.rank), num_taxa=counts[g])
        records.append(record)
    write_records(records, args.format, args.output)
    return 0
