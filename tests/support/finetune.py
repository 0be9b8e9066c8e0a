"""Builders for the fine-tuning tests: tiny base models saved as folders and quick `FinetuneConfig`s.

Example:
    >>> base = save_tiny_base(tmp_path / "base", size=224)  # doctest: +SKIP
    >>> config = quick_config(photos.root, base, tmp_path / "out", method="full", max_steps=4)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .models import TINY_224_CFG, TINY_OPEN_CLIP_CFG


def save_tiny_base(path: Path, size: int = 30, seed: int = 0) -> Path:
    """A random tiny BioCLIP model + processor in transformers format (`size` 30: TINY_OPEN_CLIP_CFG, patch 2;
    224: TINY_224_CFG, patch 32, 49 tokens: fast on real 224 px photos)."""
    import torch

    from bioclip_hf import BioCLIPConfig, BioCLIPImageProcessor, BioCLIPModel, BioCLIPProcessor, load_tokenizer

    cfg = {30: TINY_OPEN_CLIP_CFG, 224: TINY_224_CFG}[size]
    torch.manual_seed(seed)
    BioCLIPModel(BioCLIPConfig.from_open_clip(cfg)).save_pretrained(path)
    BioCLIPProcessor(BioCLIPImageProcessor(size=size), load_tokenizer()).save_pretrained(path)
    return Path(path)


def quick_config(data: Any, model: Any, output_dir: Any, **overrides: Any) -> Any:
    """A `FinetuneConfig` for tests: no TensorBoard, no progress bar, no open_clip copy, small batches."""
    from bioclip_hf.training.finetune_config import FinetuneConfig

    values = dict(data=str(data), model=str(model), output_dir=str(output_dir), batch_size=8, max_steps=4,
                  learning_rate=1e-3, report_to="none", progress_bar=False, open_clip_copy=False)  # fmt: skip
    values.update(overrides)
    return FinetuneConfig(**values)


def read_weights(folder: Path) -> dict[str, Any]:
    """The tensors of `folder/model.safetensors`."""
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


class Preempted(RuntimeError):
    """Raised by `stop_at` to simulate a run killed mid-way."""


def stop_at(step: int):
    """An `on_step` callback of `finetune` that kills the run after optimizer step `step`."""

    def callback(done: int) -> None:
        if done == step:
            raise Preempted(f"killed after step {step}")

    return callback
