"""Contrastive (CLIP/BioCLIP) training with 🤗 Accelerate: `bioclip-hf train` / `accelerate launch -m bioclip_hf.train`.

One optimizer step = `gradient_accumulation_steps` micro-batches per process. Features are
all-gathered across processes with gradients (`ClipLoss`, open_clip semantics), so N processes with
batch B train like one process with batch N*B. The schedule is step-based (linear warm-up, cosine
decay). Checkpoints are written to a scratch folder and renamed into place (a crash never leaves a
half-written `checkpoint-N`); they hold the accelerate state (weights, optimizer, scheduler, RNGs)
plus each process's data-stream position, so resuming continues exactly where the run stopped.

Note that gradient accumulation only averages gradients of micro-batches: the negatives of the
contrastive loss are those of one micro-batch (times processes), not of the whole accumulated batch.

Example:
    accelerate launch -m bioclip_hf.train run.yaml --max_steps 1000
    bioclip-hf train run.yaml --resume latest
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from bioclip_hf.data.layouts import select_batch_text_type
from bioclip_hf.training.config import RUN_CONFIG_NAME, Schedule, TrainConfig, resolve_schedule
from bioclip_hf.training.loss import ClipLoss
from bioclip_hf.training.model_init import build_model_and_processor

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
MODEL_DIR = "model"
TRAINER_STATE_NAME = "trainer_state_{rank}.json"
LOG_NAME = "train_log.jsonl"  # one JSON line of metrics per logging step
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")

# data_fn(processor, config, rank, world_size) -> iterable of {"pixel_values", "input_ids"} batches.
DataFn = Callable[[Any, TrainConfig, int, int], Iterable[dict[str, torch.Tensor]]]


@dataclass
class TrainerState:
    """Progress of one process: optimizer steps done and micro-batches consumed from its data stream."""

    step: int = 0
    batches_seen: int = 0
    data_state: dict[str, Any] | None = None
    best_value: float | None = None  # of `best_metric`, for save_best
    best_step: int | None = None

    def save(self, folder: Path, rank: int) -> None:
        (folder / TRAINER_STATE_NAME.format(rank=rank)).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, folder: Path, rank: int) -> TrainerState:
        path = folder / TRAINER_STATE_NAME.format(rank=rank)
        if not path.is_file():
            raise FileNotFoundError(f"{folder} has no {path.name}: not a checkpoint of a run with this many processes")
        return cls(**json.loads(path.read_text()))


# -- model, optimizer, data -------------------------------------------------------------------------
def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; like open_clip, no weight decay on gains, biases, embeddings' 1-d params and the logit scale."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exclude = param.ndim < 2 or "norm" in name or "bias" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(param)
    groups = [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": config.weight_decay}]
    return torch.optim.AdamW(
        groups, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon
    )


def default_data_fn(processor: Any, config: TrainConfig, rank: int, world_size: int) -> Iterable[dict[str, torch.Tensor]]:
    """Batches of `config.train_data` (shards, TreeOfLife-10M/200M; see `bioclip_hf.data.stream`)."""
    from bioclip_hf.data.stream import build_dataloader

    if not config.train_data:
        raise ValueError("train_data is not set: give the data to train on (shards folder or Hub dataset repo)")
    loader, _stats = build_dataloader(
        config.train_data, processor, config.batch_size, split=config.train_split, text_type=config.text_type,
        text_mixing=config.text_mixing, seed=config.seed, shuffle_buffer=config.shuffle_buffer, rank=rank,
        world_size=world_size, num_workers=config.num_workers, augment=config.train_augment,
    )  # fmt: skip
    return loader


def batch_stream(loader: Iterable[dict[str, torch.Tensor]], state: TrainerState) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches (the loader is re-iterated per epoch) starting at `state`'s stream position.

    A loader with `state_dict`/`load_state_dict` is restored directly; any other deterministic loader
    is fast-forwarded by replaying the `state.batches_seen` batches already trained on.
    """
    skip = state.batches_seen
    if state.data_state is not None and hasattr(loader, "load_state_dict"):
        loader.load_state_dict(state.data_state)
        skip = 0
    empty_epochs = 0
    while True:
        empty_epochs += 1
        for batch in loader:
            empty_epochs = 0
            if skip:
                skip -= 1
                continue
            yield batch
        # A restored loader may legitimately finish an epoch at once (checkpoint taken at its end); twice is empty data.
        if empty_epochs >= 2:
            raise ValueError("the training data yielded no batches (empty shards, or fewer samples than batch_size?)")


# -- checkpoints --------------------------------------------------------------------------------------
def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    found = [(int(m.group(1)), p) for p in root.glob("checkpoint-*") if (m := _CHECKPOINT_RE.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def resolve_resume(config: TrainConfig) -> Path | None:
    """Folder to resume from: `resume` itself, the newest checkpoint for 'latest' (None if there is none)."""
    if not config.resume:
        return None
    if config.resume == "latest":
        checkpoints = list_checkpoints(config.output_dir)
        return checkpoints[-1] if checkpoints else None
    path = Path(config.resume)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint to resume from not found: {path}")
    return path


def save_checkpoint(accelerator: Any, config: TrainConfig, state: TrainerState, loader: Any) -> Path:
    """Write `checkpoints/checkpoint-<step>` atomically: save into a scratch folder, then rename."""
    root = Path(config.output_dir) / CHECKPOINTS_DIR
    final, scratch = root / f"checkpoint-{state.step}", root / f".checkpoint-{state.step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(scratch), safe_serialization=True)
    if hasattr(loader, "state_dict"):
        state.data_state = loader.state_dict()
    state.save(scratch, accelerator.process_index)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(scratch, final)
        if config.save_total_limit:
            for old in list_checkpoints(config.output_dir)[: -config.save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
        logger.info("saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def save_final_model(accelerator: Any, model: Any, processor: Any, config: TrainConfig) -> Path:
    """Save the trained model + processor + model card (transformers format) to `output_dir/model`."""
    from bioclip_hf.utils.io import atomic_directory

    target = Path(config.output_dir) / MODEL_DIR
    if accelerator.is_main_process:
        with atomic_directory(target) as scratch:
            unwrapped = accelerator.unwrap_model(model)
            unwrapped.save_pretrained(scratch, safe_serialization=True)
            processor.save_pretrained(scratch)
            write_model_card(scratch, config)
    accelerator.wait_for_everyone()
    return target


def write_model_card(folder: Path, config: TrainConfig) -> None:
    """README.md model card of a trained model: the project's card template (`bioclip_hf.hub.cards`)."""
    from bioclip_hf.hub.cards import CardInfo, build_model_card

    def hub_id(value: str | None) -> str | None:  # local paths do not belong in card metadata
        return value if value and not Path(value).exists() and value.count("/") == 1 else None

    init = f"`{config.init_from}`" if config.init_from else f"scratch (`{config.model_config}`)"
    summary = (
        f"A CLIP-style model trained with `bioclip-hf train` (initialised from {init}) on `{config.train_data}` "
        f"with `{config.text_type}` captions for {config.max_steps} steps of {config.batch_size} images per process."
    )
    data = hub_id(config.train_data)
    info = CardInfo(
        repo_id=config.push_to_hub or Path(config.output_dir).name, base_model=hub_id(config.init_from),
        datasets=[data] if data else [], has_open_clip=False, summary=summary,
    )
    card = build_model_card(info)
    card.save(str(folder / "README.md"))


def push_to_hub(folder: Path, config: TrainConfig) -> str:
    """Upload `folder` to the Hub repo `config.push_to_hub` (honours HF_ENDPOINT / HF_TOKEN); returns its URL."""
    from bioclip_hf.hub.upload import upload

    commit = upload(config.push_to_hub, folder=folder, private=config.hub_private,
                    commit_message="Upload model trained with bioclip-hf")  # fmt: skip
    return str(commit.repo_url)


# -- training loop ------------------------------------------------------------------------------------
def _make_accelerator(config: TrainConfig) -> Any:
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    project = ProjectConfiguration(project_dir=config.output_dir, logging_dir=config.output_dir)
    log_with = None if config.report_to == "none" else config.report_to
    # Accumulation is done by hand (see `_optimizer_step`), so accelerate keeps its default of 1.
    return Accelerator(mixed_precision=config.mixed_precision, log_with=log_with, project_config=project)


def _optimizer_step(
    accelerator: Any, model: Any, optimizer: Any, scheduler: Any, loss_fn: ClipLoss,
    batches: Iterator[dict[str, torch.Tensor]], config: TrainConfig, state: TrainerState,
) -> float:
    """Accumulate gradients over micro-batches, then one clipped AdamW update; returns the mean loss."""
    unwrapped = accelerator.unwrap_model(model)
    accumulation = config.gradient_accumulation_steps
    total = 0.0
    for micro in range(accumulation):
        batch = select_batch_text_type(next(batches), state.step)
        state.batches_seen += 1
        # Gradients are all-reduced only on the last micro-batch.
        sync = contextlib.nullcontext() if micro == accumulation - 1 else accelerator.no_sync(model)
        with sync:
            output = model(
                input_ids=batch["input_ids"].to(accelerator.device),
                pixel_values=batch["pixel_values"].to(accelerator.device),
            )
            loss = loss_fn(output.image_embeds.float(), output.text_embeds.float(), unwrapped.logit_scale.exp().float())
            accelerator.backward(loss / accumulation)
        total += loss.item() / accumulation
    if config.max_grad_norm > 0:
        accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():  # open_clip clamps the temperature at 100
        unwrapped.logit_scale.clamp_(0, math.log(100))
    return total


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines of steps after `step` (written before a crash, about to be trained again)."""
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in lines))


def _tracker_config(config: TrainConfig) -> dict[str, Any]:
    # TensorBoard's hparams accept only scalars and strings.
    return {k: ("" if v is None else v) for k, v in config.to_dict().items()}


def _enable_gradient_checkpointing(model: Any) -> None:
    """Non-reentrant activation checkpointing (recompute each layer in backward)."""
    # Renamed activation_checkpointing_enable in recent transformers (the old name warns).
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def plan_run(config: TrainConfig, world_size: int, custom_data: bool = False) -> tuple[TrainConfig, Schedule]:
    """The config with epochs / global batch turned into `max_steps` and `gradient_accumulation_steps`.

    An empty `dataset_size` with `num_epochs` is counted from `train_data` (catalog rows of the split, or a shard
    folder's build_report.json / sizes.json).
    """
    counted = None
    if config.num_epochs is not None and config.dataset_size is None and not custom_data and config.train_data:
        from bioclip_hf.data.stream import source_num_examples

        counted = source_num_examples(config.train_data, config.train_split)
    schedule = resolve_schedule(config, world_size, counted)
    resolved = dataclasses.replace(config, max_steps=schedule.max_steps, dataset_size=schedule.dataset_size,
                                   gradient_accumulation_steps=schedule.gradient_accumulation_steps)  # fmt: skip
    if config.num_epochs is not None or config.global_batch_size:
        logger.info("schedule: %d processes x batch %d x %d accumulation = global batch %d; %s steps per epoch of %s "
                    "samples -> max_steps %d", world_size, config.batch_size, schedule.gradient_accumulation_steps,
                    schedule.global_batch_size, schedule.steps_per_epoch, schedule.dataset_size, schedule.max_steps)  # fmt: skip
    if resolved.warmup_steps > resolved.max_steps:
        logger.warning("warmup_steps %d > max_steps %d: the learning rate never reaches its peak",
                       resolved.warmup_steps, resolved.max_steps)  # fmt: skip
    return resolved, schedule


def _log_metrics(accelerator: Any, config: TrainConfig, step: int, metrics: dict[str, float]) -> None:
    accelerator.log(metrics, step=step)
    if accelerator.is_main_process:
        with open(Path(config.output_dir) / LOG_NAME, "a") as log_file:
            log_file.write(json.dumps({"step": step, **metrics}) + "\n")


def _validate(validator: Any, accelerator: Any, model: Any, processor: Any, config: TrainConfig, state: TrainerState) -> None:
    """Run the validations, log them, and keep the best model when asked."""
    from bioclip_hf.training.validation import improved, save_best_model

    metrics = validator.run(model)
    logger.info("step %d: %s", state.step, ", ".join(f"{k} {v:.6g}" for k, v in metrics.items()))
    _log_metrics(accelerator, config, state.step, metrics)
    if config.save_best:
        if config.best_metric not in metrics:
            raise ValueError(f"best_metric {config.best_metric!r} is not among the validation metrics {sorted(metrics)}")
        value = metrics[config.best_metric]
        if improved(config.best_metric, value, state.best_value):
            state.best_value, state.best_step = value, state.step
            save_best_model(accelerator, model, processor, config, state.step, value)


def _prepare(config: TrainConfig, data_fn: DataFn | None) -> tuple:
    """Accelerator, model, optimizer, scheduler, loss, resolved config and schedule of a run."""
    from accelerate.utils import set_seed
    from transformers import get_cosine_schedule_with_warmup

    accelerator = _make_accelerator(config)
    config, schedule = plan_run(config, accelerator.num_processes, custom_data=data_fn is not None)
    set_seed(config.seed)
    model, processor = build_model_and_processor(config)
    if config.gradient_checkpointing:
        _enable_gradient_checkpointing(model)
    model.train()
    optimizer = build_optimizer(model, config)
    scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.max_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)  # stepped by hand: once per optimizer step
    loss_fn = ClipLoss(local_loss=config.local_loss, gather_with_grad=config.gather_with_grad,
                       rank=accelerator.process_index, world_size=accelerator.num_processes)  # fmt: skip
    return accelerator, config, schedule, model, processor, optimizer, scheduler, loss_fn


def train(config: TrainConfig, data_fn: DataFn | None = None) -> Path:
    """Train according to `config`; returns the folder of the final model (transformers format).

    Args:
        config: the run configuration (saved, with epochs resolved into steps, to `output_dir/run_config.yaml`).
        data_fn: optional `(processor, config, rank, world_size) -> iterable of batches`; defaults to
            `config.train_data` (see `bioclip_hf.data.stream`). It must be deterministic for exact resume.

    Example:
        >>> train(TrainConfig(init_from="imageomics/bioclip", train_data="shards/", max_steps=100))  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    from bioclip_hf.training.validation import Validator

    accelerator, config, schedule, model, processor, optimizer, scheduler, loss_fn = _prepare(config, data_fn)
    validator = None
    if Validator.wanted(config):
        validator = Validator(config, processor, accelerator, config.eval_steps or schedule.steps_per_epoch or 0)
    state = TrainerState()
    resume_from = resolve_resume(config)
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        state = TrainerState.load(resume_from, accelerator.process_index)
        logger.info("resumed from %s at step %d", resume_from, state.step)
        if accelerator.is_main_process:
            _truncate_log(Path(config.output_dir) / LOG_NAME, state.step)
    elif config.resume:
        logger.info("no checkpoint in %s yet: starting from step 0", config.output_dir)
    loader = (data_fn or default_data_fn)(processor, config, accelerator.process_index, accelerator.num_processes)
    batches = batch_stream(loader, state)
    if accelerator.is_main_process:
        config.save_yaml(Path(config.output_dir) / RUN_CONFIG_NAME)
    accelerator.init_trackers("logs", config=_tracker_config(config))
    progress = tqdm(total=config.max_steps, initial=state.step, desc="train",
                    disable=not (config.progress_bar and accelerator.is_local_main_process))  # fmt: skip
    while state.step < config.max_steps:
        loss = _optimizer_step(accelerator, model, optimizer, scheduler, loss_fn, batches, config, state)
        state.step += 1
        progress.update(1)
        if state.step % max(config.log_steps, 1) == 0 or state.step == config.max_steps:
            _log_metrics(accelerator, config, state.step, {"train/loss": loss, "train/lr": scheduler.get_last_lr()[0],
                         "train/logit_scale": accelerator.unwrap_model(model).logit_scale.exp().item()})  # fmt: skip
            progress.set_postfix(loss=f"{loss:.4f}")
        if validator is not None and validator.due(state.step):
            _validate(validator, accelerator, model, processor, config, state)
        if config.save_steps and (state.step % config.save_steps == 0 or state.step == config.max_steps):
            save_checkpoint(accelerator, config, state, loader)
    progress.close()
    model_dir = save_final_model(accelerator, model, processor, config)
    accelerator.end_training()
    if config.push_to_hub and accelerator.is_main_process:
        logger.info("pushed %s to %s", model_dir, push_to_hub(model_dir, config))
    return model_dir
