"""Zero-shot and few-shot (SimpleShot) evaluation of a BioCLIP model over benchmark task specs.

Usage (command line: `bioclip-hf evaluate`, see `bioclip_hf.commands.evaluate`):
    bioclip-hf evaluate --model imageomics/bioclip --task rare_species --output results.json
    bioclip-hf evaluate --model ./my-model --task birds525 --data-dir ../shared/data/birds525
    bioclip-hf evaluate --model ./my-model --data-dir ./any_image_folder   # ad-hoc task, class = folder

Protocol (BioCLIP paper): zero-shot scores every class text, averaged over prompt templates, for each text type;
few-shot draws k examples per class as support (SimpleShot: centre, L2-normalise, nearest centroid), scores the
remaining examples, and averages over 5 seeds. Metrics come from the local `evaluate` modules shipped in the package
(`bioclip_hf/evaluation/metrics/`, the repository's `evals/metrics/`).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bioclip_hf.evaluation.data import TaskData, load_task_data
from bioclip_hf.evaluation.report import write_results
from bioclip_hf.evaluation.tasks import TaskSpec, list_tasks, load_task
from bioclip_hf.models.bioclip.image_decoding import decode_image

logger = logging.getLogger(__name__)

METRICS_DIR = Path(__file__).resolve().parent / "metrics"


@dataclass
class EvalConfig:
    """How to run the harness.

    Args:
        shots: support examples per class for the few-shot runs (empty: zero-shot only).
        seeds: number of few-shot draws averaged (seeds 0 .. seeds-1).
        templates: "openai" (the 80 CLIP prompt templates, averaged) or "single" ("a photo of {}.").
        text_types: override each task's text types.
        batch_size: images / texts per forward pass.
        max_classes: keep only the first N classes of each task (quick runs).
        max_per_class: keep at most N examples per class.
        device: torch device ("cpu", "cuda", None = auto).
    """

    shots: tuple[int, ...] = (1, 5)
    seeds: int = 5
    templates: str = "openai"
    text_types: list[str] | None = None
    batch_size: int = 64
    max_classes: int | None = None
    max_per_class: int | None = None
    device: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@functools.cache
def load_metric(name: str):
    """A metric module shipped in the package (`metrics/<name>/`) through `evaluate.load` (a local path: offline)."""
    import evaluate

    path = METRICS_DIR / name
    if not path.is_dir():
        raise FileNotFoundError(f"no local metric module {path}")
    return evaluate.load(str(path))


def image_features(model: Any, processor: Any, images: list[Any], batch_size: int = 64, *,
                   normalize: bool = True) -> np.ndarray:  # fmt: skip
    """L2-normalised image embeddings `[N, D]` (float32), preprocessed by the processor's own transform.

    Args:
        model, processor: a `BioCLIPModel` (on its device) and its `BioCLIPProcessor`.
        images: file paths, encoded image bytes or PIL images.
        batch_size: images per forward pass.
        normalize: L2-normalise (False: the raw projections, which BioCLIP 2's FishNet / AwA2 probes train on).

    Example:
        >>> features = image_features(model, processor, ["a.jpg", "b.jpg"])  # doctest: +SKIP
    """
    import torch

    device = next(model.parameters()).device
    transform = processor.image_processor.transform
    chunks = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = np.stack([transform(decode_image(image)) for image in images[start : start + batch_size]])
            pixels = torch.from_numpy(batch).to(device=device, dtype=next(model.parameters()).dtype)
            chunks.append(model.encode_image(pixels, normalize=normalize).float().cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def score_predictions(scores: np.ndarray, labels: np.ndarray, taxa: list[Any], classes: np.ndarray | None = None) -> dict:
    """Top-1/top-5 and per-rank taxonomic accuracy of `scores` `[N, C]` against `labels` (class ids).

    Args:
        scores: higher is better; column j stands for class `classes[j]` (default: j).
        labels: true class id per row.
        taxa: per class id, its Taxon (for the lineage comparison).
        classes: class id of each score column, when the columns are a subset/permutation.

    Example:
        >>> score_predictions(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 0]), [Taxon(), Taxon()])  # doctest: +SKIP
        {'top1_accuracy': 0.5}
    """
    classes = np.arange(scores.shape[1]) if classes is None else np.asarray(classes)
    k = min(5, scores.shape[1])
    ranked = classes[np.argsort(-scores, axis=1, kind="stable")[:, :k]]
    cutoffs = [1, 5] if k >= 5 else [1]
    result = load_metric("top_k_accuracy").compute(predictions=ranked.tolist(), references=labels.tolist(), k=cutoffs)
    lineages = [list(taxon.ranks()) for taxon in taxa]
    if any(any(lineage) for lineage in lineages):
        result.update(load_metric("taxonomic_accuracy").compute(
            predictions=[lineages[i] for i in ranked[:, 0]], references=[lineages[i] for i in labels]))  # fmt: skip
    return {name: float(value) for name, value in result.items()}


def zero_shot(model: Any, processor: Any, features: np.ndarray, data: TaskData, text_types: list[str],
              templates: str = "openai", batch_size: int = 256) -> dict[str, dict]:  # fmt: skip
    """Zero-shot metrics per text type; text types a task cannot fill (empty or duplicate texts) are skipped.

    Args:
        model, processor: the model (on its device) and processor.
        features: `[N, D]` normalised image features of `data`.
        data: the task's examples and per-class taxa.
        text_types: BioCLIP text types to try.
        templates: "openai" (80 templates averaged) or "single" ("a photo of {}.").
        batch_size: texts per forward pass.

    Example:
        >>> zero_shot(model, processor, features, data, ["scientific", "common"])  # doctest: +SKIP
    """
    from bioclip_hf.treeoflife.index import encode_prompts
    from bioclip_hf.treeoflife.taxonomy import DEFAULT_TEMPLATE, OPENAI_TEMPLATES

    prompts = OPENAI_TEMPLATES if templates == "openai" else (DEFAULT_TEMPLATE,)
    labels = np.asarray(data.labels)
    results, seen = {}, {}
    for text_type in text_types:
        texts = [taxon.text(text_type) for taxon in data.taxa]
        if not all(_has_text(taxon, text_type) for taxon in data.taxa):
            logger.info("zero-shot: skipping %s (some classes have no %s name)", text_type, text_type)
            continue
        if tuple(texts) in seen:
            logger.info("zero-shot: skipping %s (same texts as %s)", text_type, seen[tuple(texts)])
            continue
        seen[tuple(texts)] = text_type
        classifier = encode_prompts(model, processor, texts, prompts, batch_size=batch_size).numpy()
        results[text_type] = score_predictions(features @ classifier.T, labels, data.taxa)
    return results


def _has_text(taxon: Any, text_type: str) -> bool:
    """Whether `taxon` names what `text_type` is built on (common falls back to scientific, as in Taxon.text)."""
    base = text_type.split("+")[0]
    if base == "taxonomic":
        return any(taxon.ranks())
    if base == "scientific":
        return bool(taxon.scientific_name)
    return bool(taxon.common_name or taxon.scientific_name)


def few_shot(features: np.ndarray, data: TaskData, shots: int, seeds: int = 5,
             support: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:  # fmt: skip
    """SimpleShot with `shots` support examples per class; mean/std of the metrics over `seeds` draws.

    Args:
        features, data: the scored split's image features and examples.
        shots: support examples drawn per class.
        seeds: draws to average (numpy seeds 0 .. seeds-1).
        support: optional (features, class ids) of a separate support split; by default the support is drawn from
            `data` itself and scored on the remaining examples (classes left without a query stay candidates).

    Returns `{"skipped": reason}` when nothing is left to score.

    Example:
        >>> few_shot(features, data, shots=5)["top1_accuracy"]  # doctest: +SKIP
    """
    from bioclip_hf.inference.fewshot import fit_simpleshot

    labels = np.asarray(data.labels)
    pool_features, pool_labels = (features, labels) if support is None else support
    per_seed = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        chosen = np.concatenate([rng.permutation(np.flatnonzero(pool_labels == c))[:shots] for c in np.unique(pool_labels)])
        query = np.setdiff1d(np.arange(len(labels)), chosen) if support is None else np.arange(len(labels))
        if not len(query):
            reason = f"no query examples left: every class has <= {shots} examples"
            logger.warning("%d-shot skipped: %s", shots, reason)
            return {"skipped": reason}
        classifier = fit_simpleshot(pool_features[chosen], pool_labels[chosen].tolist())
        scores = classifier.predict_scores(features[query]).numpy()
        per_seed.append(score_predictions(scores, labels[query], data.taxa, classes=np.asarray(classifier.classes)))
    summary: dict[str, Any] = {"seeds": list(range(seeds)), "support": "separate split" if support else "same split",
                               "per_seed": per_seed}  # fmt: skip
    for name in per_seed[0]:
        values = np.array([run[name] for run in per_seed])
        summary[name] = float(values.mean())
        summary[f"{name}_std"] = float(values.std())
    return summary


def support_set(model: Any, processor: Any, spec: TaskSpec, data: TaskData, config: EvalConfig):
    """(features, class ids) of the task's `support_split`, restricted to the scored classes; None without one."""
    if not spec.support_split:
        return None
    support_data = load_task_data(dataclasses.replace(spec, split=spec.support_split), max_per_class=config.max_per_class)
    index = {name: i for i, name in enumerate(data.class_names)}
    keep = [i for i, label in enumerate(support_data.labels) if support_data.class_names[label] in index]
    if not keep:
        raise ValueError(f"task {spec.name}: split {spec.support_split!r} has none of the scored classes")
    labels = np.array([index[support_data.class_names[support_data.labels[i]]] for i in keep])
    features = image_features(model, processor, [support_data.images[i] for i in keep], config.batch_size)
    return features, labels


def evaluate_task(model: Any, processor: Any, spec: TaskSpec, config: EvalConfig) -> dict[str, Any]:
    """Run zero-shot and few-shot on one task; returns its results entry.

    Example:
        >>> evaluate_task(model, processor, load_task("rare_species"), EvalConfig())  # doctest: +SKIP
    """
    data = load_task_data(spec, config.max_classes, config.max_per_class)
    if len(data.class_names) < 2:
        raise ValueError(f"task {spec.name}: need at least 2 classes, found {len(data.class_names)}")
    features = image_features(model, processor, data.images, config.batch_size)
    entry: dict[str, Any] = {
        "title": spec.title, "dataset": spec.dataset, "data_dir": spec.data_dir, "split": spec.split,
        "support_split": spec.support_split, "source": spec.source, "num_examples": len(data),
        "num_classes": len(data.class_names),
    }  # fmt: skip
    text_types = config.text_types or spec.text_types
    entry["zero_shot"] = zero_shot(model, processor, features, data, text_types, config.templates, config.batch_size)
    support = support_set(model, processor, spec, data, config) if config.shots else None
    entry["few_shot"] = {str(k): few_shot(features, data, k, config.seeds, support) for k in config.shots}
    return entry


def run(model_name_or_path: str, specs: list[TaskSpec], config: EvalConfig | None = None,
        output: str | Path | None = None, model: Any = None, processor: Any = None) -> dict[str, Any]:  # fmt: skip
    """Evaluate a model on `specs`; writes `output` (JSON) and the markdown table next to it when given.

    Args:
        model_name_or_path: checkpoint folder or Hub id (also recorded in the results).
        specs: task specs (see `bioclip_hf.evaluation.tasks.load_task`).
        config: run options.
        output: results JSON path; the table goes to the same path with suffix .md.
        model, processor: already loaded objects (skip loading).

    Example:
        >>> results = run("imageomics/bioclip", [load_task("rare_species")], output="results.json")  # doctest: +SKIP
    """
    config = config or EvalConfig()
    for spec in specs:  # fail on a task without data before loading any model
        _ = spec.location
    if model is None or processor is None:
        from bioclip_hf.models.loading import load_model_and_processor

        model, processor = load_model_and_processor(model_name_or_path, device=config.device)
    results: dict[str, Any] = {
        "model": str(model_name_or_path),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": {k: v for k, v in asdict(config).items() if k != "extra"},
        "tasks": {},
    }
    for spec in specs:
        logger.info("evaluating %s", spec.name)
        results["tasks"][spec.name] = evaluate_task(model, processor, spec, config)
    if output is not None:
        write_results(results, output)
    return results


def resolve_specs(tasks: list[str] | None, data_dir: str | None = None, split: str | None = None) -> list[TaskSpec]:
    """Task specs by name or YAML path, with a local `data_dir` / `split` override; no task: `data_dir` is an ad-hoc
    task (one class per sub-folder).

    Example:
        >>> [spec.name for spec in resolve_specs(["birds525"], data_dir="photos/birds525")]
        ['birds525']
    """
    if not tasks:
        if not data_dir:
            raise ValueError("give a task (one of: " + ", ".join(list_tasks()) + ") or a data folder")
        folder = Path(data_dir)
        return [TaskSpec(name=folder.name, title=folder.name, dataset=str(folder), split=split or "train")]
    specs = []
    for name in tasks:
        spec = load_task(name)
        if data_dir:
            spec.data_dir = data_dir
        if split:
            spec.split = split
        specs.append(spec)
    return specs
