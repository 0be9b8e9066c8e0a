"""`bioclip-hf embed`: image embeddings to Parquet (key + embedding columns, model in the metadata), .npy
(+ .files.txt) or a Parquet dataset folder; optionally published as a Hub dataset."""

from __future__ import annotations

import argparse

from ._batch import add_input_arguments, add_run_arguments
from ._records import add_model_arguments, quiet_library_skip_warnings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser)
    parser.add_argument("--output", "-o", required=True,
                        help="emb.parquet (key, embedding), emb.npy (+ emb.files.txt) or folder/ (Parquet dataset)")  # fmt: skip
    parser.add_argument("--no-normalize", action="store_true", help="keep raw (not unit-length) embeddings")
    parser.add_argument("--embedding-dtype", choices=("float32", "float16"), default="float32",
                        help="stored precision (float16: half the size; default: float32)")  # fmt: skip
    add_model_arguments(parser)
    add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..batch_inference import process_state
    from ..classify import BaseClassifier
    from ..parquet_output import embeddings_table
    from ._batch import check_batch_resume, make_source, plan_embed_output, run_batch, wants_batch_run

    quiet_library_skip_warnings()
    plan = plan_embed_output(args.output)
    state = process_state()
    wants_batch_run(args, plan, state.world_size)
    source = make_source(args)
    check_batch_resume(args, plan, source)  # before the model loads
    embedder = BaseClassifier(model_name_or_path=args.model, device=state.device(args.device), batch_size=args.batch_size,
                              progress=not args.no_progress)  # fmt: skip

    def to_table(keys, features):
        return embeddings_table(keys, source.key_column, features.cpu().numpy(), args.embedding_dtype)

    return run_batch(args, plan, embedder, source, state, to_table, normalize=not args.no_normalize)
