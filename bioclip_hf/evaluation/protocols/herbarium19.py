"""Herbarium19 generalized category discovery: semi-supervised k-means, clustering accuracy on unlabelled images.

Follows Imageomics/bioclip-2 `src/evaluation/herbarium19.py` (from sgvaze/generalized-category-discovery
`data/herbarium_19.py`) and `faster_mix_k_means_pytorch.py` (see `semisup_kmeans.py`):

- images: `small-train` as torchvision `ImageFolder` lists it (class folders sorted, class index = position);
  `small-validation` is extracted by the original but never scored, so it is not read;
- class splits: `herbarium_19_class_splits.pkl` (shipped here as `herbarium19_class_splits.json`): 341 `Old`
  (labelled) and 342 `New` class indices; k = 683;
- labelled set: 80% of the Old-class images, `np.random.seed(0); np.random.choice(n, 0.8 n, replace=False)`
  (seed 0 always: `subsample_instances` is called with its default); the rest of small-train is unlabelled;
- per run (3, seeded `seed + run`): `semi_supervised_kmeans(u, l, l_labels, k, tolerance=1e-4,
  max_iterations=10, random_state=seed + run)`; score: Hungarian-matched clustering accuracy computed separately
  on unlabelled images of Old and of New classes, averaged over all unlabelled images; mean and std over runs.

Deviations: New classes are numbered after the Old ones in sorted order (the original uses a set's iteration
order; the Hungarian matching makes the score independent of it); an empty Old or New subset is skipped (the
original fails on it); features are float32 on the CPU (the original clusters fp16 autocast features on the GPU).
"""

from __future__ import annotations

import json
import logging
from importlib import resources

import numpy as np
import torch

from .base import TaskFeatures, imagefolder_order, mean_std, require_columns, resolve_options
from .semisup_kmeans import semi_supervised_kmeans

logger = logging.getLogger(__name__)

DEFAULTS = {
    "seed": 0,
    "runs": 3,
    "max_iterations": 10,
    "tolerance": 1e-4,
    "prop_train_labels": 0.8,
    "class_splits": None,
}


def class_splits() -> dict[str, list[int]]:
    """The original's `{"Old": [...], "New": [...]}` class indices (Old in the pickle's order)."""
    text = resources.files(__package__).joinpath("herbarium19_class_splits.json").read_text()
    data = json.loads(text)
    return {"Old": data["Old"], "New": data["New"]}


def cluster_acc(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per-image correctness after the Hungarian matching of clusters to classes (the original's `cluster_acc`).

    Example:
        >>> cluster_acc(np.array([0, 0, 1]), np.array([1, 1, 0])).tolist()
        [True, True, True]
    """
    from scipy.optimize import linear_sum_assignment  # the `eval` extra (scikit-learn's dependency)

    size = max(y_pred.max(), y_true.max()) + 1
    counts = np.zeros((size, size), dtype=int)
    np.add.at(counts, (y_pred, y_true), 1)
    _, columns = linear_sum_assignment(counts.max() - counts)
    return columns[y_pred] == y_true


def gcd_split(targets: np.ndarray, old: list[int], prop_train_labels: float) -> tuple[np.ndarray, np.ndarray]:
    """(labelled positions, unlabelled positions), both ascending, as `get_herbarium_datasets` splits small-train.

    Args:
        targets: ImageFolder class index per image (ImageFolder order).
        old: the labelled (Old) classes.
        prop_train_labels: share of Old-class images that are labelled.

    Example:
        >>> gcd_split(np.array([0, 0, 1, 1, 1]), [1], 0.8)
        (array([3, 4]), array([0, 1, 2]))
    """
    candidates = np.flatnonzero(np.isin(targets, old))
    if len(candidates) == 0:
        return candidates, np.arange(len(targets))
    chosen = np.random.RandomState(0).choice(
        range(len(candidates)), replace=False, size=(int(prop_train_labels * len(candidates)),)
    )
    mask = np.zeros(len(candidates), dtype=bool)
    mask[chosen] = True
    labelled = candidates[mask]
    return labelled, np.setdiff1d(np.arange(len(targets)), labelled)


def _ordered_targets(task: TaskFeatures) -> tuple[list[int], np.ndarray]:
    require_columns("herbarium19", task.rows, ("class", "filepath"))
    positions = [p for p, row in enumerate(task.rows) if row.get("split", "train") == "train"]
    if not positions:
        raise ValueError("herbarium19: no small-train rows (split == 'train')")
    order = imagefolder_order(task.rows, positions)
    classes = sorted({task.rows[p]["class"] for p in order})
    index = {name: i for i, name in enumerate(classes)}
    return order, np.array([index[task.rows[p]["class"]] for p in order])


def run_herbarium19(task: TaskFeatures, options: dict | None = None) -> dict[str, float]:
    """Herbarium19 score of one model's features.

    Args:
        task: small-train rows with `class` (the folder name) and `filepath` (rows whose `split` column is not
            `train` are ignored), normalised features.
        options: seed, runs, max_iterations, tolerance, prop_train_labels, class_splits (None: the original's;
            else `{"Old": [...], "New": [...]}`, for miniatures).

    Returns:
        `{"herbarium19_acc": mean, "herbarium19_acc_std": std}` over runs.

    Example:
        >>> run_herbarium19(task)  # doctest: +SKIP
        {'herbarium19_acc': 0.45, 'herbarium19_acc_std': 0.01}
    """
    options = resolve_options("herbarium19", options, DEFAULTS)
    splits = options["class_splits"] or class_splits()
    old, new = [int(c) for c in splits["Old"]], [int(c) for c in splits["New"]]
    order, targets = _ordered_targets(task)
    labelled, unlabelled = gcd_split(targets, old, options["prop_train_labels"])
    if len(labelled) == 0 or len(unlabelled) == 0:
        raise ValueError(
            f"herbarium19: needs labelled and unlabelled images, got {len(labelled)} and {len(unlabelled)}"
        )
    remap = {c: i for i, c in enumerate(old + sorted(set(targets.tolist()) - set(old)))}
    l_labels = torch.tensor([remap[t] for t in targets[labelled]], dtype=torch.long)
    u_labels = np.array([remap[t] for t in targets[unlabelled]])
    u_old = u_labels < len(old)
    features = torch.from_numpy(task.features[order])
    l_feats, u_feats = features[torch.from_numpy(labelled)], features[torch.from_numpy(unlabelled)]
    logger.info(
        "herbarium19: %d labelled, %d unlabelled images, k = %d", len(labelled), len(unlabelled), len(old) + len(new)
    )
    scores = []
    for run in range(options["runs"]):
        labels = semi_supervised_kmeans(
            u_feats,
            l_feats,
            l_labels,
            len(old) + len(new),
            tolerance=options["tolerance"],
            max_iterations=options["max_iterations"],
            random_state=options["seed"] + run,
        )
        predictions = labels[len(labelled) :].numpy()
        correct = np.zeros_like(u_labels)
        for subset in (u_old, ~u_old):
            if subset.any():
                correct[subset] = cluster_acc(u_labels[subset], predictions[subset])
        scores.append(float(correct.mean()))
        logger.info("herbarium19 run %d/%d clustering accuracy: %.4f", run + 1, options["runs"], scores[-1])
    return mean_std("herbarium19", "acc", scores)
