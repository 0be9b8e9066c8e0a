"""`bioclip-hf list-taxa`: the taxa (or clades at a rank) a Tree-of-Life index can predict, or its defects."""

from __future__ import annotations

import argparse
import sys

from bioclip_hf.inference.records import FORMATS, write_records
from bioclip_hf.treeoflife.taxonomy import RANKS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bioclip_hf.hub.registry import DEFAULT_MODEL

    parser.add_argument("--index", help="index folder from build-index or txt_emb_species.npy (default: the model's)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model whose released index to list (default: {DEFAULT_MODEL})")
    parser.add_argument("--index-revision", help="branch, tag or commit of the model's released index (default: the registry's)")
    parser.add_argument("--rank", type=str.lower, choices=RANKS, default="species", help="list clades at this rank")
    parser.add_argument("--subset", help="only clades inside: CSV of clades or 'Aves,Mammalia'")
    parser.add_argument("--problems", action="store_true",
                        help="list the entries excluded from prediction instead (all-zero or non-finite embeddings, "
                             "duplicate entries), with their position in the file")  # fmt: skip
    parser.add_argument("--format", choices=FORMATS, default="csv", help="output format (default: csv)")
    parser.add_argument("--output", "-o", help="output file (default: stdout)")


def run(args: argparse.Namespace) -> int:
    from bioclip_hf.treeoflife.files import parse_subset
    from bioclip_hf.treeoflife.index import TreeOfLifeIndex, load_index

    index = load_index(args.index) if args.index else TreeOfLifeIndex.from_registry(args.model, args.index_revision)
    if args.problems:
        records = index.problem_records()
        columns = ["position", *RANKS, "common_name", "problem"]
        write_records(records, args.format, args.output, columns)
        print(f"bioclip-hf list-taxa: {len(records):,} of {len(index):,} entries excluded from prediction",
              file=sys.stderr)  # fmt: skip
        return 0
    subset = parse_subset(args.subset)
    if subset is not None:
        index = index.subset(table=subset) if isinstance(subset, str) else index.subset(names=subset)
    write_records(clade_records(index, args.rank), args.format, args.output)
    return 0


def clade_records(index, rank: str) -> list[dict]:
    """One record per clade at `rank` that has predictable taxa: its lineage, label and number of taxa."""
    import numpy as np

    from bioclip_hf.treeoflife.index import clade_label

    groups = index.groups(rank)
    ids = groups.group_ids.cpu().numpy()
    counts = np.bincount(ids[index.problems == 0], minlength=len(groups))
    position = RANKS.index(rank)
    records = []
    for g in np.flatnonzero(counts):
        taxon = groups.taxa[int(g)]
        record = dict(zip(RANKS[:position], taxon.ranks()))
        record[rank] = taxon.name_at(rank)
        if rank == "species":
            record["common_name"] = taxon.common_name
        record.update(taxon=clade_label(taxon, rank), num_taxa=int(counts[g]))
        records.append(record)
    return records
