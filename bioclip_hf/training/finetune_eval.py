"""Before/after measurements of a fine-tune: zero-shot accuracy on the held-out photos, and forgetting.

- **Held-out accuracy**: the held-out split's photos scored against the class prompts (the fine-tune's own classes):
  top-1, top-5 and, where lineages are known, per-rank accuracy (`evaluation.harness.score_predictions`, the
  harness's metric modules). The base model is scored before training, the shipped model after.
- **Forgetting**: zero-shot top-1 on a reference task outside the user's classes (a bundled task such as birds525,
  or a folder of class folders), before and after, through the evaluation harness (`evaluate_task`, one template).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)


def class_embeddings(model: Any, processor: Any, prompts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """L2-normalised text embeddings `[C, D]` (float32, CPU) of the already-templated class prompts.

    Example:
        >>> class_embeddings(model, processor, ["a photo of Corvus corax."]).shape  # doctest: +SKIP
        torch.Size([1, 512])
    """
    from bioclip_hf.treeoflife.text_embedding import encode_prompts

    was_training = model.training
    model.eval()
    try:
        return encode_prompts(model, processor, list(prompts), ("{}",), batch_size=batch_size)
    finally:
        model.train(was_training)


def split_features(model: Any, examples: Sequence[Any], transform: Callable, batch_size: int,
                   autocast: Callable[[], Any] = contextlib.nullcontext) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Normalised image features `[N, D]` and class ids `[N]` of `examples` (unreadable photos skipped).

    Args:
        model: a `BioCLIPModel` on its device.
        examples: `LabelledExample`s (e.g. `LabelledData.val`).
        transform: the processor's evaluation transform.
        batch_size: photos per forward pass.
        autocast: context factory for the forward (e.g. `accelerator.autocast`).
    """
    from bioclip_hf.data.labelled import labelled_loader

    param = next(model.parameters())
    features, labels = [], []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast():
            for pixels, label_ids in labelled_loader(examples, transform, batch_size, shuffle=False, seed=0):
                out = model.encode_image(pixels.to(param.device, param.dtype), normalize=True)
                features.append(out.float().cpu().numpy())
                labels.append(label_ids.numpy())
    finally:
        model.train(was_training)
    if not features:
        raise ValueError("none of the held-out photos could be read")
    return np.concatenate(features), np.concatenate(labels)


def score_split(features: np.ndarray, labels: np.ndarray, weights: torch.Tensor | np.ndarray,
                taxa: Sequence[Any]) -> dict[str, float]:  # fmt: skip
    """top-1 / top-5 (and per-rank where lineages are known) accuracy of `features @ weights.T`."""
    from bioclip_hf.evaluation.harness import score_predictions
    from bioclip_hf.treeoflife.taxonomy import Taxon

    weights = weights.detach().float().cpu().numpy() if isinstance(weights, torch.Tensor) else np.asarray(weights)
    scores = features @ weights.T
    result = score_predictions(scores, labels, [taxon or Taxon() for taxon in taxa])
    result["num_examples"] = int(len(labels))
    return result


def held_out_accuracy(model: Any, weights: torch.Tensor, data: Any, transform: Callable, batch_size: int,
                      autocast: Callable[[], Any] = contextlib.nullcontext) -> dict[str, float] | None:  # fmt: skip
    """Accuracy on `data.val` with class weights `weights` (`[C, D]`); None when there is no held-out photo.

    Example:
        >>> held_out_accuracy(model, weights, data, processor.image_processor.transform, 64)  # doctest: +SKIP
        {'top1_accuracy': 0.8, 'top5_accuracy': 1.0, 'num_examples': 40}
    """
    if not len(data.val):
        return None
    features, labels = split_features(model, data.val, transform, batch_size, autocast)
    return score_split(features, labels, weights, data.taxa)


# -- forgetting ---------------------------------------------------------------------------------------
def forgetting_specs(task: str | None, data_dir: str | None) -> list[Any]:
    """Task specs of the forgetting task: a bundled task name / task YAML (with its data folder), or an image folder
    by class; [] when no task is given. Fails early (before training) when the data cannot be found."""
    from bioclip_hf.evaluation.harness import resolve_specs
    from bioclip_hf.evaluation.tasks import list_tasks

    if not task:
        return []
    folder = Path(task)
    if folder.is_dir() and not data_dir:
        specs = resolve_specs(None, data_dir=str(folder))
    elif task in list_tasks() or folder.suffix in (".yaml", ".yml"):
        specs = resolve_specs([task], data_dir=data_dir)
    else:
        raise ValueError(f"forgetting task {task!r} is neither a bundled task ({', '.join(list_tasks())}) nor a folder")
    for spec in specs:
        _ = spec.location  # a task without data fails before training starts
    return specs


def forgetting_accuracy(model: Any, processor: Any, specs: Sequence[Any], batch_size: int,
                        max_classes: int | None = None, max_per_class: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Zero-shot top-1 per task and text type ("a photo of {}."), and their mean under "top1".

    Example:
        >>> forgetting_accuracy(model, processor, forgetting_specs("birds525", "photos/birds525"), 64)  # doctest: +SKIP
        {'tasks': {'birds525': {'scientific': 0.41, ...}}, 'top1': 0.38}
    """
    from bioclip_hf.evaluation.harness import EvalConfig, evaluate_task

    options = EvalConfig(shots=(), seeds=1, templates="single", batch_size=batch_size, max_classes=max_classes,
                         max_per_class=max_per_class)  # fmt: skip
    tasks: dict[str, dict[str, float]] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):  # training's random stream must not move
            for spec in specs:
                result = evaluate_task(model, processor, spec, options)
                tasks[spec.name] = {t: float(r["top1_accuracy"]) for t, r in result["zero_shot"].items()}
                tasks[spec.name]["num_examples"] = int(result["num_examples"])
    finally:
        model.train(was_training)
    values = [v for task in tasks.values() for k, v in task.items() if k != "num_examples"]
    return {"tasks": tasks, "top1": float(np.mean(values)) if values else float("nan")}


def forgetting_summary(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    """{"measured": False} without a task, else the task names, before/after mean top-1 and the change."""
    if not before or not after:
        return {"measured": False}
    return {"measured": True, "tasks": sorted(before["tasks"]), "before": before["top1"], "after": after["top1"],
            "change": after["top1"] - before["top1"], "detail": {"before": before["tasks"], "after": after["tasks"]}}  # fmt: skip


__all__ = ["class_embeddings", "forgetting_accuracy", "forgetting_specs", "forgetting_summary", "held_out_accuracy",
           "score_split", "split_features"]  # fmt: skip
