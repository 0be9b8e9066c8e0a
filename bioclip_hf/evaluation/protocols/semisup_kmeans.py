"""Semi-supervised k-means (GCD's `K_Means.fit_mix`), as BioCLIP 2 runs it for Herbarium19.

Follows Imageomics/bioclip-2 `src/evaluation/faster_mix_k_means_pytorch.py` (from sgvaze/generalized-category-
discovery) with the arguments `herbarium19.py` passes: `n_init=1`, `init="k-means++"`, `n_jobs=None`,
`pairwise_batch_size=1024`, `tolerance=1e-4`, `max_iterations=10`:

- the labelled classes' means are the first centres, the others come from k-means++ over the unlabelled
  features, drawn with a `numpy.random.RandomState(random_state)`;
- labelled points keep their class's centre; unlabelled points take the nearest centre; each centre moves to the
  mean of its points (an empty cluster's centre becomes NaN, as in the original); the assignment with the
  lowest inertia is kept; it stops when the squared total centre shift falls under the tolerance.

Deviations, none of which changes a number:
- k-means++ keeps the running minimum of the squared distances to the centres chosen so far instead of
  recomputing the distances to all of them for each new centre (the minimum of the same numbers, so the same
  draws; O(k N D) instead of O(k^2 N D));
- nearest centres: a matrix product (`|x|^2 - 2 x.c + |c|^2`) finds, per point, the centres within a rounding
  margin of the closest; only those get the original's `((x - c) ** 2).sum()` (the same float32 reduction, so the
  same values), and the first centre with the smallest value wins, as `torch.min` picks. The original's broadcast
  costs N K D element operations per iteration (minutes per iteration for Herbarium19 on a CPU). With a
  non-finite centre (an emptied cluster) the original's full computation runs, NaN handling included.
Runs in float32 on whatever device the tensors are on.
"""

from __future__ import annotations

import numpy as np
import torch

# Rows per distance block: block x k x D float32 values stay near 128 MiB.
_BLOCK_BYTES = 128 * 2**20


def pairwise_sq_distances(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """`[N, K]` float32 squared Euclidean distances `((x_i - c_j) ** 2).sum()`, computed as the original does."""
    out = torch.zeros(x.shape[0], centers.shape[0])  # the original's batched path fills a CPU float32 tensor
    block = max(1, _BLOCK_BYTES // max(1, 4 * centers.shape[0] * x.shape[1]))
    for start in range(0, x.shape[0], block):
        out[start : start + block] = ((x[start : start + block].unsqueeze(1) - centers.unsqueeze(0)) ** 2).sum(dim=-1)
    return out


def _margin(x_sq: torch.Tensor, c_sq: torch.Tensor, dim: int) -> torch.Tensor:
    """Per row, twice a bound on the float32 rounding of both distance formulas (unit vectors: ~1.5e-3)."""
    return 16 * dim * 2.0**-24 * (x_sq + c_sq.max())


def _exact_pairs(x: torch.Tensor, centers: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    return ((x[rows] - centers[cols]) ** 2).sum(dim=-1)


def nearest_centers(x: torch.Tensor, centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`torch.min(pairwise_sq_distances(x, centers), dim=1)`: values and first indices, without all N K D terms.

    Args:
        x: `[N, D]` points.
        centers: `[K, D]` centres.

    Example:
        >>> x = torch.tensor([[0.0, 0.0], [4.0, 4.0]])
        >>> nearest_centers(x, torch.tensor([[1.0, 0.0], [4.0, 5.0]]))[1].tolist()
        [0, 1]
    """
    if not bool(torch.isfinite(centers).all()):
        return torch.min(pairwise_sq_distances(x, centers), dim=1)
    c_sq = (centers * centers).sum(dim=1)
    values, indices = [], []
    block = max(1, _BLOCK_BYTES // max(1, 4 * centers.shape[0]))
    for start in range(0, x.shape[0], block):
        xb = x[start : start + block]
        x_sq = (xb * xb).sum(dim=1, keepdim=True)
        approx = x_sq - 2 * xb @ centers.T + c_sq
        rows, cols = (approx <= approx.min(dim=1, keepdim=True).values + _margin(x_sq, c_sq, x.shape[1])).nonzero(
            as_tuple=True
        )
        exact = torch.full_like(approx, float("inf"))
        exact[rows, cols] = _exact_pairs(xb, centers, rows, cols)
        value, index = torch.min(exact, dim=1)
        values.append(value)
        indices.append(index)
    return torch.cat(values), torch.cat(indices)


def _lower_minimum(x: torch.Tensor, nearest: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """`torch.minimum(nearest, ((x - center) ** 2).sum(-1))`, the sum computed only where it may be smaller."""
    x_sq = (x * x).sum(dim=1)
    c_sq = (center * center).sum().reshape(1)
    approx = x_sq - 2 * x @ center + c_sq
    (rows,) = (approx <= nearest + _margin(x_sq, c_sq, x.shape[1])).nonzero(as_tuple=True)
    out = nearest.clone()
    out[rows] = torch.minimum(nearest[rows], _exact_pairs(x, center.view(1, -1), rows, torch.zeros_like(rows)))
    return out


def kmeans_plus_plus(
    x: torch.Tensor, pre_centers: torch.Tensor, k: int, random_state: np.random.RandomState
) -> torch.Tensor:
    """`pre_centers` extended to `k` centres by k-means++ over `x` (the original's `kpp`).

    Args:
        x: `[N, D]` points the new centres are drawn from.
        pre_centers: `[L, D]` fixed first centres.
        k: number of centres wanted.
        random_state: draws one `rand()` per new centre.

    Example:
        >>> x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
        >>> kmeans_plus_plus(x, x[:1], 2, np.random.RandomState(0)).shape
        torch.Size([2, 2])
    """
    centers = pre_centers.reshape(-1, x.shape[1])
    nearest: torch.Tensor | None = None
    index = None
    while centers.shape[0] < k:
        if nearest is None:
            nearest = nearest_centers(x, centers)[0]
        else:
            nearest = _lower_minimum(x, nearest, centers[-1])
        cumulative = torch.cumsum(nearest / nearest.sum(), dim=0)
        hits = (cumulative >= random_state.rand()).nonzero()
        if len(hits):
            index = hits[0][0]
        elif index is None:  # the original would fail on an unbound name here
            raise ValueError("k-means++: cannot draw a centre (every point already coincides with a centre)")
        centers = torch.cat((centers, x[index].view(1, -1)), dim=0)
    return centers


def _iterate(
    centers: torch.Tensor,
    cat_feats: torch.Tensor,
    labels: torch.Tensor,
    n_labelled: int,
    k: int,
    tolerance: float,
    max_iterations: int,
) -> torch.Tensor:
    l_feats, u_feats = cat_feats[:n_labelled], cat_feats[n_labelled:]
    best_labels, best_inertia = None, None
    for _ in range(max_iterations):
        centers_old = centers.clone()
        u_mindist, u_labels = nearest_centers(u_feats, centers)
        l_mindist = torch.sum((l_feats - centers[labels[:n_labelled]]) ** 2, dim=1)
        inertia = u_mindist.sum() + l_mindist.sum()
        labels[n_labelled:] = u_labels
        for idx in range(k):
            selected = torch.nonzero(labels == idx).squeeze()
            centers[idx] = torch.index_select(cat_feats, 0, selected).mean(dim=0)
        if best_inertia is None or inertia < best_inertia:
            best_labels, best_inertia = labels.clone(), inertia
        shift = torch.sum(torch.sqrt(torch.sum((centers - centers_old) ** 2, dim=1)))
        if shift**2 < tolerance:
            break
    return best_labels


def semi_supervised_kmeans(
    u_feats: torch.Tensor,
    l_feats: torch.Tensor,
    l_targets: torch.Tensor,
    k: int,
    *,
    tolerance: float = 1e-4,
    max_iterations: int = 10,
    random_state: int | None = None,
) -> torch.Tensor:
    """Cluster labels of `cat(l_feats, u_feats)` (labelled first), as `K_Means(...).fit_mix(...).labels_`.

    Args:
        u_feats: `[U, D]` unlabelled features.
        l_feats: `[L, D]` labelled features.
        l_targets: `[L]` int64 class labels of `l_feats`.
        k: number of clusters (labelled classes first).
        tolerance: stop when the squared total centre shift is below it.
        max_iterations: Lloyd iterations.
        random_state: seed of the k-means++ draws.

    Returns:
        `[L + U]` int64 cluster labels; labelled classes are clusters `0..n_classes-1` in sorted class order.

    Example:
        >>> u = torch.tensor([[0.0, 0.1], [5.0, 5.1]]); l = torch.tensor([[0.0, 0.0], [5.0, 5.0]])
        >>> semi_supervised_kmeans(u, l, torch.tensor([0, 1]), 2, random_state=0).tolist()
        [0, 1, 0, 1]
    """
    if len(l_feats) == 0 or len(u_feats) == 0:
        raise ValueError("semi-supervised k-means needs labelled and unlabelled features")
    from sklearn.utils import check_random_state  # the `eval` extra

    random_state = check_random_state(random_state)
    l_classes = torch.unique(l_targets)
    if len(l_classes) > k:
        raise ValueError(f"semi-supervised k-means: {len(l_classes)} labelled classes exceed k = {k}")
    l_centers = torch.stack([l_feats[l_targets.eq(c).nonzero().squeeze(1)].mean(0) for c in l_classes])
    cat_feats = torch.cat((l_feats, u_feats))
    labels = -torch.ones(len(cat_feats), dtype=torch.long)
    labels[: len(l_targets)] = torch.searchsorted(l_classes, l_targets)
    centers = kmeans_plus_plus(u_feats, l_centers, k, random_state)
    return _iterate(centers, cat_feats, labels, len(l_targets), k, tolerance, max_iterations)
