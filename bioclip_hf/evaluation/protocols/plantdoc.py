"""PlantDoc disease classification: 1-shot SimpleShot (biobench's variant), accuracy on the test split.

Follows Imageomics/bioclip-2 `src/evaluation/plantdoc.py` and `src/evaluation/simpleshot.py` (from biobench):

- images: `train/` and `test/` as torchvision `ImageFolder`s (each split numbers its own sorted class folders);
  the train features come in the order of the original's `DataLoader(shuffle=True)` right after
  `random_seed(seed)`, which decides which image a repeat picks (`base.loader_permutation`);
- per repeat r (`n_repeats`, default 5): `np.random.seed(seed + r)`; per class (sorted), shuffle its train
  positions and keep the first k = 1; shuffle the chosen positions;
- SimpleShot: centre support and test features on the support mean, L2-normalise, `sklearn NearestCentroid`
  centroids, each test image takes the class of the nearest centroid (`torch.linalg.vector_norm`, argmin, in
  batches of 256); score: mean accuracy over repeats (and its std).

Deviation: none in the arithmetic (CPU). The extraction order reproduces torch's draws for rank 0 from the CPU
generator; the test split's order does not affect the score, so it is not reproduced.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from .base import TaskFeatures, imagefolder_order, loader_permutation, mean_std, require_columns, resolve_options

logger = logging.getLogger(__name__)

DEFAULTS = {"seed": 0, "repeats": 5, "shots": 1, "batch_size": 256}


def choose_k_per_class(labels: np.ndarray, k: int, random_state: np.random.RandomState) -> np.ndarray:
    """At most `k` positions per class, drawn and mixed as the original's `choose_k_per_class`.

    Example:
        >>> choose_k_per_class(np.array([0, 0, 1, 1]), 1, np.random.RandomState(0)).tolist()  # doctest: +SKIP
        [2, 1]
    """
    chosen = np.array([], dtype=int)
    for label in np.unique(labels):
        positions = np.where(labels == label)[0]
        random_state.shuffle(positions)
        chosen = np.concatenate((chosen, positions[:k]))
    random_state.shuffle(chosen)
    return chosen


def _l2_normalize(x: torch.Tensor) -> torch.Tensor:
    return x / np.linalg.norm(x, ord=2, axis=1, keepdims=True)


def simpleshot_scores(
    x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """0/1 score per test image under SimpleShot (biobench's `simpleshot`, on the CPU).

    Args:
        x_train, y_train: support features `[S, D]` and labels.
        x_test, y_test: test features and labels.
        batch_size: test images per distance batch.
    """
    import sklearn.neighbors  # the `eval` extra

    mean = x_train.mean(axis=0, keepdims=True)
    x_train = _l2_normalize(x_train - mean)
    x_test = _l2_normalize(x_test - mean)
    classifier = sklearn.neighbors.NearestCentroid()
    with np.errstate(invalid="ignore", divide="ignore"):  # its per-feature spread of 1 image per class is 0 / 0
        classifier.fit(x_train, y_train)
    centroids = torch.from_numpy(classifier.centroids_)
    scores = []
    for start in range(0, len(x_test), batch_size):
        distances = torch.linalg.vector_norm(x_test[start : start + batch_size][:, None] - centroids, axis=2)
        scores.append((torch.argmin(distances, dim=1) == y_test[start : start + batch_size]).type(torch.float32))
    return torch.cat(scores, axis=0)


def _split(task: TaskFeatures, split: str) -> tuple[list[int], torch.Tensor]:
    positions = imagefolder_order(task.rows, [p for p, row in enumerate(task.rows) if row["split"] == split])
    if not positions:
        raise ValueError(f"plantdoc: no {split} images (column 'split' == {split!r})")
    classes = sorted({task.rows[p]["class"] for p in positions})
    index = {name: i for i, name in enumerate(classes)}
    return positions, torch.tensor([index[task.rows[p]["class"]] for p in positions])


def run_plantdoc(task: TaskFeatures, options: dict | None = None) -> dict[str, float]:
    """PlantDoc score of one model's features.

    Args:
        task: rows with `split` (train / test: the folder), `class` (the class folder name) and `filepath`,
            normalised features.
        options: seed, repeats, shots, batch_size.

    Returns:
        `{"plantdoc_1_shot_acc": mean, "plantdoc_1_shot_acc_std": std}` over repeats (1 is `shots`).

    Example:
        >>> run_plantdoc(task)  # doctest: +SKIP
        {'plantdoc_1_shot_acc': 0.31, 'plantdoc_1_shot_acc_std': 0.02}
    """
    options = resolve_options("plantdoc", options, DEFAULTS)
    require_columns("plantdoc", task.rows, ("split", "class", "filepath"))
    train, y_train = _split(task, "train")
    test, y_test = _split(task, "test")
    order = loader_permutation(len(train), torch.Generator().manual_seed(options["seed"]))
    x_train = torch.from_numpy(task.features[train])[order]
    y_train = y_train[order]
    x_test = torch.from_numpy(task.features[test])
    scores = []
    for repeat in range(options["repeats"]):
        chosen = torch.from_numpy(
            choose_k_per_class(y_train.numpy(), options["shots"], np.random.RandomState(options["seed"] + repeat))
        )
        result = simpleshot_scores(x_train[chosen], y_train[chosen], x_test, y_test, options["batch_size"])
        scores.append(float(torch.mean(result)))
    return mean_std("plantdoc", f"{options['shots']}_shot_acc", scores)
