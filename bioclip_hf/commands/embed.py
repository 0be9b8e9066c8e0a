"""`bioclip-hf embed`: image embeddings to Parquet (key + embedding columns, model in the metadata), .npy
(+ .files.txt) or a Parquet dataset folder; optionally published as a Hub dataset."""

from __future__ import annotations

import argparse

from bioclip_hf.commands._common import add_model_arguments, quiet_library_skip_warnings
from bioclip_hf.commands._runs import add_input_arguments, add_run_arguments
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
    from bioclip_hf.commands._runs import apply_speed_options, open_inputs, report, run_options
    from bioclip_hf.inference.batch import process_state
    from bioclip_hf.inference.classify import BaseClassifier, TreeOfLifeClassifier
    from bioclip_hf.inference.runs import check_embed_output, plan_embed_output
    from bioclip_hf.utils.errors import UsageError

    quiet_library_skip_warnings()
    plan = plan_embed_output(args.output, flags=True)
    if args.index and not args.predict_rank:
        raise UsageError("--index is used with --predict-rank only")
    check_embed_output(plan, args.predict_rank, flags=True)
    state = process_state()
    batch, _ = open_inputs(args, plan, state)  # before the model loads
    common = dict(model_name_or_path=args.model, revision=args.revision, device=state.device(args.device),
                  batch_size=args.batch_size, progress=not args.no_progress, preprocess=args.preprocess,
                  dtype=args.dtype, quantize=args.quantize)  # fmt: skip
    embedder = TreeOfLifeClassifier(index=args.index, **common) if args.predict_rank else BaseClassifier(**common)
    apply_speed_options(embedder, args)
    result = batch.embed(embedder, normalize=not args.no_normalize, embedding_dtype=args.embedding_dtype,
                         predict_rank=args.predict_rank, run_options=run_options(args))  # fmt: skip
    report(args, batch, result, f"{result.rows} embeddings of dim {embedder.model.config.projection_dim}")
    return result.code
