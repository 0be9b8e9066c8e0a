"""`bioclip-hf embed`: image embeddings to Parquet (key + embedding columns, model in the metadata), .npy
(+ .files.txt) or a Parquet dataset folder; optionally published as a Hub dataset."""

from __future__ import annotations

import argparse

from bioclip_hf.inference.records import add_model_arguments, quiet_library_skip_warnings
from bioclip_hf.inference.runs import add_input_arguments, add_run_arguments
from bioclip_hf.treeoflife.taxonomy import RANKS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser)
    parser.add_argument("--output", "-o", required=True,
                        help="emb.parquet (key, embedding), emb.npy (+ emb.files.txt) or folder/ (Parquet dataset)")  # fmt: skip
    parser.add_argument("--no-normalize", action="store_true", help="keep raw (not unit-length) embeddings")
    parser.add_argument("--embedding-dtype", choices=("float32", "float16"), default="float32",
                        help="stored precision (float16: half the size; default: float32)")  # fmt: skip
    parser.add_argument("--predict-rank", type=str.lower, choices=RANKS, metavar="RANK",
                        help="also store each image's top Tree-of-Life prediction at RANK (lineage, taxon, score "
                        "columns), e.g. to colour an embedding explorer")  # fmt: skip
    parser.add_argument("--index", help="Tree-of-Life index for --predict-rank (default: the model's)")
    add_model_arguments(parser)
    add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from bioclip_hf.inference.batch import process_state
    from bioclip_hf.inference.classify import BaseClassifier, TreeOfLifeClassifier
    from bioclip_hf.inference.parquet import embeddings_table
    from bioclip_hf.inference.runs import check_batch_resume, make_source, plan_embed_output, run_batch, wants_batch_run
    from bioclip_hf.utils.errors import UsageError

    quiet_library_skip_warnings()
    plan = plan_embed_output(args.output)
    if args.index and not args.predict_rank:
        raise UsageError("--index is used with --predict-rank only")
    if args.predict_rank and plan.fmt == "npy":
        raise UsageError("--predict-rank adds columns: write a .parquet file or a folder, not .npy")
    state = process_state()
    wants_batch_run(args, plan, state.world_size)
    source = make_source(args)
    check_batch_resume(args, plan, source)  # before the model loads
    common = dict(model_name_or_path=args.model, revision=args.revision, device=state.device(args.device),
                  batch_size=args.batch_size, progress=not args.no_progress, preprocess=args.preprocess)  # fmt: skip
    embedder = TreeOfLifeClassifier(index=args.index, **common) if args.predict_rank else BaseClassifier(**common)

    def to_table(keys, features):
        table = embeddings_table(keys, source.key_column, features.cpu().numpy(), args.embedding_dtype)
        if args.predict_rank:
            table = with_top_prediction(table, embedder, features, args.predict_rank)
        return table

    return run_batch(args, plan, embedder, source, state, to_table, normalize=not args.no_normalize).code


def with_top_prediction(table, classifier, features, rank: str):
    """`table` plus the columns of each image's top-1 prediction at `rank` (its record minus file and rank)."""
    import torch

    unit = torch.nn.functional.normalize(features, dim=-1)  # --no-normalize keeps raw features in the table only
    records = {record["file"]: record for record in classifier.predict_features(range(len(unit)), unit, 1, rank=rank)}
    for name in [c for c in next(iter(records.values())) if c not in ("file", "rank")] if records else []:
        table = table.append_column(name, [[records.get(i, {}).get(name) for i in range(len(unit))]])
    return table
