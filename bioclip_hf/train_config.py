"""Typed run configuration of `bioclip-hf train`: one dataclass, YAML in and out, CLI overrides.

Only the standard library is imported at module level (the CLI lists the fields in its help without
loading torch); YAML and `transformers.HfArgumentParser` are imported where they are used.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRECISIONS = ("no", "bf16", "fp16")
TRACKERS = ("tensorboard", "none")
RUN_CONFIG_NAME = "run_config.yaml"


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as `run_config.yaml` in `output_dir`.

    Example:
        >>> cfg = TrainConfig(train_data="shards/", output_dir="runs/demo", max_steps=100)
        >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    # -- model --------------------------------------------------------------------------------------
    init_from: str | None = field(default=None, metadata=_help(
        "checkpoint to start from: HF- or open_clip-format folder or Hub repo id (any CLIP/BioCLIP); "
        "leave empty to train from scratch with --model_config"))
    model_config: str | None = field(default=None, metadata=_help(
        "from scratch: a preset ('bioclip', 'bioclip-2') or a JSON file (open_clip model_cfg or transformers config)"))
    processor: str | None = field(default=None, metadata=_help(
        "folder/repo of the processor; default: the one of --init_from, or a fresh one sized for the model"))
    allow_pickle: bool = field(default=False, metadata=_help("allow pickle (.bin) weights for --init_from"))
    # -- data ---------------------------------------------------------------------------------------
    train_data: str | None = field(default=None, metadata=_help("webdataset shards: folder, glob or brace pattern"))
    text_type: str = field(default="mixed", metadata=_help("caption text type, or 'mixed' (paper: uniform over the five)"))
    shuffle_buffer: int = field(default=1000, metadata=_help("stream shuffle buffer (samples)"))
    num_workers: int = field(default=0, metadata=_help("data loader worker processes"))
    # -- optimisation -------------------------------------------------------------------------------
    batch_size: int = field(default=32, metadata=_help("per-process micro-batch size"))
    gradient_accumulation_steps: int = field(default=1, metadata=_help("micro-batches per optimizer step"))
    max_steps: int = field(default=1000, metadata=_help("optimizer steps to train for"))
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
        from .taxonomy import TEXT_TYPES

        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"mixed_precision must be one of {PRECISIONS}, got {self.mixed_precision!r}")
        if self.report_to not in TRACKERS:
            raise ValueError(f"report_to must be one of {TRACKERS}, got {self.report_to!r}")
        if self.text_type != "mixed" and self.text_type not in TEXT_TYPES:
            raise ValueError(f"text_type must be 'mixed' or one of {TEXT_TYPES}, got {self.text_type!r}")
        for name in ("batch_size", "gradient_accumulation_steps", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "save_steps", "save_total_limit", "log_steps", "num_workers", "shuffle_buffer"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.init_from and self.model_config:
            raise ValueError("give either init_from (a checkpoint) or model_config (from scratch), not both")

    # -- serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a mapping; unknown keys raise ValueError naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training setting(s): {', '.join(unknown)}")
        return cls(**values)

    def save_yaml(self, path: str | os.PathLike) -> Path:
        """Write the config as YAML (atomically) and return the path."""
        import yaml

        from .io_utils import atomic_write_bytes

        path = Path(path)
        atomic_write_bytes(path, yaml.safe_dump(self.to_dict(), sort_keys=False).encode())
        return path

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> TrainConfig:
        """Read a config written by `save_yaml` (or by hand; missing keys take their defaults)."""
        return cls.from_dict(load_yaml_mapping(path))


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


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """Parse `[CONFIG.yaml] [--field value ...]` with `transformers.HfArgumentParser`.

    Values from the YAML file are defaults; command-line flags override them.

    Example:
        >>> parse_config(["--max_steps", "5", "--train_data", "shards/"]).max_steps
        5
    """
    from transformers import HfArgumentParser

    argv = list(argv or [])
    parser = HfArgumentParser(TrainConfig, prog="bioclip-hf train")
    parser.add_argument("config", nargs="?", default=None, help="YAML file of settings (flags override it)")
    namespace, extra = parser.parse_known_args(argv)
    if extra:
        raise ValueError(f"unrecognised training argument(s): {' '.join(extra)}")
    if namespace.config:
        defaults = load_yaml_mapping(namespace.config)
        TrainConfig.from_dict(defaults)  # validates names and values early
        parser.set_defaults(**defaults)
        namespace = parser.parse_args(argv)
    values = vars(namespace)
    values.pop("config")
    return TrainConfig.from_dict(values)


def describe_fields() -> str:
    """One line per setting (name, default, help), for `bioclip-hf train --help`."""
    lines = []
    for item in dataclasses.fields(TrainConfig):
        lines.append(f"  --{item.name} (default: {item.default!r}): {item.metadata.get('help', '')}")
    return "\n".join(lines)


__all__ = ["PRECISIONS", "RUN_CONFIG_NAME", "TRACKERS", "TrainConfig", "describe_fields", "load_yaml_mapping", "parse_config"]
