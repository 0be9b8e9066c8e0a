"""`bioclip-hf finetune DATA --model M --output-dir OUT`: fine-tune on your own labelled photos, measure before/after,
write a model folder that predicts its own classes (see `bioclip_hf.training.finetune`).

Several GPUs: `accelerate launch -m bioclip_hf.cli finetune DATA ...`.
"""

from __future__ import annotations

import argparse
import dataclasses

# Flags named differently from their FinetuneConfig field (the field's own spelling works too).
ALIASES = {"learning_rate": ("--lr",)}
_CONVERTERS = {"int": int, "float": float, "str": str}
# Fields set by the positional DATA or shown with a fixed help, not generated.
_SPECIAL = {"data", "resume"}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _converter(type_name: str):
    base = str(type_name).replace(" | None", "").strip()
    return _CONVERTERS.get(base, str)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Standard library only (fast --help): one flag per FinetuneConfig field, parsed to the field's type here and
    # validated by transformers.HfArgumentParser in `run` (the same path as a --config YAML).
    from bioclip_hf.training.finetune_config import FinetuneConfig

    parser.epilog = ("several GPUs: accelerate launch -m bioclip_hf.cli finetune DATA ...; every flag can also be set "
                     "in the --config YAML (field names with underscores)")  # fmt: skip
    parser.add_argument("data", nargs="?", default=argparse.SUPPRESS, metavar="DATA",
                        help="labelled photos: a folder of class folders, a .csv/.tsv/.parquet table, a datasets folder "
                             "(save_to_disk) or a Hub dataset id")  # fmt: skip
    parser.add_argument("--config", default=None, metavar="RUN.yaml", help="YAML file of settings (flags override it)")
    parser.add_argument("--resume", nargs="?", const="latest", default=argparse.SUPPRESS, metavar="CHECKPOINT",
                        help="continue a stopped run in --output-dir from its latest checkpoint (or the one given)")  # fmt: skip
    for item in dataclasses.fields(FinetuneConfig):
        if item.name in _SPECIAL:
            continue
        flags = [_flag(item.name), *ALIASES.get(item.name, ())]
        if item.name != item.name.replace("_", "-"):
            flags.append("--" + item.name)  # the YAML spelling
        help_text = f"{item.metadata.get('help', '')} (default: {item.default})"
        if str(item.type).startswith("bool"):
            parser.add_argument(*flags, dest=item.name, nargs="?", const="true", default=argparse.SUPPRESS,
                                metavar="BOOL", help=help_text)  # fmt: skip
        else:
            parser.add_argument(*flags, dest=item.name, type=_converter(item.type), default=argparse.SUPPRESS,
                                metavar=item.name.upper(), help=help_text)  # fmt: skip


def config_from_args(args: argparse.Namespace):
    """The `FinetuneConfig` of the parsed flags (over the --config YAML, over the defaults)."""
    from bioclip_hf.training.finetune_config import FinetuneConfig, parse_finetune_config

    argv = ["--config", args.config] if getattr(args, "config", None) else []
    for item in dataclasses.fields(FinetuneConfig):
        if hasattr(args, item.name):
            argv += [f"--{item.name}", str(getattr(args, item.name))]
    return parse_finetune_config(argv)


def run(args: argparse.Namespace) -> int:
    from bioclip_hf.commands._common import report_errors
    from bioclip_hf.training.finetune import finetune

    result = finetune(config_from_args(args))
    report_errors("finetune", [{"file": key, "error": reason} for key, reason in result.skipped.items()])
    held_out = result.results["held_out"]
    for when in ("before", "after"):
        scores = held_out.get(when)
        if scores:
            top5 = f", top-5 {100 * scores['top5_accuracy']:.1f}%" if "top5_accuracy" in scores else ""
            print(f"{when}: held-out top-1 {100 * scores['top1_accuracy']:.1f}%{top5} ({scores['num_examples']} photos)")
    forgetting = result.results["forgetting"]
    if forgetting.get("measured"):
        print(f"forgetting ({', '.join(forgetting['tasks'])}): top-1 {100 * forgetting['before']:.1f}% -> "
              f"{100 * forgetting['after']:.1f}%")  # fmt: skip
    print(result.output_dir)
    if result.hub_url:
        print(result.hub_url)
    return 0
