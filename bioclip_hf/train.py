"""Launch target kept at its documented path: `accelerate launch -m bioclip_hf.train run.yaml`.

The trainer lives in `bioclip_hf.training.trainer`; this module only forwards to it.
"""

from __future__ import annotations

import sys

from bioclip_hf.training.trainer import main, train

__all__ = ["main", "train"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
