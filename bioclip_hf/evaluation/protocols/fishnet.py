"""FishNet functional-trait prediction: an MLP probe on frozen features, exact-match accuracy over nine traits.

Follows Imageomics/bioclip-2 `src/evaluation/fishnet.py` with `slurm/eval_other.sh`'s arguments (lr 1e-4,
50 epochs, batch 256, a test pass every 10 epochs, 3 runs seeded `seed + run`):

- images: the rows of `train.csv` and `test.csv`, dropping rows where any of the nine trait columns is empty
  (the original's null filter);
- targets: `FeedingPath` (pelagic -> 1, benthic -> 0, anything else is an error) and the habitat/climate columns
  `Tropical, Temperate, Subtropical, Boreal, Polar, freshwater, saltwater, brackish` (0/1);
- features: the image encoder's output before L2 normalisation (`TaskFeatures.raw_features`), as the script uses;
- score: the fraction of test images whose nine predicted traits all match; mean and std over the runs.

The original reads the trait columns by position (15-23 after polars' row index); here they are read by the names
its null filter uses. See `mlp_probe.py` for the training loop and its deviations.
"""

from __future__ import annotations

import logging

import numpy as np

from .base import TaskFeatures, mean_std, require_columns, require_raw_features, resolve_options
from .mlp_probe import run_probe

logger = logging.getLogger(__name__)

TRAIT_COLUMNS = (
    "FeedingPath",
    "Tropical",
    "Temperate",
    "Subtropical",
    "Boreal",
    "Polar",
    "freshwater",
    "saltwater",
    "brackish",
)
DEFAULTS = {"seed": 0, "runs": 3, "epochs": 50, "lr": 1e-4, "batch_size": 256, "eval_every": 10}
_FEEDING = {"pelagic": 1, "benthic": 0}


def trait_targets(row: dict[str, str]) -> list[float] | None:
    """The nine 0/1 targets of a row, or None when a trait is empty (the row is dropped).

    Example:
        >>> row = dict.fromkeys(TRAIT_COLUMNS, "0") | {"FeedingPath": "pelagic", "Polar": "1"}
        >>> trait_targets(row)
        [1, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    """
    values = [row[column].strip() for column in TRAIT_COLUMNS]
    if any(value == "" for value in values):
        return None
    if values[0] not in _FEEDING:
        raise ValueError(f"fishnet: FeedingPath can only be pelagic or benthic, got {values[0]!r}")
    try:
        return [_FEEDING[values[0]], *(float(value) for value in values[1:])]
    except ValueError:
        raise ValueError(f"fishnet: trait values must be numbers (0/1), got {values[1:]}") from None


def exact_match_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of images whose predicted traits all equal the targets (the original's `evaluate`)."""
    correct = np.all(y_pred == y_true, axis=1)
    return float(np.sum(correct) / len(y_pred))


def run_fishnet(task: TaskFeatures, options: dict | None = None) -> dict[str, float]:
    """FishNet score of one model's features.

    Args:
        task: rows with `split` (`train` / `test`: the CSV each came from) and the nine `TRAIT_COLUMNS`, in CSV
            order; `raw_features` set.
        options: seed, runs, epochs, lr, batch_size, eval_every (defaults: the published run's).

    Returns:
        `{"fishnet_acc": mean, "fishnet_acc_std": std}` over runs.

    Example:
        >>> run_fishnet(task)  # doctest: +SKIP
        {'fishnet_acc': 0.82, 'fishnet_acc_std': 0.004}
    """
    options = resolve_options("fishnet", options, DEFAULTS)
    require_columns("fishnet", task.rows, ("split", *TRAIT_COLUMNS))
    raw = require_raw_features("fishnet", task)
    kept: dict[str, list[int]] = {"train": [], "test": []}
    targets: dict[str, list[list[float]]] = {"train": [], "test": []}
    for position, row in enumerate(task.rows):
        split = row["split"].strip()
        if split not in kept:
            raise ValueError(f"fishnet: split must be train or test, got {split!r} (row {position})")
        values = trait_targets(row)
        if values is not None:
            kept[split].append(position)
            targets[split].append(values)
    dropped = len(task.rows) - len(kept["train"]) - len(kept["test"])
    logger.info(
        "fishnet: %d train, %d test images (%d with empty traits dropped)",
        len(kept["train"]),
        len(kept["test"]),
        dropped,
    )
    scores = run_probe(
        raw[kept["train"]],
        np.asarray(targets["train"], dtype=np.float32),
        raw[kept["test"]],
        np.asarray(targets["test"], dtype=np.float32),
        exact_match_accuracy,
        options,
    )
    return mean_std("fishnet", "acc", scores)
