"""Fine-tune BioCLIP on your own labelled photos: `bioclip-hf finetune` and `finetune(config)`.

One call reads the photos (`bioclip_hf.data.labelled`: a folder by class, a table, a `datasets` dataset), scores the
base model zero-shot on the held-out photos (and on a reference task, for forgetting), trains with the FLYP objective
(`finetune_methods`: LoRA by default, full fine-tuning, or a class-text-initialised head), optionally interpolates
with the base weights (WiSE-FT), scores again, and writes a model folder that predicts its own classes
(`finetune_outputs`), optionally published to the Hub.

Training runs under 🤗 Accelerate (for several GPUs: `accelerate launch -m bioclip_hf.cli finetune DATA ...`; each
process trains on its share of the photos), with bf16 autocast where the hardware has it and optional
gradient checkpointing. Checkpoints (`output_dir/checkpoints/checkpoint-<step>`, written atomically by
`trainer.save_checkpoint`) hold the weights, optimizer, scheduler, RNGs and the data position (epoch, next batch):
`resume="latest"` continues exactly where a run stopped, to bit-identical final weights.

Example:
    >>> result = finetune(FinetuneConfig(data="photos/", model="imageomics/bioclip", output_dir="fish"))  # doctest: +SKIP
    >>> result.results["held_out"]["after"]["top1_accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from bioclip_hf.training.finetune_config import FinetuneConfig, lora_target_names

logger = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    """What `finetune` made: the output model folder, its results (as in `results.json`), the Hub URL if pushed and
    the unreadable photos that were skipped (key -> reason)."""

    output_dir: Path
    results: dict[str, Any]
    hub_url: str | None = None
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)


class RankShard(Sequence):
    """Process `rank`'s equal share of `examples` (every `world`-th example; the remainder is left out so that every
    process runs the same number of steps)."""

    def __init__(self, examples: Sequence[Any], rank: int, world: int):
        self.examples, self.rank, self.world = examples, rank, world
        self.size = len(examples) // world

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.size))]
        if not -self.size <= index < self.size:
            raise IndexError(index)
        return self.examples[(index % self.size) * self.world + self.rank]


class _DataPosition:
    """The loader position as `trainer.save_checkpoint` stores it (`state_dict`): epoch and next batch."""

    def __init__(self) -> None:
        self.epoch, self.next_batch = 0, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "next_batch": self.next_batch}


def _mixed_precision(setting: str) -> str:
    """'auto' -> bf16 on a CUDA GPU that has it, else 'no' (CPU bf16 only when asked: slow without AVX512-BF16/AMX)."""
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def _make_accelerator(config: FinetuneConfig) -> Any:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import ProjectConfiguration

    precision = _mixed_precision(config.mixed_precision)
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, precision) and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        # An earlier run in this (single) process fixed another precision; Accelerate refuses to change it.
        AcceleratorState._reset_state(reset_partial_state=False)
    project = ProjectConfiguration(project_dir=config.output_dir, logging_dir=config.output_dir)
    log_with = None if config.report_to == "none" else config.report_to
    return Accelerator(mixed_precision=precision, log_with=log_with,
                       project_config=project)  # fmt: skip


def load_data(config: FinetuneConfig) -> Any:
    """The labelled photos of `config` (`bioclip_hf.data.labelled.load_labelled_data`)."""
    from bioclip_hf.data.labelled import load_labelled_data

    if not config.data:
        raise ValueError("no data: give the labelled photos (a folder by class, a table or a dataset)")
    return load_labelled_data(
        config.data, image_column=config.image_column, label_column=config.label_column, file_column=config.file_column,
        label_taxa=config.label_taxa, text_type=config.text_type, val_fraction=config.val_fraction, seed=config.seed,
        split=config.split, val_split=config.val_split, streaming=config.streaming, max_per_class=config.max_per_class,
    )  # fmt: skip


def load_base(config: FinetuneConfig) -> tuple[Any, Any, dict[str, Any]]:
    """(model on the CPU, processor, provenance {id, revision, commit}) of the base model, through `models.loading`."""
    from bioclip_hf.models.loading import load_model, load_processor, resolve_model_source

    source = resolve_model_source(config.model, config.revision, local_alternative="a local model folder (--model DIR)")
    model = load_model(source, device="cpu")
    processor = load_processor(source)
    return model, processor, dict(getattr(model, "bioclip_source", None) or source.provenance())


@dataclass
class _Run:
    """Everything the loop and the reports share."""

    config: FinetuneConfig
    accelerator: Any
    data: Any
    processor: Any
    base: dict[str, Any]
    module: Any = None  # the FlypModule (prepared)
    peft_model: Any = None
    base_state: dict[str, torch.Tensor] | None = None
    prompts: list[str] | None = None
    forgetting: list[Any] | None = None
    before: dict[str, Any] | None = None
    max_steps: int = 0
    steps_per_epoch: int | None = None
    parameters: tuple[int, int] = (0, 0)  # (trainable, all) while training

    @property
    def autocast(self) -> Callable[[], Any]:
        return self.accelerator.autocast


def _build_module(run: _Run, model: Any) -> Any:
    """Apply the method to `model` and wrap it with the class texts in a `FlypModule`."""
    from bioclip_hf.training.finetune_eval import class_embeddings
    from bioclip_hf.training.finetune_methods import FlypModule, apply_lora, set_trainable, tokenize_classes
    from bioclip_hf.training.trainer import _enable_gradient_checkpointing

    config = run.config
    if config.wise_ft is not None:
        run.base_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    embeds = class_embeddings(model, run.processor, run.prompts, config.eval_batch_size)
    if config.method == "lora":
        run.peft_model = apply_lora(model, config.lora_rank, config.lora_alpha, config.lora_dropout,
                                    lora_target_names(config.lora_targets), config.lora_text, run.base.get("id"),
                                    run.base.get("commit") or run.base.get("revision"), config.seed)  # fmt: skip
    else:
        set_trainable(model, config.method)
    if config.gradient_checkpointing:
        _enable_gradient_checkpointing(model)
    return FlypModule(model, tokenize_classes(run.processor, run.prompts), embeds, head=config.method == "head")


def _held_out(run: _Run, model: Any, weights: torch.Tensor) -> dict[str, Any]:
    """Held-out accuracy of `model` with class weights `weights`."""
    from bioclip_hf.training.finetune_eval import held_out_accuracy

    transform = run.processor.image_processor.transform
    model = model.to(run.accelerator.device)
    return held_out_accuracy(model, weights, run.data, transform, run.config.eval_batch_size, run.autocast)


def _measure(run: _Run, model: Any, weights: torch.Tensor) -> dict[str, Any]:
    """Held-out accuracy and forgetting of `model` with class weights `weights`."""
    from bioclip_hf.training.finetune_eval import forgetting_accuracy

    config = run.config
    model = model.to(run.accelerator.device)
    out = {"held_out": _held_out(run, model, weights)}
    out["forgetting"] = forgetting_accuracy(model, run.processor, run.forgetting, config.eval_batch_size,
                                            config.forgetting_max_classes, config.forgetting_max_per_class) if run.forgetting else None  # fmt: skip
    return out


def _plan_steps(config: FinetuneConfig, loader: Any) -> tuple[int, int | None]:
    """(max_steps, steps per epoch): `max_steps`, else ceil(epochs * batches per epoch)."""
    try:
        per_epoch = len(loader)
    except TypeError:
        per_epoch = None
    if config.max_steps:
        return config.max_steps, per_epoch
    if not per_epoch:
        raise ValueError("the number of training photos is unknown (a stream): set max_steps")
    return max(1, math.ceil(config.epochs * per_epoch)), per_epoch


def _train_loader(run: _Run, epoch: int, start_batch: int) -> Any:
    from bioclip_hf.data.augment import train_transform
    from bioclip_hf.data.labelled import labelled_loader

    config, accelerator = run.config, run.accelerator
    examples = run.data.train
    if accelerator.num_processes > 1:
        if not isinstance(examples, Sequence):
            raise ValueError("several processes need random access to the photos: do not stream the data")
        examples = RankShard(examples, accelerator.process_index, accelerator.num_processes)
    image_processor = run.processor.image_processor
    augment = functools.partial(train_transform, image_processor) if config.augment != "none" else None
    return labelled_loader(examples, image_processor.transform, config.batch_size, shuffle=True, seed=config.seed,
                           num_workers=config.num_workers, epoch=epoch, start_batch=start_batch, augment=augment,
                           report=run.data.report, pin_memory=accelerator.device.type == "cuda")  # fmt: skip


def _optimizer_and_scheduler(run: _Run) -> tuple[Any, Any]:
    from transformers import get_cosine_schedule_with_warmup

    from bioclip_hf.training.trainer import build_optimizer

    config = run.config
    options = SimpleNamespace(learning_rate=config.peak_learning_rate, weight_decay=config.weight_decay,
                              adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8)  # fmt: skip
    optimizer = build_optimizer(run.module, options)
    return optimizer, get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, run.max_steps)


def _train_step(run: _Run, optimizer: Any, scheduler: Any, pixels: torch.Tensor, label_ids: torch.Tensor) -> float:
    """One FLYP step: logits over all classes, cross-entropy, clipped AdamW update."""
    from bioclip_hf.training.finetune_methods import flyp_loss

    accelerator, module = run.accelerator, run.module
    with accelerator.autocast():
        logits = module(pixels.to(accelerator.device))
        loss = flyp_loss(logits.float(), label_ids.to(accelerator.device))
    accelerator.backward(loss)
    if run.config.max_grad_norm > 0:
        accelerator.clip_grad_norm_([p for p in module.parameters() if p.requires_grad], run.config.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    scale = accelerator.unwrap_model(module).model.logit_scale
    if scale.requires_grad:
        with torch.no_grad():  # open_clip clamps the temperature at 100
            scale.clamp_(0, math.log(100))
    return float(loss.detach())


def _resume(run: _Run) -> tuple[Any, _DataPosition]:
    """TrainerState and data position to start from (a checkpoint's, when resuming)."""
    from bioclip_hf.training.trainer import TrainerState, resolve_resume

    state, position = TrainerState(), _DataPosition()
    resume_from = resolve_resume(run.config)
    if resume_from is not None:
        run.accelerator.load_state(str(resume_from))
        state = TrainerState.load(resume_from, run.accelerator.process_index)
        position.epoch, position.next_batch = state.data_state["epoch"], state.data_state["next_batch"]
        logger.info("resumed from %s at step %d (epoch %d, batch %d)", resume_from, state.step, position.epoch,
                    position.next_batch)  # fmt: skip
    elif run.config.resume:
        logger.info("no checkpoint in %s yet: starting from step 0", run.config.output_dir)
    return state, position


def _train(run: _Run, optimizer: Any, scheduler: Any, on_step: Callable[[int], None] | None) -> dict[str, Any]:
    """The loop: epochs of the labelled loader until `max_steps`; checkpoints, logs; returns training stats."""
    from tqdm.auto import tqdm

    from bioclip_hf.training.trainer import save_checkpoint

    config, accelerator = run.config, run.accelerator
    state, position = _resume(run)
    loader = _train_loader(run, position.epoch, position.next_batch)
    save_every = config.save_steps or run.steps_per_epoch or 0
    progress = tqdm(total=run.max_steps, initial=state.step, desc="finetune",
                    disable=not (config.progress_bar and accelerator.is_local_main_process))  # fmt: skip
    started, loss, empty = time.perf_counter(), float("nan"), 0
    while state.step < run.max_steps:
        stepped = False
        for pixels, label_ids in loader:
            loss = _train_step(run, optimizer, scheduler, pixels, label_ids)
            state.step, state.batches_seen, stepped = state.step + 1, state.batches_seen + 1, True
            position.next_batch = loader.next_batch
            progress.update(1)
            if state.step % max(config.log_steps, 1) == 0 or state.step == run.max_steps:
                accelerator.log({"train/loss": loss, "train/lr": scheduler.get_last_lr()[0]}, step=state.step)
                progress.set_postfix(loss=f"{loss:.4f}")
            if save_every and state.step % save_every == 0 and state.step < run.max_steps:
                save_checkpoint(accelerator, config, state, position)
            if on_step is not None:
                on_step(state.step)
            if state.step >= run.max_steps:
                break
        else:
            position.epoch, position.next_batch = position.epoch + 1, 0
            loader.set_epoch(position.epoch)
        empty = 0 if stepped else empty + 1
        if empty >= 2:
            raise ValueError("the training photos yielded no batches (are they all unreadable?)")
    progress.close()
    return {"steps": state.step, "final_loss": loss, "seconds_this_session": round(time.perf_counter() - started, 3),
            "unreadable_images": len(loader.skipped)}  # fmt: skip


def _finish_model(run: _Run, adapter_scratch: Path) -> tuple[Any, torch.Tensor, dict[str, Any] | None]:
    """(final model, final class weights, accuracy of the un-interpolated fine-tune when WiSE-FT changes it)."""
    from bioclip_hf.training.finetune_eval import class_embeddings
    from bioclip_hf.training.finetune_methods import merge_lora, wise_ft

    config = run.config
    module = run.accelerator.unwrap_model(run.module)
    model = module.model
    if run.peft_model is not None:
        if config.save_adapter:
            run.peft_model.save_pretrained(str(adapter_scratch))
        model = merge_lora(run.peft_model)
    model.eval()
    head = module.head.detach().clone() if module.head is not None else None
    tuned_only = None
    if config.wise_ft is not None and config.wise_ft != 1:
        weights = head if head is not None else class_embeddings(model, run.processor, run.prompts, config.eval_batch_size)
        tuned_only = _held_out(run, model, weights)  # the forgetting task is scored once, on the shipped weights
        model.load_state_dict(wise_ft(run.base_state, model.state_dict(), config.wise_ft))
        if head is not None:
            head = wise_ft({"w": module.class_embeds.cpu()}, {"w": head.cpu()}, config.wise_ft)["w"]
    weights = head if head is not None else class_embeddings(model, run.processor, run.prompts, config.eval_batch_size)
    return model, weights.detach().float().cpu(), tuned_only


def _results(run: _Run, after: dict[str, Any], tuned_only: dict[str, Any] | None, stats: dict[str, Any]) -> dict[str, Any]:
    from bioclip_hf.training.finetune_eval import forgetting_summary
    from bioclip_hf.training.finetune_outputs import RESULTS_FORMAT

    config = run.config
    trainable, total = run.parameters
    held_out = {"before": run.before["held_out"], "after": after["held_out"], "template": config.template}
    if tuned_only is not None:
        held_out["fine_tuned_before_wise_ft"] = tuned_only
    return {
        "format": RESULTS_FORMAT, "base_model": run.base, "method": config.method,
        "hyperparameters": hyperparameters(config, run.max_steps), "data": run.data.describe(), "held_out": held_out,
        "forgetting": forgetting_summary(run.before["forgetting"], after["forgetting"]),
        "training": {**stats, "trainable_parameters": trainable, "total_parameters": total,
                     "mixed_precision": run.accelerator.mixed_precision, "processes": run.accelerator.num_processes},
    }  # fmt: skip


def hyperparameters(config: FinetuneConfig, max_steps: int) -> dict[str, Any]:
    """The settings that shaped the weights (the card's table and `results.json`)."""
    values: dict[str, Any] = {"method": config.method, "objective": "FLYP (cross-entropy over all class texts)"}
    if config.method == "lora":
        values.update(lora_rank=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      lora_targets=config.lora_targets, lora_text_tower=config.lora_text)  # fmt: skip
    values.update(epochs=config.epochs, steps=max_steps, batch_size=config.batch_size,
                  learning_rate=config.peak_learning_rate, schedule=f"cosine, {config.warmup_steps} warm-up steps",
                  weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm, augment=config.augment,
                  template=config.template, wise_ft_alpha=config.wise_ft, seed=config.seed,
                  gradient_checkpointing=config.gradient_checkpointing)  # fmt: skip
    return values


def _log_results(run: _Run, results: dict[str, Any]) -> None:
    """The before/after numbers to the trackers (TensorBoard): before at step 0, after at the last step."""
    metrics_at = {0: {}, run.max_steps: {}}
    for when, step in (("before", 0), ("after", run.max_steps)):
        for name, value in (results["held_out"].get(when) or {}).items():
            if name.endswith("_accuracy"):
                metrics_at[step][f"held_out/{name}"] = value
        if results["forgetting"].get("measured"):
            metrics_at[step]["forgetting/top1"] = results["forgetting"][when]
    for step, metrics in metrics_at.items():
        if metrics:
            run.accelerator.log(metrics, step=step)


def _check_output_dir(config: FinetuneConfig) -> None:
    """Never overwrite a finished fine-tune: its folder must be new, or hold the checkpoints of a run to resume."""
    from bioclip_hf.training.finetune_outputs import RESULTS_NAME
    from bioclip_hf.training.trainer import list_checkpoints
    from bioclip_hf.utils.errors import UsageError

    output = Path(config.output_dir)
    if output.exists() and not output.is_dir():
        raise UsageError(f"output_dir {output} exists and is not a folder")
    if (output / RESULTS_NAME).is_file() and not (config.resume and list_checkpoints(output)):
        raise UsageError(f"{output} already holds a finished fine-tune ({RESULTS_NAME}); choose another output folder")


def finetune(config: FinetuneConfig, *, on_step: Callable[[int], None] | None = None) -> FinetuneResult:
    """Fine-tune `config.model` on `config.data` and write the output model folder (see the module docstring).

    Args:
        config: the run configuration (saved with the output as `finetune_config.yaml`).
        on_step: called with the step number after every optimizer step (and its checkpoint), e.g. for progress.

    Example:
        >>> finetune(FinetuneConfig(data="photos/", model="imageomics/bioclip", method="full", epochs=3))  # doctest: +SKIP
    """
    from accelerate.utils import set_seed

    from bioclip_hf.training.finetune_eval import forgetting_specs
    from bioclip_hf.training.finetune_methods import trainable_share
    from bioclip_hf.training.finetune_outputs import build_label_index, push_output, write_output

    _check_output_dir(config)
    data = load_data(config)  # bad data fails before the model loads
    forgetting = forgetting_specs(config.forgetting_task, config.forgetting_data_dir)
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)  # only once the inputs are known to be good
    accelerator = _make_accelerator(config)
    set_seed(config.seed)
    model, processor, base = load_base(config)
    run = _Run(config, accelerator, data, processor, base, forgetting=forgetting, prompts=data.class_texts(config.template))
    run.module = _build_module(run, model)
    run.parameters = trainable_share(run.module)
    run.before = _measure(run, model, run.module.class_embeds)
    probe = _train_loader(run, 0, 0)
    run.max_steps, run.steps_per_epoch = _plan_steps(config, probe)
    optimizer, scheduler = _optimizer_and_scheduler(run)
    run.module, optimizer = accelerator.prepare(run.module, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    accelerator.init_trackers("logs", config={k: ("" if v is None else v) for k, v in config.to_dict().items()})
    stats = _train(run, optimizer, scheduler, on_step)
    output = Path(config.output_dir)
    with tempfile.TemporaryDirectory(dir=output.parent) as scratch:
        model, weights, tuned_only = _finish_model(run, Path(scratch) / "adapter")
        results = _results(run, _measure(run, model, weights), tuned_only, stats)
        _log_results(run, results)
        if accelerator.is_main_process:
            index = build_label_index(data, weights, {"model": base.get("id"), "template": config.template})
            adapter = Path(scratch) / "adapter" if config.save_adapter and run.peft_model is not None else None
            write_output(output, model.cpu(), processor, index, results, config, adapter)
    accelerator.end_training()
    hub_url = None
    if accelerator.is_main_process:
        if not config.keep_checkpoints:
            shutil.rmtree(output / "checkpoints", ignore_errors=True)
        if config.push_to_hub:
            hub_url = push_output(output, config.push_to_hub, config.hub_private)
            logger.info("pushed %s to %s", output, hub_url)
    accelerator.wait_for_everyone()
    return FinetuneResult(output, results, hub_url, dict(data.report.skipped))


__all__ = ["FinetuneResult", "RankShard", "finetune", "hyperparameters", "load_base", "load_data"]
