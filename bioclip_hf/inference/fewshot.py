"""SimpleShot few-shot classification (Wang et al. 2019), as used in the BioCLIP paper.

Features are centred with the mean of the support set ("C"), L2-normalised ("L2N"), and each query goes to the
nearest class centroid (Euclidean). Used by `FewShotClassifier` and by the few-shot evaluations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class SimpleShot:
    """A fitted SimpleShot (CL2N) nearest-centroid classifier.

    Attributes:
        classes: class names, in the column order of `predict_scores`.
        mean: `[D]` support-set mean used for centring.
        centroids: `[C, D]` class means of the centred, normalised support features.
    """

    classes: list[Any]
    mean: torch.Tensor
    centroids: torch.Tensor

    def transform(self, features: torch.Tensor) -> torch.Tensor:
        """Centre with the support mean and L2-normalise."""
        features = torch.as_tensor(features, dtype=torch.float32, device=self.mean.device)
        if features.ndim != 2 or features.shape[1] != self.mean.shape[0]:
            raise ValueError(f"features of shape {tuple(features.shape)} do not match dim {self.mean.shape[0]}")
        return torch.nn.functional.normalize(features - self.mean, dim=-1)

    def predict_scores(self, features: torch.Tensor) -> torch.Tensor:
        """`[B, C]` scores = minus the Euclidean distance to each centroid (higher is closer)."""
        return -torch.cdist(self.transform(features), self.centroids)

    def predict(self, features: torch.Tensor) -> list[Any]:
        """The nearest class for each row of `features`."""
        return [self.classes[i] for i in self.predict_scores(features).argmax(dim=-1).tolist()]

    def to(self, device: str | torch.device) -> SimpleShot:
        return SimpleShot(self.classes, self.mean.to(device), self.centroids.to(device))


def fit_simpleshot(features: torch.Tensor, labels: Sequence[Any]) -> SimpleShot:
    """Fit SimpleShot on support `features` `[N, D]` with one label per row.

    Classes keep their order of first appearance.

    Example:
        >>> shot = fit_simpleshot(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), ["a", "a", "b"])
        >>> shot.classes, shot.predict(torch.tensor([[0.1, 0.95]]))
        (['a', 'b'], ['b'])
    """
    features = torch.as_tensor(features, dtype=torch.float32)
    labels = list(labels)
    if features.ndim != 2 or features.shape[0] != len(labels):
        raise ValueError(f"got {len(labels)} labels for features of shape {tuple(features.shape)}")
    if not labels:
        raise ValueError("SimpleShot needs at least one labelled example")
    classes = list(dict.fromkeys(labels))
    position = {label: i for i, label in enumerate(classes)}
    targets = torch.tensor([position[label] for label in labels], device=features.device)
    mean = features.mean(dim=0)
    normalized = torch.nn.functional.normalize(features - mean, dim=-1)
    sums = torch.zeros(len(classes), features.shape[1], device=features.device).index_add_(0, targets, normalized)
    counts = torch.bincount(targets, minlength=len(classes)).clamp(min=1).unsqueeze(1)
    return SimpleShot(classes, mean, sums / counts)
