"""Typed run configuration of `bioclip-hf train`: one dataclass, YAML in and out, CLI overrides.

Only the standard library is imported at module level (the CLI lists the fields in its help without
loading torch); YAML and `transformers.HfArgumentParser` are imported where they are used.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

PRECISIONS = ("no", "bf16", "fp16")
TRACKERS = ("tensorboard", "none")
RUN_CONFIG_NAME = "run_config.yaml"
# The shipped recipes (configs/*.yaml in the repository; the package links to that folder, so the wheel carries them).
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
logger = logging.getLogger(__name__)


def _help(text: str) -> dict[str, str]:
    return {"help": text}


class YamlConfig:
    """Serialisation shared by the run configs (dataclasses): dict and YAML, unknown keys named in the error.

    Example:
        >>> TrainConfig.from_yaml("run_config.yaml")  # doctest: +SKIP
    """

    SETTING_KIND: ClassVar[str] = "run"  # names the config in errors: "unknown training setting(s): ..."

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Any:
        """Build from a mapping; unknown keys raise ValueError naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {cls.SETTING_KIND} setting(s): {', '.join(unknown)}")
        return cls(**values)

    def save_yaml(self, path: str | os.PathLike) -> Path:
        """Write the config as YAML (atomically) and return the path."""
        import yaml

        from bioclip_hf.utils.io import atomic_write_bytes

        path = Path(path)
        atomic_write_bytes(path, yaml.safe_dump(self.to_dict(), sort_keys=False).encode())
        return path

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> Any:
        """Read a config written by `save_yaml` (or by hand; missing keys take their defaults)."""
        return cls.from_dict(load_yaml_mapping(path))


@dataclass
class TrainConfig(YamlConfig):
    """Everything a training run needs; saved as `run_config.yaml` in `output_dir`.

    Example:
        >>> cfg = TrainConfig(train_data="shards/", output_dir="runs/demo", max_steps=100)
        >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    SETTING_KIND: ClassVar[str] = "training"  # names this config in errors

    # -- model --------------------------------------------------------------------------------------
    init_from: str | None = field(default=None, metadata=_help(
        "checkpoint to start from: a transformers (e.g. openai/clip-vit-base-patch16) or open_clip Hub-layout folder or "
        "repo id, or one open_clip/OpenAI weights file (.safetensors/.bin/.pt); empty: from scratch with --model_config"))
    model_config: str | None = field(default=None, metadata=_help(
        "from scratch, or the architecture of a single --init_from weights file (default: inferred, QuickGELU as "
        "OpenAI CLIP): a preset ('bioclip', 'bioclip-2') or a JSON file (open_clip model_cfg or transformers config)"))
    processor: str | None = field(default=None, metadata=_help(
        "folder/repo of the processor; default: the one of --init_from, or a fresh one sized for the model"))
    allow_pickle: bool = field(default=False, metadata=_help("allow pickle (.bin) weights for --init_from"))
    # -- data ---------------------------------------------------------------------------------------
    train_data: str | None = field(default=None, metadata=_help(
        "folder or Hub dataset repo: WebDataset shards (ours or Imageomics' layout), imageomics/TreeOfLife-10M "
        "(EOL tars + catalog), or a TreeOfLife-200M folder (shards + catalog.parquet)"))
    train_split: str = field(default="train", metadata=_help("split of train_data to train on"))
    text_type: str = field(default="mixed", metadata=_help("caption text type, or 'mixed' (paper: uniform over the five)"))
    text_mixing: str = field(default="per_sample", metadata=_help(
        "with text_type mixed: 'per_sample' draws a type per sample; 'per_batch' one per batch seeded by the step "
        "(BioCLIP's original trainer)"))
    shuffle_buffer: int = field(default=1000, metadata=_help("stream shuffle buffer (samples)"))
    train_augment: str = field(default="none", metadata=_help(
        "training images: 'none' (resize + centre crop) or 'random_resized_crop' (open_clip's training transform, "
        "scale 0.9-1)"))
    num_workers: int = field(default=0, metadata=_help("data loader worker processes"))
    # -- optimisation -------------------------------------------------------------------------------
    batch_size: int = field(default=32, metadata=_help("per-process micro-batch size"))
    gradient_accumulation_steps: int = field(default=1, metadata=_help("micro-batches per optimizer step"))
    max_steps: int = field(default=1000, metadata=_help("optimizer steps to train for (derived when num_epochs is set)"))
    num_epochs: float | None = field(default=None, metadata=_help(
        "train for this many epochs: max_steps = ceil(num_epochs * ceil(dataset_size / global batch))"))
    dataset_size: int | None = field(default=None, metadata=_help(
        "samples per epoch for num_epochs; empty: counted from the source (catalog rows of the split with an image, "
        "build_report.json or sizes.json of a shard folder)"))
    global_batch_size: int | None = field(default=None, metadata=_help(
        "samples per optimizer step over all processes; sets gradient_accumulation_steps = "
        "global_batch_size / (batch_size * processes)"))
    learning_rate: float = field(default=1e-4, metadata=_help("peak AdamW learning rate"))
    warmup_steps: int = field(default=100, metadata=_help("linear warm-up steps before the cosine decay"))
    weight_decay: float = field(default=0.2, metadata=_help("AdamW weight decay (not on gains, biases, logit scale)"))
    adam_beta1: float = field(default=0.9, metadata=_help("AdamW beta1"))
    adam_beta2: float = field(default=0.98, metadata=_help("AdamW beta2"))
    adam_epsilon: float = field(default=1e-6, metadata=_help("AdamW epsilon"))
    max_grad_norm: float = field(default=0.0, metadata=_help("clip gradients to this norm; 0 disables"))
    mixed_precision: str = field(default="no", metadata=_help(f"one of {', '.join(PRECISIONS)}"))
    gradient_checkpointing: bool = field(default=False, metadata=_help("recompute activations in backward"))
    local_loss: bool = field(default=False, metadata=_help("score local rows against the gathered batch only"))
    gather_with_grad: bool = field(default=True, metadata=_help("all-gather features with gradients (exact)"))
    seed: int = field(default=0, metadata=_help("seed of weights init, data order and text sampling"))
    # -- validation ---------------------------------------------------------------------------------
    val_data: str | None = field(default=None, metadata=_help("validation source (default: train_data)"))
    val_split: str | None = field(default=None, metadata=_help("split for the validation loss (e.g. 'val'); empty: none"))
    val_batches: int = field(default=0, metadata=_help("validation batches per process per evaluation; 0: the whole split"))
    eval_task: str | None = field(default=None, metadata=_help(
        "zero-shot task (bundled name or YAML) scored while training; with only eval_data_dir: an image-folder task"))
    eval_data_dir: str | None = field(default=None, metadata=_help("local data folder of eval_task"))
    eval_max_classes: int | None = field(default=None, metadata=_help("zero-shot: first N classes only"))
    eval_max_per_class: int | None = field(default=None, metadata=_help("zero-shot: at most N images per class"))
    eval_templates: str = field(default="openai", metadata=_help("zero-shot prompts: 'openai' (80 templates) or 'single'"))
    eval_steps: int = field(default=0, metadata=_help(
        "validate every N optimizer steps; 0: once per epoch with num_epochs, else at the end"))
    save_best: bool = field(default=False, metadata=_help("keep the model with the best best_metric in output_dir/best"))
    best_metric: str = field(default="val/loss", metadata=_help(
        "metric for save_best: 'val/loss' (lower is better) or an eval metric such as 'eval/top1' (higher is better)"))
    # -- run ----------------------------------------------------------------------------------------
    output_dir: str = field(default="runs/bioclip", metadata=_help("folder for checkpoints, logs and the model"))
    save_steps: int = field(default=500, metadata=_help("write a checkpoint every N optimizer steps; 0: only at the end"))
    save_total_limit: int = field(default=2, metadata=_help("checkpoints to keep (oldest removed); 0 keeps all"))
    resume: str | None = field(default=None, metadata=_help("'latest' or a checkpoint folder to resume from"))
    log_steps: int = field(default=10, metadata=_help("log metrics every N optimizer steps"))
    report_to: str = field(default="tensorboard", metadata=_help(f"tracker: {', '.join(TRACKERS)}"))
    progress_bar: bool = field(default=True, metadata=_help("show a progress bar on the main process"))
    push_to_hub: str | None = field(default=None, metadata=_help("Hub repo id to upload the final model to"))
    hub_private: bool = field(default=False, metadata=_help("create the Hub repo as private"))

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent setting."""
        from bioclip_hf.data.augment import check_augment
        from bioclip_hf.data.layouts import check_text_mixing
        from bioclip_hf.treeoflife.taxonomy import TEXT_TYPES

        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"mixed_precision must be one of {PRECISIONS}, got {self.mixed_precision!r}")
        if self.report_to not in TRACKERS:
            raise ValueError(f"report_to must be one of {TRACKERS}, got {self.report_to!r}")
        if self.text_type != "mixed" and self.text_type not in TEXT_TYPES:
            raise ValueError(f"text_type must be 'mixed' or one of {TEXT_TYPES}, got {self.text_type!r}")
        check_text_mixing(self.text_mixing)
        check_augment(self.train_augment)
        if self.eval_templates not in ("openai", "single"):
            raise ValueError(f"eval_templates must be 'openai' or 'single', got {self.eval_templates!r}")
        for name in ("num_epochs", "dataset_size", "global_batch_size", "eval_max_classes", "eval_max_per_class"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.dataset_size is not None and self.num_epochs is None:
            raise ValueError("dataset_size is only used with num_epochs")
        for name in ("batch_size", "gradient_accumulation_steps", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "save_steps", "save_total_limit", "log_steps", "num_workers", "shuffle_buffer",
                     "val_batches", "eval_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.init_from and self.model_config and not Path(self.init_from).is_file():
            raise ValueError("give either init_from (a checkpoint) or model_config (from scratch), not both "
                             "(model_config only describes a single init_from weights file)")
        if self.save_best and not (self.val_split or self.eval_task or self.eval_data_dir):
            raise ValueError("save_best needs a validation: set val_split and/or eval_task / eval_data_dir")
        if self.save_best and self.best_metric != "val/loss" and not self.best_metric.startswith("eval/"):
            raise ValueError(f"best_metric must be 'val/loss' or an 'eval/...' metric, got {self.best_metric!r}")


def load_yaml_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """Load a YAML file that must hold a mapping (clear errors for missing files / wrong content)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config not found: {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of settings, got {type(values).__name__}")
    return values


def list_recipes() -> list[str]:
    """Names of the shipped training recipes (`bioclip`, `bioclip-2`)."""
    return sorted(path.stem for path in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name: str) -> Path:
    """The YAML file of a shipped recipe; FileNotFoundError naming the known ones otherwise."""
    path = RECIPES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no training recipe {name!r} (shipped: {', '.join(list_recipes()) or 'none'})")
    return path


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """Parse `[CONFIG.yaml] [--recipe NAME] [--field value ...]` with `transformers.HfArgumentParser`.

    Settings are layered: a shipped recipe (`--recipe bioclip`), then the YAML file, then command-line flags.

    Example:
        >>> parse_config(["--max_steps", "5", "--train_data", "shards/"]).max_steps
        5
        >>> parse_config(["--recipe", "bioclip", "--batch_size", "256"]).learning_rate
        0.0001
    """
    from transformers import HfArgumentParser

    argv = list(argv or [])
    parser = HfArgumentParser(TrainConfig, prog="bioclip-hf train")
    parser.add_argument("config", nargs="?", default=None, help="YAML file of settings (flags override it)")
    parser.add_argument("--recipe", default=None, help="a shipped recipe whose settings are the defaults")
    namespace, extra = parser.parse_known_args(argv)
    if extra:
        raise ValueError(f"unrecognised training argument(s): {' '.join(extra)}")
    defaults: dict[str, Any] = {}
    if namespace.recipe:
        defaults.update(load_yaml_mapping(recipe_path(namespace.recipe)))
    if namespace.config:
        defaults.update(load_yaml_mapping(namespace.config))
    if defaults:
        TrainConfig.from_dict(defaults)  # validates names and values early
        parser.set_defaults(**defaults)
        namespace = parser.parse_args(argv)
    values = vars(namespace)
    values.pop("config")
    values.pop("recipe")
    return TrainConfig.from_dict(values)


@dataclass(frozen=True)
class Schedule:
    """The step plan of a run on `world_size` processes (see `resolve_schedule`)."""

    max_steps: int
    gradient_accumulation_steps: int
    global_batch_size: int
    steps_per_epoch: int | None = None
    dataset_size: int | None = None


def resolve_schedule(config: TrainConfig, world_size: int, dataset_size: int | None = None) -> Schedule:
    """Turn epochs and a global batch into steps for `world_size` processes.

    - `global_batch_size` set: `gradient_accumulation_steps = global_batch_size / (batch_size * world_size)`
      (it must divide evenly);
    - `num_epochs` set: `steps_per_epoch = ceil(dataset_size / global_batch)` and
      `max_steps = ceil(num_epochs * steps_per_epoch)`, with `dataset_size` from the config or, when empty,
      the given count of the source.

    Example:
        >>> cfg = TrainConfig(num_epochs=100, global_batch_size=32768, batch_size=4096)
        >>> resolve_schedule(cfg, world_size=8, dataset_size=10_400_000).max_steps  # 318 steps per epoch
        31800
    """
    accumulation = config.gradient_accumulation_steps
    if config.global_batch_size:
        per_step = config.batch_size * world_size
        if config.global_batch_size % per_step:
            raise ValueError(f"global_batch_size {config.global_batch_size} is not a multiple of batch_size "
                             f"{config.batch_size} x {world_size} process(es)")  # fmt: skip
        accumulation = config.global_batch_size // per_step
    global_batch = config.batch_size * world_size * accumulation
    if config.num_epochs is None:
        return Schedule(config.max_steps, accumulation, global_batch)
    size = config.dataset_size or dataset_size
    if not size:
        raise ValueError("num_epochs needs the dataset size: set dataset_size (the source does not state it)")
    steps_per_epoch = math.ceil(size / global_batch)
    return Schedule(math.ceil(config.num_epochs * steps_per_epoch), accumulation, global_batch, steps_per_epoch, size)


def describe_fields() -> str:
    """One line per setting (name, default, help), for `bioclip-hf train --help`."""
    lines = []
    for item in dataclasses.fields(TrainConfig):
        lines.append(f"  --{item.name} (default: {item.default!r}): {item.metadata.get('help', '')}")
    return "\n".join(lines)


__all__ = ["PRECISIONS", "RUN_CONFIG_NAME", "TRACKERS", "Schedule", "TrainConfig", "describe_fields", "list_recipes",
           "YamlConfig", "load_yaml_mapping", "parse_config", "recipe_path", "resolve_schedule"]  # fmt: skip
