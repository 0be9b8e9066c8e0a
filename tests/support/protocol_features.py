"""Synthetic image features for the BioCLIP 2 protocol tests: Gaussian clusters, so every accuracy is non-trivial."""

from __future__ import annotations

import numpy as np

# Metrics of a protocol and of its reference re-implementation agree to this (issue 17's proof of equality).
METRIC_ATOL = 1e-6


def clusters(n_per_class: int, n_classes: int, dim: int, spread: float = 0.7, seed: int = 0):
    """(raw float32 features `[C * n, dim]`, labels 0..C-1) of Gaussian clusters, rows in a shuffled order."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), n_per_class)
    order = rng.permutation(len(labels))
    x = (means[labels] + spread * rng.normal(size=(len(labels), dim))).astype(np.float32)
    return x[order], labels[order]


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32), like `encode_image(normalize=True)`."""
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
