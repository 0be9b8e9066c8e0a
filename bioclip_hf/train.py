"""`python -m bioclip_hf.train` / `accelerate launch -m bioclip_hf.train run.yaml`: the launch target of training.

Every process of an `accelerate launch` runs this; the trainer itself is `bioclip_hf.training.trainer`.
"""

from __future__ import annotations

import logging
import os
import sys

from bioclip_hf.training.config import parse_config
from bioclip_hf.training.trainer import train

__all__ = ["main", "train"]


def main(argv: list[str] | None = None) -> int:
    """Parse `[CONFIG.yaml] [--recipe NAME] [--setting value ...]`, train, print the model folder (main process)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = parse_config(sys.argv[1:] if argv is None else argv)
    model_dir = train(config)
    if int(os.environ.get("RANK", "0")) == 0:  # one line per run, not per process
        print(model_dir)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
