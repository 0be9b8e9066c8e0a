"""What every protocol reads (`TaskFeatures`) and the small pieces they share: options, columns, file orders.

The loaders torchvision and torch.utils.data give the original scripts (Imageomics/bioclip-2 `src/evaluation/`)
decide which image a seed picks, so two of them are reproduced here without torchvision: the order in which
`ImageFolder` lists a folder (`imagefolder_order`) and the order `DataLoader(shuffle=True)` visits it
(`loader_permutation`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)


@dataclass
class TaskFeatures:
    """Image features of one task, computed once, with the annotation rows they belong to.

    Args:
        features: `[N, D]` float32 L2-normalised image features (`encode_image(normalize=True)`).
        rows: `N` annotation rows aligned with `features`: every column of the task's metadata, as strings.
        root: the task's data folder, for files a protocol reads besides the rows (AwA2's class lists).
        raw_features: `[N, D]` image features before L2 normalisation; FishNet and AwA2 train their probes on
            these, as the original scripts do.

    Example:
        >>> import numpy as np
        >>> task = TaskFeatures(np.eye(2, dtype=np.float32), [{"filepath": "a.jpg", "class": "a"},
        ...                                                   {"filepath": "b.jpg", "class": "b"}])
        >>> task.size
        2
    """

    features: np.ndarray
    rows: list[dict[str, str]]
    root: Path | None = None
    raw_features: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("features", "raw_features"):
            value = getattr(self, name)
            if value is None:
                continue
            value = np.asarray(value, dtype=np.float32)
            if value.ndim != 2 or len(value) != len(self.rows):
                raise ValueError(
                    f"TaskFeatures.{name} must be [N, D] with N = {len(self.rows)} rows, got {value.shape}"
                )
            setattr(self, name, value)
        if self.root is not None:
            self.root = Path(self.root)

    @property
    def size(self) -> int:
        """Number of images (rows)."""
        return len(self.rows)


def resolve_options(task: str, options: Mapping[str, Any] | None, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """`defaults` updated by `options`; an unknown option is a one-line ValueError (catches typos).

    Args:
        task: protocol name, for the message.
        options: caller's options (may be None or empty).
        defaults: the original script's values.

    Example:
        >>> resolve_options("newt", {"runs": 1}, {"runs": 3, "seed": 0})
        {'runs': 1, 'seed': 0}
    """
    options = dict(options or {})
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"{task}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(defaults))}")
    return {**defaults, **options}


def require_columns(task: str, rows: Sequence[Mapping[str, str]], columns: Sequence[str]) -> None:
    """One-line ValueError naming the first of `columns` some row lacks (or an empty task).

    Args:
        task: protocol name, for the message.
        rows: annotation rows.
        columns: column names every row must have.

    Example:
        >>> require_columns("plantdoc", [{"split": "train"}], ["split"])
    """
    if not rows:
        raise ValueError(f"{task}: no annotation rows")
    for column in columns:
        for position, row in enumerate(rows):
            if column not in row:
                raise ValueError(f"{task}: annotation column {column!r} is missing (row {position})")


def require_raw_features(task: str, features: TaskFeatures) -> np.ndarray:
    """The unnormalised features, or a one-line ValueError saying the task needs them."""
    if features.raw_features is None:
        raise ValueError(f"{task}: needs TaskFeatures.raw_features (image features before L2 normalisation)")
    return features.raw_features


def imagefolder_order(rows: Sequence[Mapping[str, str]], positions: Sequence[int]) -> list[int]:
    """`positions` sorted the way torchvision's `ImageFolder` lists images: class folder, then directory, then name.

    ImageFolder walks `sorted(classes)`, then `sorted(os.walk(class_dir))`, then `sorted(file names)`.

    Args:
        rows: annotation rows with `class` (the folder name) and `filepath`.
        positions: the row positions to order.

    Example:
        >>> rows = [{"class": "b", "filepath": "b/1.jpg"}, {"class": "a", "filepath": "a/2.jpg"},
        ...         {"class": "a", "filepath": "a/1.jpg"}]
        >>> imagefolder_order(rows, [0, 1, 2])
        [2, 1, 0]
    """

    def key(position: int) -> tuple[str, str, str]:
        path = rows[position]["filepath"].replace("\\", "/")
        return rows[position]["class"], os.path.dirname(path), os.path.basename(path)

    return sorted(positions, key=key)


def loader_permutation(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The order in which `iter(DataLoader(dataset, shuffle=True))` visits `n` items, drawing as torch does.

    Starting the iterator draws its base seed, then `RandomSampler` draws the seed of its own generator; both come
    from `generator` (None: torch's global generator, as a DataLoader without `generator=` uses).

    Args:
        n: dataset length.
        generator: where the two seeds come from; advanced by two draws.

    Example:
        >>> loader_permutation(4, torch.Generator().manual_seed(0)).tolist()  # doctest: +SKIP
        [2, 0, 1, 3]
    """
    torch.empty((), dtype=torch.int64).random_(generator=generator)  # the iterator's base (worker) seed
    seed = int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def mean_std(task: str, metric: str, scores: Sequence[float]) -> dict[str, float]:
    """`{task_metric: mean, task_metric_std: np.std}` over runs, as the original scripts log them."""
    values = np.asarray(scores, dtype=np.float64)
    logger.info("%s %s over %d runs: %.4f (std %.4f)", task, metric, len(values), values.mean(), values.std())
    return {f"{task}_{metric}": float(values.mean()), f"{task}_{metric}_std": float(values.std())}
