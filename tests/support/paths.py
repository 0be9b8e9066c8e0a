"""Where things are: the repository checkout, its `dataset_scripts/` and the shared real photos."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DATASET_SCRIPTS = REPO_ROOT / "dataset_scripts"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
BIRDS = SHARED_DATA / "birds525"


def import_dataset_scripts() -> Path:
    """Make `dataset_scripts/*.py` importable (they are scripts, not a package) and return the folder."""
    if str(DATASET_SCRIPTS) not in sys.path:
        sys.path.insert(0, str(DATASET_SCRIPTS))
    return DATASET_SCRIPTS
