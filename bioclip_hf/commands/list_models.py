"""`bioclip-hf list-models`: the released models this package knows (Hub id, pinned revision, architecture,
embedding size, Tree-of-Life index), like pybioclip's `list-models`."""

from __future__ import annotations

import argparse

from bioclip_hf.inference.records import FORMATS, write_records

EPILOG = ("Any other open_clip (hf-hub:org/name) or transformers CLIP checkpoint also works with --labels, --bins, "
          "--few-shot and embed; Tree-of-Life prediction needs one of these models or --index from build-index. "
          "'main (unpinned)' revisions are resolved when loading, and predict --log records the commit obtained.")  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    parser.add_argument("--output", "-o", help="output file (default: stdout)")


def run(args: argparse.Namespace) -> int:
    from bioclip_hf.hub.registry import registry_rows

    write_records(registry_rows(), args.format, args.output)
    return 0
