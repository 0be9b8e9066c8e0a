"""BioCLIP 2's evaluation protocols, as `src/evaluation/` of Imageomics/bioclip-2 (commit 49e1cf5) runs them.

Every protocol reads image features computed once per (model, task) (`TaskFeatures`) and returns fractions in
[0, 1] (the original logs them x100). Species tasks use `zero_shot` and `simpleshot` directly (they also need the
text encoder); the five other tasks are `PROTOCOLS[name](task_features, options)`, `options={}` giving the
published run's settings.

| task | original | protocol | rows / files read | metric keys |
|---|---|---|---|---|
| species tasks | classification.py, data.py, naming_eval.py | 81 templates, per-template L2 norm, mean, L2 norm; `logit_scale`; top-1/3/5. SimpleShot k = 1, 5, 5 folds (`random.seed(fold)`), CL2N, nearest centroid | `class` (asis) or `kingdom..species, common_name` (taxon_com ...), optional `class_idx` | `zero_shot_top{1,3,5}`, `{k}_shot_top1`, `{k}_shot_top1_std` |
| fishnet | fishnet.py | MLP 512 + dropout probe on raw features, Adam lr 1e-4, 50 epochs, batch 256, BCE, 3 runs; all nine traits right | `split`, `FeedingPath` + 8 habitat/climate columns; `raw_features` | `fishnet_acc`, `_std` |
| newt | newt.py | per task: centre + L2 norm, RandomizedSearchCV(StandardScaler + SVC, 100 draws), 3 runs; pooled accuracy | `task`, `label`, `split` | `newt_acc`, `_std` |
| awa2 | awa2.py | MLP probe on raw features, lr 1e-5, 85 attributes, train/test classes; macro F1 (sklearn, `labels=np.unique(y)`) | `class`; root: classes.txt, trainclasses.txt, testclasses.txt, predicate-matrix-binary.txt; `raw_features` | `awa2_macro_f1`, `_std` |
| herbarium19 | herbarium19.py, faster_mix_k_means_pytorch.py | GCD split (341 Old / 342 New classes, 80% of Old labelled), semi-supervised k-means (k = 683, k-means++, 10 iterations), Old/New Hungarian accuracy, 3 runs | `class`, `filepath` (small-train) | `herbarium19_acc`, `_std` |
| plantdoc | plantdoc.py, simpleshot.py | 1-shot SimpleShot (sklearn NearestCentroid) on train/, accuracy on test/, 5 repeats | `split`, `class`, `filepath` | `plantdoc_1_shot_acc`, `_std` |

Each module's docstring names its original file and any deviation.

Example:
    >>> from bioclip_hf.evaluation.protocols import PROTOCOLS, TaskFeatures
    >>> PROTOCOLS["newt"](TaskFeatures(features, rows), {})  # doctest: +SKIP
    {'newt_acc': 0.75, 'newt_acc_std': 0.001}
"""

from __future__ import annotations

from collections.abc import Callable

from .awa2 import run_awa2
from .base import TaskFeatures
from .fishnet import run_fishnet
from .herbarium19 import run_herbarium19
from .newt import run_newt
from .plantdoc import run_plantdoc
from .simpleshot import simpleshot_metrics
from .zero_shot import (
    OPENAI_IMAGENET_TEMPLATES,
    TEXT_TYPES,
    class_labels,
    class_text,
    text_classifier,
    zero_shot_metrics,
)

PROTOCOLS: dict[str, Callable[[TaskFeatures, dict], dict[str, float]]] = {
    "fishnet": run_fishnet,
    "newt": run_newt,
    "awa2": run_awa2,
    "herbarium19": run_herbarium19,
    "plantdoc": run_plantdoc,
}

# The key of each protocol's headline number (the one the published table reports).
PRIMARY_METRIC: dict[str, str] = {
    "fishnet": "fishnet_acc",
    "newt": "newt_acc",
    "awa2": "awa2_macro_f1",
    "herbarium19": "herbarium19_acc",
    "plantdoc": "plantdoc_1_shot_acc",
}

__all__ = [
    "OPENAI_IMAGENET_TEMPLATES",
    "PRIMARY_METRIC",
    "PROTOCOLS",
    "TEXT_TYPES",
    "TaskFeatures",
    "class_labels",
    "class_text",
    "simpleshot_metrics",
    "text_classifier",
    "zero_shot_metrics",
]
