"""`bioclip-hf train`: contrastive training from a YAML run config and/or flags (see `bioclip_hf.training.trainer`)."""

from __future__ import annotations

import argparse
import dataclasses


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Standard library only (fast `--help`): flags mirror the TrainConfig fields; values are typed and
    # validated in `run` by transformers.HfArgumentParser, the same parser `python -m bioclip_hf.train` uses.
    from bioclip_hf.training.config import TrainConfig

    parser.epilog = "multi-process: accelerate launch -m bioclip_hf.train [CONFIG.yaml] [--setting value ...]"
    parser.add_argument("config", nargs="?", default=None, help="YAML file of settings (flags override it)")
    parser.add_argument("--recipe", default=argparse.SUPPRESS, metavar="NAME",
                        help="a shipped recipe (bioclip, bioclip-2) whose settings are the defaults")  # fmt: skip
    for item in dataclasses.fields(TrainConfig):
        is_bool = item.type in (bool, "bool")
        parser.add_argument(
            f"--{item.name}", default=argparse.SUPPRESS, help=f"{item.metadata.get('help', '')} (default: {item.default})",
            **({"nargs": "?", "const": "true", "metavar": "BOOL"} if is_bool else {"metavar": item.name.upper()}),
        )


def run(args: argparse.Namespace) -> int:
    from bioclip_hf.training.config import TrainConfig, parse_config
    from bioclip_hf.training.trainer import train

    argv = [args.config] if args.config else []
    if getattr(args, "recipe", None):
        argv += ["--recipe", args.recipe]
    for item in dataclasses.fields(TrainConfig):
        if hasattr(args, item.name):
            argv += [f"--{item.name}", str(getattr(args, item.name))]
    print(train(parse_config(argv)))
    return 0
