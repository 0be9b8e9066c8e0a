"""Few-shot (SimpleShot) accuracy as BioCLIP 2 evaluates its species tasks.

Follows Imageomics/bioclip-2 `src/evaluation/classification.py` (`split_few_shot_examples`, `cl2n`,
`get_few_shot_accuracy`, `evaluate_few_shot`), the combined script its `slurm/eval.sh` runs, with
`--nfold 5 --kshot_list 1 5`:

- classes in order of first appearance; for fold `f`, `random.seed(f)` then, class by class, `random.shuffle` of a
  copy of the class's images; the first k are the support set, the rest the queries;
- centre support and queries on the support mean, L2-normalise (CL2N), average each class's k support vectors;
- each query takes the label of the nearest centroid (Euclidean); accuracy over all queries; mean and `np.std`
  over folds.

Deviations: the distances are computed in blocks of queries (the original materialises `[C, N, D]` at once; each
distance is the same numpy reduction, so the results are equal); `seed` offsets the per-fold seeds (0, the
original, gives `random.seed(fold)`). Few-shot in `few_shot.py` (the older script) shuffles the class lists in place,
so its folds compound; `classification.py`, used for the published runs, copies them; this follows the latter.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import numpy as np
from numpy import linalg

logger = logging.getLogger(__name__)

# Queries per distance block: C x block x D float32 values stay near 256 MiB.
_BLOCK_BYTES = 256 * 2**20


def class_groups(labels: np.ndarray) -> dict[int, list[int]]:
    """Row positions per label, labels in order of first appearance (the original's `select` dict)."""
    groups: dict[int, list[int]] = {}
    for position, label in enumerate(np.asarray(labels).tolist()):
        groups.setdefault(int(label), []).append(position)
    return groups


def split_support(groups: dict[int, list[int]], kshot: int, seed: int) -> tuple[list[int], list[int]]:
    """(support positions, k per class in class order; query positions) for one fold seeded with `seed`.

    Args:
        groups: from `class_groups`.
        kshot: support images per class.
        seed: `random.seed` of the fold.

    Example:
        >>> split_support({0: [0, 1], 1: [2, 3]}, 1, 0)
        ([0, 2], [1, 3])
    """
    rng = random.Random(seed)
    support: list[int] = []
    queries: list[int] = []
    for label, positions in groups.items():
        if len(positions) < kshot:
            raise ValueError(f"few-shot: class {label} has only {len(positions)} images, fewer than k = {kshot}")
        if len(positions) < kshot + 5:
            logger.debug("class %s has only %d images, few queries for %d-shot", label, len(positions), kshot)
        order = list(positions)
        rng.shuffle(order)
        support.extend(order[:kshot])
        queries.extend(order[kshot:])
    return support, queries


def _cl2n(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    x = x - mean
    return x / linalg.norm(x, 2, 1)[:, None]


def nearest_centroid_predictions(
    support: np.ndarray, support_labels: np.ndarray, queries: np.ndarray, kshot: int
) -> np.ndarray:
    """Labels the original's CL2N nearest-centroid rule gives the queries.

    Args:
        support: `[C * k, D]` support features grouped by class (k consecutive rows per class).
        support_labels: `[C * k]` their labels.
        queries: `[M, D]` query features.
        kshot: k.

    Example:
        >>> import numpy as np
        >>> s = np.array([[1, 0], [0, 1]], np.float32)
        >>> nearest_centroid_predictions(s, np.array([3, 7]), np.array([[0.9, 0.1]], np.float32), 1)
        array([3])
    """
    n_class = len(support) // kshot
    mean = support.mean(axis=0)
    centers = _cl2n(support, mean).reshape(n_class, kshot, support.shape[-1]).mean(1)
    queries = _cl2n(queries, mean)
    class_label = support_labels[::kshot]
    block = max(1, _BLOCK_BYTES // max(1, n_class * support.shape[-1] * support.itemsize))
    predictions = []
    for start in range(0, len(queries), block):
        distance = linalg.norm(centers[:, None, :] - queries[start : start + block], 2, axis=-1)
        nearest = np.argpartition(distance, 1, axis=0)[:1]  # as the original: the 1 nearest centroid
        predictions.append(np.take(class_label, nearest)[0].astype(int))
    return np.concatenate(predictions)


def simpleshot_metrics(
    features: np.ndarray, labels: np.ndarray, shots: Sequence[int] = (1, 5), folds: int = 5, seed: int = 0
) -> dict[str, float]:
    """k-shot SimpleShot accuracy, mean and std over folds, as bioclip-2's combined classification script.

    Args:
        features: `[N, D]` L2-normalised image features.
        labels: `[N]` int labels (`class_labels(...)[1]`).
        shots: the k values.
        folds: folds per k (fold f is seeded with `seed + f`).
        seed: offset of the fold seeds; 0 is the original.

    Returns:
        `{"{k}_shot_top1": mean accuracy, "{k}_shot_top1_std": np.std}` per k.

    Example:
        >>> import numpy as np
        >>> x = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1]], np.float32)
        >>> simpleshot_metrics(x, np.array([0, 0, 1, 1]), shots=(1,), folds=2)
        {'1_shot_top1': 1.0, '1_shot_top1_std': 0.0}
    """
    features = np.asarray(features)
    labels = np.asarray(labels)
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError(f"few-shot: {len(labels)} labels for features of shape {features.shape}")
    groups = class_groups(labels)
    if len(groups) < 2:
        raise ValueError(f"few-shot: needs at least 2 classes, got {len(groups)}")
    results: dict[str, float] = {}
    for kshot in shots:
        if kshot < 1:
            raise ValueError(f"few-shot: k must be at least 1, got {kshot}")
        accuracies = []
        for fold in range(folds):
            support, queries = split_support(groups, kshot, seed + fold)
            if not queries:
                raise ValueError(f"few-shot: no query images left for {kshot}-shot (every class has exactly {kshot})")
            predicted = nearest_centroid_predictions(features[support], labels[support], features[queries], kshot)
            accuracies.append(float((predicted == labels[queries]).mean()))
            logger.info("%d shot fold %d accuracy: %.4f", kshot, fold, accuracies[-1])
        results[f"{kshot}_shot_top1"] = float(np.mean(accuracies))
        results[f"{kshot}_shot_top1_std"] = float(np.std(accuracies))
    return results
