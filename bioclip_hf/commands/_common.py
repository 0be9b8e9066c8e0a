"""Pieces shared by several sub-commands: the model flags and how skipped images are reported.

Standard library only at module level (`bioclip-hf --help` < 1 s).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any


def quiet_library_skip_warnings() -> None:
    """The CLI reports skipped images itself (`report_errors`); avoid the library's duplicate warnings."""
    import logging

    # its own logger object, so a move of the module cannot unhook this
    from bioclip_hf.inference import classifier_base

    classifier_base.logger.setLevel(logging.ERROR)


def report_errors(command: str, errors: Sequence[Mapping[str, str]]) -> None:
    """One stderr line per skipped image, then a count."""
    for error in errors:
        print(f"bioclip-hf {command}: skipped {error['file']}: {error['error']}", file=sys.stderr)
    if errors:
        print(f"bioclip-hf {command}: {len(errors)} image(s) skipped", file=sys.stderr)


def add_model_arguments(parser: Any, batch_size: int = 32, images: bool = True) -> None:
    """--model, --revision, --device, --batch-size, --no-progress (shared); --preprocess for commands that read images."""
    from bioclip_hf.hub.registry import DEFAULT_MODEL

    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"model folder or Hub id, hf-hub: prefix accepted (default: {DEFAULT_MODEL}; see list-models)")
    parser.add_argument("--revision", help="branch, tag or commit of the model repo (default: the registry's pin, else main)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    parser.add_argument("--batch-size", type=int, default=batch_size, help=f"batch size (default: {batch_size})")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    if images:
        parser.add_argument("--preprocess", choices=("open_clip", "pybioclip"), default=None,
                            help="image preprocessing: open_clip (the model's own preprocess_cfg, the default) or "
                                 "pybioclip (squash to the model size on the float tensor, as pybioclip does for "
                                 "Tree-of-Life models: identical answers to pybioclip)")  # fmt: skip
