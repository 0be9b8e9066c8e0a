"""NeWT: 164 binary tasks, one SVM per task fitted on frozen features, accuracy pooled over all test images.

Follows Imageomics/bioclip-2 `src/evaluation/newt.py` (itself from biobench):

- rows: `newt2021_labels.csv` (`id, task, label, split, ...`; image `newt2021_images/{id}.jpg`), in CSV order;
- per task: train = rows with `split == "train"`, test = the rest; both centred on the train mean and
  L2-normalised; the classifier is `RandomizedSearchCV(make_pipeline(StandardScaler(), SVC()), ...)` over
  `C ~ loguniform(1e-3, 1e1)`, kernel in {rbf, linear, sigmoid, poly}, `gamma ~ loguniform(1e-4, 1e-3)`,
  `n_iter=100`, default 5-fold CV, `random_state = seed + run` (so the "linear SVM" of the paper is a search that
  may pick another kernel);
- score: accuracy over the concatenated test predictions of all tasks; mean and std over 3 runs.

Deviation: `n_jobs` defaults to min(16, CPUs) instead of 16 (parallelism does not change the result).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from .base import TaskFeatures, mean_std, require_columns, resolve_options

logger = logging.getLogger(__name__)

DEFAULTS = {"seed": 0, "runs": 3, "n_iter": 100, "n_jobs": None}


def init_svc(seed: int, n_iter: int = 100, n_jobs: int | None = 16) -> Any:
    """The original's hyper-parameter search over a standardised SVC.

    Args:
        seed: `random_state` of the search.
        n_iter: parameter settings tried.
        n_jobs: parallel fits.

    Example:
        >>> init_svc(0).n_iter
        100
    """
    import scipy.stats  # the `eval` extra
    import sklearn.model_selection
    import sklearn.pipeline
    import sklearn.preprocessing
    import sklearn.svm

    return sklearn.model_selection.RandomizedSearchCV(
        sklearn.pipeline.make_pipeline(sklearn.preprocessing.StandardScaler(), sklearn.svm.SVC(C=1.0, kernel="rbf")),
        {
            "svc__C": scipy.stats.loguniform(a=1e-3, b=1e1),
            "svc__kernel": ["rbf", "linear", "sigmoid", "poly"],
            "svc__gamma": scipy.stats.loguniform(a=1e-4, b=1e-3),
        },
        n_iter=n_iter,
        n_jobs=n_jobs,
        random_state=seed,
    )


def _center_normalize(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    x = x - mean
    return x / np.linalg.norm(x, ord=2, axis=1, keepdims=True)


def newt_tasks(task: TaskFeatures) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per NeWT task: (row positions in CSV order, 0/1 labels, is-train mask).

    Example:
        >>> newt_tasks(task)["ml_bio_raptor_utility_pole"]  # doctest: +SKIP
    """
    require_columns("newt", task.rows, ("task", "label", "split"))
    positions: dict[str, list[int]] = {}
    for position, row in enumerate(task.rows):
        positions.setdefault(row["task"], []).append(position)
    tasks = {}
    for name, rows in positions.items():
        try:
            labels = np.array([int(float(task.rows[p]["label"])) for p in rows])
        except ValueError:
            raise ValueError(f"newt: task {name}: column 'label' must hold integers") from None
        is_train = np.array([task.rows[p]["split"] == "train" for p in rows])
        if not is_train.any() or is_train.all():
            raise ValueError(f"newt: task {name} needs both train and test images")
        tasks[name] = (np.array(rows), labels, is_train)
    return tasks


def run_newt(task: TaskFeatures, options: dict | None = None) -> dict[str, float]:
    """NeWT score of one model's features.

    Args:
        task: rows with `task`, `label` (0/1) and `split` (train / test), normalised features.
        options: seed, runs, n_iter, n_jobs (None: min(16, CPUs)).

    Returns:
        `{"newt_acc": mean, "newt_acc_std": std}` over runs.

    Example:
        >>> run_newt(task, {"n_jobs": 4})  # doctest: +SKIP
        {'newt_acc': 0.75, 'newt_acc_std': 0.001}
    """
    options = resolve_options("newt", options, DEFAULTS)
    n_jobs = options["n_jobs"] or min(16, os.cpu_count() or 1)
    tasks = newt_tasks(task)
    scores = []
    for run in range(options["runs"]):
        run_seed = options["seed"] + run
        predicted, expected = [], []
        for rows, labels, is_train in tasks.values():
            x = task.features[rows]
            mean = x[is_train].mean(axis=0, keepdims=True)
            svc = init_svc(run_seed, options["n_iter"], n_jobs)
            svc.fit(_center_normalize(x[is_train], mean), labels[is_train])
            predicted.append(svc.predict(_center_normalize(x[~is_train], mean)))
            expected.append(labels[~is_train])
        scores.append(float(np.mean(np.concatenate(predicted) == np.concatenate(expected))))
        logger.info("newt run %d/%d accuracy: %.4f", run + 1, options["runs"], scores[-1])
    return mean_std("newt", "acc", scores)
