"""Typed run configuration of `bioclip-hf finetune`: one dataclass, YAML in and out, CLI overrides.

The same pattern as `training.config.TrainConfig`: only the standard library at module level (the CLI lists the
fields without importing torch), `transformers.HfArgumentParser` and YAML where they are used, and the resolved
config saved with the run as `finetune_config.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from bioclip_hf.training.config import TRACKERS, YamlConfig, _help

METHODS = ("lora", "full", "head")
PRECISIONS = ("auto", "no", "bf16")
FINETUNE_CONFIG_NAME = "finetune_config.yaml"


@dataclass
class FinetuneConfig(YamlConfig):
    """Everything a fine-tuning run needs; saved as `finetune_config.yaml` in `output_dir`.

    Example:
        >>> cfg = FinetuneConfig(data="photos/", output_dir="runs/fish", model="imageomics/bioclip", epochs=3)
        >>> FinetuneConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    SETTING_KIND: ClassVar[str] = "fine-tuning"  # names this config in errors

    # -- data ---------------------------------------------------------------------------------------
    data: str | None = field(default=None, metadata=_help(
        "labelled photos: a folder of class folders, a .csv/.tsv/.parquet table (file + label columns, optional "
        "lineage columns), a datasets folder (save_to_disk) or a Hub dataset id"))
    image_column: str | None = field(default=None, metadata=_help("datasets: the image column (default: found)"))
    label_column: str | None = field(default=None, metadata=_help("table/datasets: the label column (default: found)"))
    file_column: str | None = field(default=None, metadata=_help("table: the file-path column (default: found)"))
    label_taxa: str | None = field(default=None, metadata=_help("CSV mapping each label to its lineage (kingdom ... species, common_name)"))
    text_type: str | None = field(default=None, metadata=_help(
        "class text where a lineage is known (default: taxonomic+common, the base model's training text)"))
    template: str = field(default="a photo of {}.", metadata=_help("prompt template around each class text"))
    val_fraction: float = field(default=0.2, metadata=_help("held-out share per class when the data has no validation split"))
    split: str | None = field(default=None, metadata=_help("datasets: the training split (default: train)"))
    val_split: str | None = field(default=None, metadata=_help("datasets/folders: the data's own validation split"))
    streaming: bool | None = field(default=None, metadata=_help("stream a large dataset (default: decided by size)"))
    max_per_class: int | None = field(default=None, metadata=_help("use at most N photos per class"))
    # -- model and method ---------------------------------------------------------------------------
    model: str = field(default="imageomics/bioclip-2", metadata=_help("the base model: Hub id or folder"))
    revision: str | None = field(default=None, metadata=_help("branch, tag or commit of the base model (default: pinned)"))
    method: str = field(default="lora", metadata=_help(
        "lora (adapters on the vision tower, merged into the output), full (every weight) or head (a linear head "
        "initialised from the class-text embeddings, on the frozen model)"))
    lora_rank: int = field(default=16, metadata=_help("LoRA rank r"))
    lora_alpha: float = field(default=32.0, metadata=_help("LoRA alpha (the update is scaled by alpha / r)"))
    lora_dropout: float = field(default=0.0, metadata=_help("dropout on the LoRA input"))
    lora_text: bool = field(default=False, metadata=_help("also put LoRA adapters on the text tower"))
    lora_targets: str = field(default="q_proj,k_proj,v_proj,out_proj", metadata=_help(
        "comma-separated module names adapted in each transformer layer (e.g. add fc1,fc2 for the MLPs)"))
    wise_ft: float | None = field(default=None, metadata=_help(
        "WiSE-FT: ship (1 - ALPHA) * base + ALPHA * fine-tuned weights (0: the base, 1: the fine-tune)"))
    # -- optimisation -------------------------------------------------------------------------------
    epochs: float = field(default=5.0, metadata=_help("passes over the training photos"))
    max_steps: int | None = field(default=None, metadata=_help("optimizer steps (default: from epochs)"))
    batch_size: int = field(default=32, metadata=_help("photos per step and process"))
    learning_rate: float | None = field(default=None, metadata=_help(
        "peak AdamW learning rate (default: 1e-3 head, 1e-4 lora, 1e-5 full)"))
    weight_decay: float = field(default=0.1, metadata=_help("AdamW weight decay (not on gains, biases, logit scale)"))
    warmup_steps: int = field(default=0, metadata=_help("linear warm-up steps before the cosine decay"))
    max_grad_norm: float = field(default=1.0, metadata=_help("clip gradients to this norm; 0 disables"))
    augment: str = field(default="none", metadata=_help("training images: 'none' or 'random_resized_crop'"))
    mixed_precision: str = field(default="auto", metadata=_help(
        "bf16 autocast: 'auto' (on CUDA GPUs with bf16), 'bf16' (also on CPU) or 'no'"))
    gradient_checkpointing: bool = field(default=False, metadata=_help("recompute activations in backward (less memory)"))
    num_workers: int = field(default=0, metadata=_help("data loader worker processes"))
    seed: int = field(default=0, metadata=_help("seed of the split, data order, augmentation and LoRA init"))
    # -- evaluation ---------------------------------------------------------------------------------
    eval_batch_size: int = field(default=64, metadata=_help("photos per forward pass when scoring"))
    forgetting_task: str | None = field(default=None, metadata=_help(
        "reference task outside your classes, scored before and after: a bundled task name (e.g. birds525, with "
        "forgetting_data_dir) or a folder of class folders"))
    forgetting_data_dir: str | None = field(default=None, metadata=_help("local data folder of forgetting_task"))
    forgetting_max_classes: int | None = field(default=None, metadata=_help("forgetting task: first N classes only"))
    forgetting_max_per_class: int | None = field(default=None, metadata=_help("forgetting task: at most N photos per class"))
    # -- run ----------------------------------------------------------------------------------------
    output_dir: str = field(default="finetuned", metadata=_help("the output model folder (checkpoints go in it too)"))
    save_steps: int = field(default=0, metadata=_help("write a checkpoint every N steps; 0: once per epoch"))
    save_total_limit: int = field(default=2, metadata=_help("checkpoints to keep (oldest removed); 0 keeps all"))
    keep_checkpoints: bool = field(default=False, metadata=_help("keep checkpoints/ after a finished run"))
    resume: str | None = field(default=None, metadata=_help("'latest' or a checkpoint folder to resume from"))
    log_steps: int = field(default=10, metadata=_help("log the loss every N steps"))
    report_to: str = field(default="tensorboard", metadata=_help(f"tracker: {', '.join(TRACKERS)}"))
    save_adapter: bool = field(default=False, metadata=_help("lora: also keep the PEFT adapter (adapter/)"))
    open_clip_copy: bool = field(default=True, metadata=_help("also write the open_clip copy of the weights"))
    push_to_hub: str | None = field(default=None, metadata=_help("Hub repo id (owner/name) to publish the output to"))
    hub_private: bool = field(default=False, metadata=_help("create the Hub repo as private"))
    progress_bar: bool = field(default=True, metadata=_help("show a progress bar"))

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent setting."""
        from bioclip_hf.data.augment import check_augment

        _one_of("method", self.method, METHODS)
        _one_of("mixed_precision", self.mixed_precision, PRECISIONS)
        _one_of("report_to", self.report_to, TRACKERS)
        check_augment(self.augment)
        if self.text_type is not None:
            from bioclip_hf.treeoflife.taxonomy import check_text_type

            check_text_type(self.text_type)
        if "{}" not in self.template:
            raise ValueError(f"template must contain '{{}}' where the class text goes, got {self.template!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.wise_ft is not None and not 0 <= self.wise_ft <= 1:
            raise ValueError(f"wise_ft must be in [0, 1], got {self.wise_ft}")
        for name in ("lora_rank", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "max_per_class", "forgetting_max_classes", "forgetting_max_per_class"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "save_steps", "save_total_limit", "log_steps", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("epochs", "lora_alpha", "learning_rate"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not lora_target_names(self.lora_targets):
            raise ValueError("lora_targets names no module")
        if self.save_adapter and self.method != "lora":
            raise ValueError(f"save_adapter applies to method lora, not {self.method!r}")
        if self.save_adapter and self.wise_ft is not None and self.wise_ft != 1:
            # the adapter holds the fine-tune before interpolation: on the base it would not be the shipped model
            raise ValueError("save_adapter cannot be combined with wise_ft < 1 (the adapter would not match the shipped weights)")
        if self.forgetting_data_dir and not self.forgetting_task:
            raise ValueError("forgetting_data_dir needs forgetting_task (a bundled task name or a folder)")
        if self.push_to_hub is not None and self.push_to_hub.count("/") != 1:
            raise ValueError(f"push_to_hub must be a Hub repo id 'owner/name', got {self.push_to_hub!r}")

    @property
    def peak_learning_rate(self) -> float:
        """`learning_rate`, or the method's default (a head learns fast; every weight needs small steps)."""
        return self.learning_rate or {"head": 1e-3, "lora": 1e-4, "full": 1e-5}[self.method]


def _one_of(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def lora_target_names(value: str) -> list[str]:
    """The module names of `lora_targets` ("q_proj,v_proj" -> ["q_proj", "v_proj"])."""
    return [name.strip() for name in value.split(",") if name.strip()]


def parse_finetune_config(argv: list[str] | None = None) -> FinetuneConfig:
    """Parse `[--config RUN.yaml] [--field value ...]` with `transformers.HfArgumentParser` (flags override YAML).

    Example:
        >>> parse_finetune_config(["--data", "photos/", "--epochs", "2"]).epochs
        2.0
    """
    from transformers import HfArgumentParser

    from bioclip_hf.training.config import load_yaml_mapping

    argv = list(argv or [])
    parser = HfArgumentParser(FinetuneConfig, prog="bioclip-hf finetune")
    parser.add_argument("--config", default=None, help="YAML file of settings (flags override it)")
    namespace, extra = parser.parse_known_args(argv)
    if extra:
        raise ValueError(f"unrecognised fine-tuning argument(s): {' '.join(extra)}")
    if namespace.config:
        defaults = load_yaml_mapping(namespace.config)
        FinetuneConfig.from_dict(defaults)  # validates names and values early
        parser.set_defaults(**defaults)
        namespace = parser.parse_args(argv)
    values = vars(namespace)
    values.pop("config")
    return FinetuneConfig.from_dict(values)


__all__ = ["FINETUNE_CONFIG_NAME", "METHODS", "FinetuneConfig", "lora_target_names", "parse_finetune_config"]
