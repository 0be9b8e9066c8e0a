"""Validation while training: held-out contrastive loss, zero-shot accuracy through the evals harness, best model.

- `val/loss`: the CLIP loss of each validation batch against its own batch (the original trainer's
  validation, no cross-process gathering), averaged over all samples of all processes. The validation
  split is read from the start every time (no shuffling, epoch 0), so every evaluation scores the same
  samples with the same captions; per-batch text mixing uses `random.seed(batch index)` like the original.
- `eval/<task>/<text type>/top1` and `eval/top1` (mean over text types): zero-shot top-1 of a small task
  (`bioclip_hf.evaluation.harness.evaluate_task`), on the main process.
- `save_best`: the model with the best `best_metric` (lowest loss / highest accuracy) is written to
  `output_dir/best` (atomically) with `best.json` naming the step and value.

For `imageomics/TreeOfLife-10M` (and other catalog sources) the validation split is scattered over all image
tars: each process writes its share once to `output_dir/val_cache/` (`treeoflife_sources.write_split_shards`) and
later validations read that, with the same samples, order and captions.

Validation builds its own loader and runs under `torch.random.fork_rng`, so neither the training stream's
position nor any RNG moves: a run with validation trains exactly like one without, and resumes exactly.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

BEST_DIR = "best"
BEST_INFO = "best.json"
VAL_CACHE = "val_cache"  # a catalog source's validation split, written once per process


def higher_is_better(metric: str) -> bool:
    return "loss" not in metric


class Validator:
    """Runs the configured validations every `interval` optimizer steps (and after the last one).

    Args:
        config: the run's `TrainConfig` (`val_split`, `val_data`, `val_batches`, `eval_task`, ...).
        processor: the processor batches are made with.
        accelerator: the run's `Accelerator`.
        interval: optimizer steps between validations (0: only after the last step).
    """

    def __init__(self, config: Any, processor: Any, accelerator: Any, interval: int) -> None:
        self.config, self.processor, self.accelerator = config, processor, accelerator
        self.interval = interval
        self._specs = self._eval_specs() if (config.eval_task or config.eval_data_dir) else []
        self._source: tuple[str, int, int] | None = None

    @staticmethod
    def wanted(config: Any) -> bool:
        return bool(config.val_split or config.eval_task or config.eval_data_dir)

    def _eval_specs(self) -> list[Any]:
        from bioclip_hf.evaluation.harness import resolve_specs

        specs = resolve_specs([self.config.eval_task] if self.config.eval_task else None, data_dir=self.config.eval_data_dir)
        for spec in specs:
            _ = spec.location  # a task without data fails before training starts
        return specs

    def due(self, step: int) -> bool:
        return step == self.config.max_steps or bool(self.interval and step % self.interval == 0)

    def run(self, model: Any) -> dict[str, float]:
        """All configured metrics for the current weights (the same values on every process)."""
        unwrapped = self.accelerator.unwrap_model(model)
        devices = [self.accelerator.device] if self.accelerator.device.type == "cuda" else []
        metrics: dict[str, float] = {}
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            unwrapped.eval()
            try:
                if self.config.val_split:
                    metrics["val/loss"] = self.validation_loss(unwrapped)
                if self._specs:
                    metrics.update(self.zero_shot(unwrapped))
            finally:
                unwrapped.train()
        return metrics

    def _val_source(self) -> tuple[str, int, int]:
        """(source, rank, world size) validation reads. A catalog source's split is scattered over all its image
        tars, so each process writes its share once to `output_dir/val_cache/` and reads that afterwards."""
        from bioclip_hf.data.treeoflife_sources import find_tol_source, write_split_shards

        source = self.config.val_data or self.config.train_data
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        tol = find_tol_source(str(source))
        if tol is None:
            return source, rank, world
        cache = Path(self.config.output_dir) / VAL_CACHE / f"{self.config.val_split}-{rank}-of-{world}"
        if not (cache / self.config.val_split).is_dir():
            write_split_shards(tol, self.config.val_split, cache, rank=rank, world_size=world)
        if not any((cache / self.config.val_split).glob("*.tar")):
            raise ValueError(f"validation split {self.config.val_split!r} of {source} has no images for process {rank}")
        return str(cache), 0, 1

    def _val_loader(self) -> Any:
        from bioclip_hf.data.stream import build_dataloader

        config = self.config
        if self._source is None:  # located (and for a catalog source, gathered) once per run
            self._source = self._val_source()
        source, rank, world = self._source
        loader, _ = build_dataloader(
            source, self.processor, config.batch_size, split=config.val_split, text_type=config.text_type,
            text_mixing=config.text_mixing, seed=config.seed, shuffle_buffer=0, rank=rank, world_size=world,
            num_workers=config.num_workers,
        )  # fmt: skip
        return loader

    def validation_loss(self, model: Any) -> float:
        """Mean per-sample CLIP loss over the validation split (each batch scored against itself)."""
        from bioclip_hf.data.layouts import select_batch_text_type
        from bioclip_hf.training.loss import ClipLoss

        loss_fn, device = ClipLoss(), self.accelerator.device
        total = torch.zeros(2, dtype=torch.float64, device=device)
        for index, batch in enumerate(self._val_loader()):
            if self.config.val_batches and index >= self.config.val_batches:
                break
            batch = select_batch_text_type(batch, index)  # the original validation: random.seed(i) per batch
            with self.accelerator.autocast():
                out = model(input_ids=batch["input_ids"].to(device), pixel_values=batch["pixel_values"].to(device))
                loss = loss_fn(out.image_embeds.float(), out.text_embeds.float(), model.logit_scale.exp().float())
            size = len(batch["input_ids"])
            total += torch.stack([loss.double() * size, torch.tensor(size, dtype=torch.float64, device=device)])
        total = self.accelerator.reduce(total, reduction="sum")
        if total[1] == 0:
            raise ValueError(f"validation split {self.config.val_split!r} yielded no samples")
        return float(total[0] / total[1])

    def zero_shot(self, model: Any) -> dict[str, float]:
        """Zero-shot top-1 per task and text type (computed on the main process, shared with the others)."""
        from bioclip_hf.evaluation.harness import EvalConfig, evaluate_task

        metrics: dict[str, float] = {}
        if self.accelerator.is_main_process:
            options = EvalConfig(shots=(), seeds=1, templates=self.config.eval_templates, batch_size=self.config.batch_size,
                                 max_classes=self.config.eval_max_classes, max_per_class=self.config.eval_max_per_class)  # fmt: skip
            for spec in self._specs:
                for text_type, result in evaluate_task(model, self.processor, spec, options)["zero_shot"].items():
                    metrics[f"eval/{spec.name}/{text_type}/top1"] = float(result["top1_accuracy"])
            if metrics:
                metrics["eval/top1"] = sum(metrics.values()) / len(metrics)
        return _broadcast(self.accelerator, metrics)


def _broadcast(accelerator: Any, metrics: dict[str, float]) -> dict[str, float]:
    if accelerator.num_processes == 1:
        return metrics
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([metrics])[0]


def improved(metric: str, value: float, best: float | None) -> bool:
    """Whether `value` beats `best` for `metric` (NaN never does)."""
    if value is None or math.isnan(value):
        return False
    if best is None:
        return True
    return value > best if higher_is_better(metric) else value < best


def save_best_model(accelerator: Any, model: Any, processor: Any, config: Any, step: int, value: float) -> Path:
    """Write the current model + processor to `output_dir/best` (atomically) and `best.json`."""
    from bioclip_hf.utils.io import atomic_directory

    target = Path(config.output_dir) / BEST_DIR
    if accelerator.is_main_process:
        with atomic_directory(target) as scratch:
            accelerator.unwrap_model(model).save_pretrained(scratch, safe_serialization=True)
            processor.save_pretrained(scratch)
            (Path(scratch) / BEST_INFO).write_text(json.dumps({"step": step, "metric": config.best_metric, "value": value}))
        logger.info("new best %s = %.6g at step %d: saved %s", config.best_metric, value, step, target)
    accelerator.wait_for_everyone()
    return target


__all__ = ["BEST_DIR", "BEST_INFO", "Validator", "improved", "save_best_model"]
