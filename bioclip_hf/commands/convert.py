"""`bioclip-hf convert`: open_clip Hub layout <-> transformers layout."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="folder or Hub repo id of the checkpoint to convert")
    parser.add_argument("output", help="folder to write")
    parser.add_argument(
        "--to", choices=("hf", "open_clip"), default="hf",
        help="target format: 'hf' (transformers, default) or 'open_clip' (open_clip/pybioclip Hub layout)",
    )
    parser.add_argument("--allow-pickle", action="store_true", help="allow reading pickle (.bin/.pt) weights")
    parser.add_argument("--revision", help="branch, tag or commit of a Hub source (default: the registry's pinned "
                        "commit for released models, else main)")  # fmt: skip
    parser.add_argument("--also-pickle", action="store_true", help="with --to open_clip: also write open_clip_pytorch_model.bin")


def run(args: argparse.Namespace) -> int:
    from bioclip_hf.models.convert import convert_open_clip_checkpoint, export_to_open_clip

    if args.to == "hf":
        path = convert_open_clip_checkpoint(args.source, args.output, allow_pickle=args.allow_pickle, revision=args.revision)
    else:
        path = export_to_open_clip(args.source, args.output, also_pickle=args.also_pickle, allow_pickle=args.allow_pickle,
                                   revision=args.revision)  # fmt: skip
    print(path)
    return 0
