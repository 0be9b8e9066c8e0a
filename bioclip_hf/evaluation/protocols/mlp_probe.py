"""The MLP probe FishNet and AwA2 train on frozen image features (shared by `fishnet.py` and `awa2.py`).

Follows the training loop of Imageomics/bioclip-2 `src/evaluation/fishnet.py` and `src/evaluation/awa2.py`:
per run, `random_seed(seed + run)`, `Linear(D, 512) -> Dropout(0.5) -> Linear(512, n_out)`, Adam, BCEWithLogitsLoss,
StepLR(step 20, gamma 0.5), `DataLoader(shuffle=True)` batches, a test pass every `eval_every` epochs and a final
one; a trait is predicted present when its logit (not its probability) exceeds 0.5.

Kept on purpose because the published numbers came from it: the classifier is never switched to eval mode, so
dropout is active in the test passes too, and those passes draw from the same generator as training.

Deviations: runs on the CPU in float32 (the original trains on the GPU under fp16 autocast, where dropout draws
from the CUDA generator, so its numbers are not reproducible bit for bit anywhere else); instead of a DataLoader
over a Dataset of single rows, the batches are gathered directly in the order the DataLoader would give
(`base.loader_permutation`, the same draws from the same generator); the global torch generator is seeded as the
original does and restored afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from .base import loader_permutation

logger = logging.getLogger(__name__)

Score = Callable[[np.ndarray, np.ndarray], float]


def init_classifier(input_dim: int, n_out: int) -> torch.nn.Module:
    """The original's probe: `Linear(D, 512) -> Dropout(0.5) -> Linear(512, n_out)` (torch default init)."""
    return torch.nn.Sequential(torch.nn.Linear(input_dim, 512), torch.nn.Dropout(0.5), torch.nn.Linear(512, n_out))


@torch.no_grad()
def predict_traits(classifier: torch.nn.Module, x: torch.Tensor, batch_size: int) -> np.ndarray:
    """`logits > 0.5` per trait, batch by batch in order, as the original's `evaluate` (dropout still active).

    Starting a DataLoader iterator draws one base seed from the global generator; so does this.
    """
    torch.empty((), dtype=torch.int64).random_()  # DataLoader iterator's base seed (a sequential loader)
    return np.concatenate(
        [(classifier(x[start : start + batch_size]) > 0.5).numpy() for start in range(0, len(x), batch_size)]
    )


def train_probe_run(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: np.ndarray,
    score: Score,
    *,
    seed: int,
    epochs: int,
    lr: float,
    batch_size: int,
    eval_every: int,
) -> tuple[float, np.ndarray]:
    """One run of the probe: train on (x_train, y_train), return (final score, final test predictions).

    Args:
        x_train, y_train: `[N, D]` float32 features and `[N, T]` 0/1 trait targets.
        x_test, y_test: test features and targets (numpy, for `score`).
        score: `score(y_true, y_pred)`; the intermediate scores are only logged, as in the original.
        seed: torch's global seed for this run (`args.seed + run`).
        epochs, lr, batch_size, eval_every: the script's arguments.

    Example:
        >>> train_probe_run(x, y, xt, yt, accuracy, seed=0, epochs=50, lr=1e-4, batch_size=256, eval_every=10)  # doctest: +SKIP
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        classifier = init_classifier(x_train.shape[1], y_train.shape[1])
        optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
        criterion = torch.nn.BCEWithLogitsLoss()
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=20, gamma=0.5)
        targets = y_train.to(torch.float)
        for epoch in range(epochs):
            order = loader_permutation(len(x_train))
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                loss = criterion(classifier(x_train[batch]), targets[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            scheduler.step()
            if (epoch + 1) % eval_every == 0:
                interim = score(y_test, predict_traits(classifier, x_test, batch_size))
                logger.info("epoch %d/%d: %.4f", epoch + 1, epochs, interim)
        predictions = predict_traits(classifier, x_test, batch_size)
    return score(y_test, predictions), predictions


def run_probe(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, score: Score, options: dict
) -> list[float]:
    """Scores of `options["runs"]` runs seeded `seed, seed + 1, ...` (the original's `num_runs = 3`).

    Args:
        x_train, y_train, x_test, y_test: raw features and 0/1 targets.
        score: metric of one run.
        options: seed, runs, epochs, lr, batch_size, eval_every.
    """
    if len(x_train) == 0 or len(x_test) == 0:
        raise ValueError(f"probe: needs train and test images, got {len(x_train)} and {len(x_test)}")
    train = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32))
    test = torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32))
    targets = torch.from_numpy(np.asarray(y_train))
    scores = []
    for run in range(options["runs"]):
        final, _ = train_probe_run(
            train,
            targets,
            test,
            y_test,
            score,
            seed=options["seed"] + run,
            epochs=options["epochs"],
            lr=options["lr"],
            batch_size=options["batch_size"],
            eval_every=options["eval_every"],
        )
        logger.info("run %d/%d final score: %.4f", run + 1, options["runs"], final)
        scores.append(final)
    return scores
