"""AwA2 attribute prediction: an MLP probe on frozen features predicting the 85 binary class attributes.

Follows Imageomics/bioclip-2 `src/evaluation/awa2.py` with `slurm/eval_other.sh`'s arguments (lr 1e-5, 50 epochs,
batch 256, a test pass every 10 epochs, 3 runs seeded `seed + run`):

- train images: those of the classes in `trainclasses.txt`; test images: `testclasses.txt` (AwA2's proposed
  unseen-class split), grouped class by class in the order of those files;
- targets: the class's row of `predicate-matrix-binary.txt` (rows follow `classes.txt`);
- features: the image encoder's output before L2 normalisation (`TaskFeatures.raw_features`), as the script uses;
- score: `sklearn.metrics.f1_score(y_true, y_pred, average="macro", labels=np.unique(y_true))`; mean and std
  over the runs.

Kept on purpose because the published number came from it: with multilabel targets sklearn reads `labels` as
column indices, and `np.unique` of 0/1 targets is `[0, 1]`, so the macro F1 covers the first two attributes
(black, white), not all 85.

Deviations: `classes.txt` lines may carry AwA2's leading index (`1\tantelope`): the class is the line's last
field (the original compares whole lines, so it needs index-free files); within a class the images keep the row
order (the original takes `os.listdir` order, which the file system decides). See `mlp_probe.py` for the loop.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .base import TaskFeatures, mean_std, require_columns, require_raw_features, resolve_options
from .mlp_probe import run_probe

logger = logging.getLogger(__name__)

DEFAULTS = {"seed": 0, "runs": 3, "epochs": 50, "lr": 1e-5, "batch_size": 256, "eval_every": 10}
FILES = ("classes.txt", "trainclasses.txt", "testclasses.txt", "predicate-matrix-binary.txt")


def _class_lines(path: Path) -> list[str]:
    return [line.split()[-1] for line in path.read_text().splitlines() if line.strip()]


def read_attributes(root: Path) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """(attribute vector per class, train classes, test classes) from AwA2's text files in `root`.

    Args:
        root: the AwA2 folder (`Animals_with_Attributes2`).

    Example:
        >>> attributes, train, test = read_attributes(Path("Animals_with_Attributes2"))  # doctest: +SKIP
    """
    if root is None:
        raise ValueError("awa2: TaskFeatures.root must be the AwA2 folder (it holds " + ", ".join(FILES) + ")")
    for name in FILES:
        if not (Path(root) / name).is_file():
            raise ValueError(f"awa2: {name} is missing in {root}")
    classes = _class_lines(root / "classes.txt")
    matrix = [line for line in (root / "predicate-matrix-binary.txt").read_text().splitlines() if line.strip()]
    if len(matrix) != len(classes):
        raise ValueError(f"awa2: predicate-matrix-binary.txt has {len(matrix)} rows for {len(classes)} classes")
    try:
        attributes = {name: np.array([int(v) for v in line.split()]) for name, line in zip(classes, matrix)}
    except ValueError:
        raise ValueError("awa2: predicate-matrix-binary.txt must hold 0/1 integers") from None
    train, test = _class_lines(root / "trainclasses.txt"), _class_lines(root / "testclasses.txt")
    for name in train + test:
        if name not in attributes:
            raise ValueError(f"awa2: class {name!r} of trainclasses/testclasses.txt is not in classes.txt")
    return attributes, train, test


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The original's score, `f1_score(..., average="macro", labels=np.unique(y_true))` (see the module notes)."""
    import sklearn.metrics  # the `eval` extra

    return float(sklearn.metrics.f1_score(y_true, y_pred, average="macro", labels=np.unique(y_true)))


def split_positions(rows: list[dict[str, str]], classes: list[str]) -> list[int]:
    """Row positions of `classes`' images, class by class in list order (row order kept within a class)."""
    by_class: dict[str, list[int]] = {name: [] for name in classes}
    for position, row in enumerate(rows):
        if row["class"] in by_class:
            by_class[row["class"]].append(position)
    return [position for name in classes for position in by_class[name]]


def run_awa2(task: TaskFeatures, options: dict | None = None) -> dict[str, float]:
    """AwA2 score of one model's features.

    Args:
        task: rows with `class` (the folder under JPEGImages/), `root` the AwA2 folder, `raw_features` set.
        options: seed, runs, epochs, lr, batch_size, eval_every (defaults: the published run's).

    Returns:
        `{"awa2_macro_f1": mean, "awa2_macro_f1_std": std}` over runs.

    Example:
        >>> run_awa2(task)  # doctest: +SKIP
        {'awa2_macro_f1': 0.71, 'awa2_macro_f1_std': 0.01}
    """
    options = resolve_options("awa2", options, DEFAULTS)
    require_columns("awa2", task.rows, ("class",))
    raw = require_raw_features("awa2", task)
    attributes, train_classes, test_classes = read_attributes(task.root)
    train, test = split_positions(task.rows, train_classes), split_positions(task.rows, test_classes)
    logger.info("awa2: %d train, %d test images", len(train), len(test))

    def targets(positions: list[int]) -> np.ndarray:
        return np.stack([attributes[task.rows[p]["class"]] for p in positions]) if positions else np.zeros((0, 85))

    scores = run_probe(raw[train], targets(train), raw[test], targets(test), macro_f1, options)
    return mean_std("awa2", "macro_f1", scores)
