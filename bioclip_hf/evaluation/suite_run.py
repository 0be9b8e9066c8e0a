"""Run the BioCLIP 2 suite: per task one image pass (cached), then its protocol(s) on the cached features.

Species tasks (NABirds, Meta-Album, Camera Trap, Rare Species): zero-shot with BioCLIP 2's class texts (81 OpenAI
templates, `logit_scale`, top-1/3/5) and SimpleShot k = 1, 5 over 5 folds, as its `classification.py`; the task's
score is zero-shot top-1 (%), averaged over the subsets for Camera Trap. Tasks beyond species run their protocol
(`bioclip_hf.evaluation.protocols.PROTOCOLS`). Tasks whose data is absent are skipped with a note saying where to
get it (or raise, with `strict`). Results carry the published comparison (`bioclip_hf.evaluation.published`).

Usage (command line: `bioclip-hf evaluate --suite bioclip-2`):
    results = run_suite("imageomics/bioclip-2", load_suite("bioclip-2").tasks, SuiteConfig(data_root="data"))
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bioclip_hf.evaluation.annotation import TaskDataMissing, TaskImages, check_local_data, load_task_images
from bioclip_hf.evaluation.features import FeatureCache, l2_normalize
from bioclip_hf.evaluation.suite import SuiteTask, load_suite

logger = logging.getLogger(__name__)


@dataclass
class SuiteConfig:
    """How to run a suite.

    Args:
        data_root: folder holding one data folder per task, named by task (`<data_root>/nabirds/metadata.csv`);
            a Hub task uses its folder there when present, else the Hub.
        data_dir: the data folder of the (single) task run.
        batch_size: images / texts per forward pass.
        device: torch device (None: best available).
        cache_dir: image feature cache (default `$BIOCLIP_HF_CACHE/eval-features`, `~/.cache/bioclip_hf` by default); `use_cache=False`: none.
        shots, folds: override each species task's few-shot k values / SimpleShot folds.
        seed: seed of the few-shot folds and the protocols.
        protocol_options: per protocol, options overriding the original's defaults (e.g. {"fishnet": {"epochs": 2}}).
        strict: raise when a task's data is missing instead of skipping it.
    """

    data_root: str | None = None
    data_dir: str | None = None
    batch_size: int = 64
    device: str | None = None
    cache_dir: str | None = None
    use_cache: bool = True
    shots: tuple[int, ...] | None = None
    folds: int | None = None
    seed: int = 0
    protocol_options: dict[str, Any] = field(default_factory=dict)
    strict: bool = False


def place_data(tasks: list[SuiteTask], config: SuiteConfig) -> list[SuiteTask]:
    """Copies of `tasks` with `data_dir` set from `config.data_dir` (one task) or `<data_root>/<task name>`."""
    if config.data_dir and len(tasks) != 1:
        raise ValueError("--data-dir is the folder of one task: select one with --task, or use --data-root")
    placed = []
    for task in tasks:
        folder = config.data_dir or (str(Path(config.data_root) / task.name) if config.data_root else None)
        if folder and (config.data_dir or Path(folder).is_dir() or task.hub_dataset is None):
            task = dataclasses.replace(task, data_dir=folder)
        placed.append(task)
    return placed


def species_unit(model: Any, processor: Any, task: SuiteTask, part: TaskImages, features: np.ndarray,
                 config: SuiteConfig) -> dict[str, Any]:  # fmt: skip
    """Zero-shot and SimpleShot metrics of one scored unit (a task or one of its subsets), as classification.py."""
    from bioclip_hf.evaluation.protocols import class_labels, simpleshot_metrics, text_classifier, zero_shot_metrics

    texts, labels = class_labels(part.rows, task.text_type)  # BioCLIP 2: the class *is* its text
    if len(texts) < 2:
        raise ValueError(f"{part.name}: need at least 2 classes, found {len(texts)}")
    normalized = l2_normalize(features)
    classifier = text_classifier(model, processor, texts, batch_size=config.batch_size)
    zero = zero_shot_metrics(normalized, labels, classifier, float(model.logit_scale.exp().item()))
    shots, folds = config.shots or task.shots, config.folds or task.folds
    few = simpleshot_metrics(normalized, labels, shots=tuple(shots), folds=folds, seed=config.seed)
    return {"num_examples": len(part), "num_classes": len(texts), "zero_shot": _floats(zero), "few_shot": _floats(few)}


def beyond_unit(task: SuiteTask, part: TaskImages, features: np.ndarray, config: SuiteConfig) -> dict[str, Any]:
    """The task's own protocol on the cached features (normalised, and raw for the MLP probes) and the rows."""
    from bioclip_hf.evaluation.protocols import PROTOCOLS, TaskFeatures

    options = {"seed": config.seed, **config.protocol_options.get(task.protocol, {})}
    inputs = TaskFeatures(l2_normalize(features), part.rows, part.root, raw_features=features)
    return {"num_examples": len(part), "metrics": _floats(PROTOCOLS[task.protocol](inputs, options))}


def _floats(value: Any) -> Any:
    """JSON-ready copy: numpy scalars/arrays to Python numbers/lists."""
    if isinstance(value, dict):
        return {str(k): _floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_floats(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def primary_metric(task: SuiteTask) -> str:
    """The key of the number the papers report: zero-shot top-1, or the protocol's headline metric."""
    if task.is_species:
        return "zero_shot_top1"
    from bioclip_hf.evaluation.protocols import PRIMARY_METRIC

    return PRIMARY_METRIC[task.protocol]


def unit_score(task: SuiteTask, unit: dict[str, Any]) -> float:
    """A unit's reported number in %."""
    metrics = unit["zero_shot"] if task.is_species else unit["metrics"]
    return 100.0 * float(metrics[primary_metric(task)])


def evaluate_task(model: Any, processor: Any, task: SuiteTask, config: SuiteConfig, cache: FeatureCache) -> dict:
    """One task: read its data, one (cached) image pass per unit, score; the task's entry of the results."""
    parts = load_task_images(task)
    units, features_info = {}, {}
    for part in parts:
        features, info = cache.features(model, processor, part, config.batch_size)
        features_info[part.name] = info
        if task.is_species:
            units[part.name] = species_unit(model, processor, task, part, features, config)
        else:
            units[part.name] = beyond_unit(task, part, features, config)
        units[part.name]["score"] = round(unit_score(task, units[part.name]), 4)
    entry = {"title": task.title, "group": task.group, "protocol": task.protocol, "text_type": task.text_type,
             "benchmark_dataset": task.hub_dataset, "source": parts[0].source,
             "metric": "zero-shot top-1 accuracy (%)" if task.is_species else f"{primary_metric(task)} (%)",
             "num_examples": sum(len(p) for p in parts), "features": features_info}  # fmt: skip
    entry["score"] = round(float(np.mean([u["score"] for u in units.values()])), 4)
    if len(units) == 1:
        entry.update({k: v for k, v in next(iter(units.values())).items() if k != "score"})
    else:
        entry["subsets"] = units
    return entry


def run_suite(model_name_or_path: str, tasks: list[SuiteTask], config: SuiteConfig | None = None, *,
              model: Any = None, processor: Any = None, suite: str = "bioclip-2") -> dict[str, Any]:  # fmt: skip
    """Evaluate a model on suite tasks; tasks without data are skipped (noted in `results["skipped"]`).

    Args:
        model_name_or_path: checkpoint folder or Hub id (its identity keys the feature cache).
        tasks: the suite's task specs to run (`load_suite(...).select(names)`).
        config: data locations, cache and protocol options.
        model, processor: already loaded objects (skip loading; the name still keys the cache).
        suite: suite name (selects the published table).

    Example:
        >>> results = run_suite("imageomics/bioclip-2", load_suite().tasks, SuiteConfig(data_root="data"))  # doctest: +SKIP
    """
    config = config or SuiteConfig()
    tasks, skipped = place_data(tasks, config), {}
    for task in tasks:  # absent local data is found before a model is loaded
        try:
            check_local_data(task)
        except TaskDataMissing as missing:
            if config.strict:
                raise
            skipped[task.name] = str(missing)
    if model is None or processor is None:
        from bioclip_hf.models.loading import load_model_and_processor

        model, processor = load_model_and_processor(model_name_or_path, device=config.device)
    cache = FeatureCache(str(model_name_or_path), config.cache_dir, enabled=config.use_cache)
    results: dict[str, Any] = {
        "suite": suite, "model": str(model_name_or_path),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "strict"},
        "groups": load_suite(suite).groups, "selected": [t.name for t in tasks],
        "titles": {t.name: t.title for t in tasks}, "tasks": {}, "skipped": {},
    }  # fmt: skip
    for task in tasks:
        if task.name in skipped:
            logger.warning("skipped: %s", skipped[task.name])
            results["skipped"][task.name] = skipped[task.name]
            continue
        try:
            results["tasks"][task.name] = evaluate_task(model, processor, task, config, cache)
        except TaskDataMissing as missing:
            if config.strict:
                raise
            logger.warning("skipped: %s", missing)
            results["skipped"][task.name] = str(missing)
    from bioclip_hf.evaluation.published import comparison, comparison_table

    results["comparison"] = comparison(results)
    results["comparison"]["markdown"] = comparison_table(results["comparison"])
    return results


def throughput(results: dict[str, Any]) -> dict[str, float | None]:
    """Per task, images/s of its image pass (None when its features came from the cache)."""
    speeds = {}
    for name, task in results["tasks"].items():
        infos = [i for i in task.get("features", {}).values() if not i.get("cached")]
        seconds = sum(i["seconds"] for i in infos)
        speeds[name] = round(sum(i["images"] for i in infos) / seconds, 2) if infos and seconds > 0 else None
    return speeds
