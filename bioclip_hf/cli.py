"""`bioclip-hf` command line: one entry point, one sub-command per task.

Sub-command modules import only the standard library at module level (heavy imports happen in
their `run`), so `bioclip-hf --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from bioclip_hf.utils.errors import UsageError

# name -> (module, one-line help). Each module defines add_arguments(parser) and run(args) -> int.
COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("bioclip_hf.commands.convert", "convert checkpoints between open_clip and transformers formats"),
    "predict": ("bioclip_hf.commands.predict", "classify photos: Tree-of-Life taxa, custom labels, bins or few-shot"),
    "embed": ("bioclip_hf.commands.embed", "write image embeddings to parquet or npy"),
    "list-taxa": ("bioclip_hf.commands.list_taxa", "list the taxa (or clades at a rank) of a Tree-of-Life index"),
    "list-models": ("bioclip_hf.commands.list_models", "list the released models, their revisions and Tree-of-Life indexes"),
    "build-index": ("bioclip_hf.commands.build_index", "embed a taxa table into a Tree-of-Life index"),
    "train": ("bioclip_hf.commands.train", "train or fine-tune a BioCLIP model (contrastive, accelerate)"),
    "finetune": ("bioclip_hf.commands.finetune", "fine-tune on your own labelled photos (LoRA/full/head), with before/after and forgetting"),
    "push": ("bioclip_hf.commands.push", "upload a model + processor + model card (+ open_clip copy) to the Hub"),
    "evaluate": ("bioclip_hf.commands.evaluate", "zero-shot and few-shot benchmark harness over task specs"),
}


# The library's user-facing error, under the name earlier callers imported from here.
CLIError = UsageError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bioclip-hf", description="BioCLIP for the Tree of Life, Hugging Face-native.")
    parser.add_argument("--verbose", "-v", action="store_true", help="log progress details")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def configure_logging(verbose: bool) -> None:
    """One stderr handler for every log record: INFO and up with --verbose, WARNING and up otherwise."""
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # huggingface_hub gives its logger a stderr handler of its own *and* lets records propagate to the root one,
    # so each of its messages would print twice: keep only ours, at the CLI's level.
    from huggingface_hub.utils import logging as hub_logging  # noqa: F401  (installs that handler first)

    hub_root = logging.getLogger("huggingface_hub")
    for handler in list(hub_root.handlers):
        hub_root.removeHandler(handler)
    hub_root.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    """Run `bioclip-hf` with `argv` (defaults to `sys.argv[1:]`); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("bioclip-hf: interrupted", file=sys.stderr)
        return 130
    except (UsageError, ValueError, TypeError, KeyError, OSError, RuntimeError, ImportError) as err:
        if args.debug:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, KeyError):
            message = f"missing key {message}"
        print(f"bioclip-hf {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
