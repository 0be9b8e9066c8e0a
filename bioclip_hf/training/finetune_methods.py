"""Fine-tuning methods: LoRA (via `peft`), full fine-tuning, a class-text-initialised head; the FLYP objective and
WiSE-FT.

- **FLYP** (Goyal et al., CVPR 2023, "Finetune like you pretrain"): each image is scored against the texts of ALL
  classes, `logit_scale * image @ texts.T`, and trained with cross-entropy on its class. Unlike a batch-contrastive
  CLIP loss, two photos of one species in a batch are never each other's negatives. Where the text tower trains
  (full fine-tuning, or LoRA with `lora_text`), the class texts are re-encoded every step so their gradients flow.
- **LoRA**: `peft` adapters on the attention projections of the vision tower (optionally the text tower); only they
  train. `merge_lora` folds them into plain weights, so the output is an ordinary model.
- **head**: a linear layer whose rows start as the class-text embeddings (the zero-shot classifier), trained on the
  frozen model; it ships as the fine-tune's label index.
- **WiSE-FT** (Wortsman et al., CVPR 2022): `wise_ft(base, tuned, alpha)` interpolates two state dicts; alpha 0 and 1
  return the base / fine-tuned tensors themselves, so the endpoints are exact.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

logger = logging.getLogger(__name__)

TOWER_MODULES = {"vision": "vision_model", "text": "text_model"}


def lora_pattern(targets: Sequence[str], text: bool) -> str:
    """The `peft` target regex (full match on module names): `targets` in every layer of the chosen towers.

    Example:
        >>> lora_pattern(["q_proj"], text=False)
        '(?:vision_model)\\\\.encoder\\\\.layers\\\\.\\\\d+\\\\.(?:self_attn|mlp)\\\\.(?:q_proj)'
    """
    towers = [TOWER_MODULES["vision"]] + ([TOWER_MODULES["text"]] if text else [])
    names = "|".join(re.escape(name) for name in targets)
    return rf"(?:{'|'.join(towers)})\.encoder\.layers\.\d+\.(?:self_attn|mlp)\.(?:{names})"


def apply_lora(model: Any, rank: int, alpha: float, dropout: float, targets: Sequence[str], text: bool,
               base_id: str | None = None, base_revision: str | None = None, seed: int = 0) -> Any:  # fmt: skip
    """Wrap `model` in a `peft.PeftModel` with LoRA adapters (everything else frozen); the adapters are injected into
    `model` itself, so calling `model.encode_image` uses them.

    Args:
        model: a `BioCLIPModel`.
        rank, alpha, dropout: LoRA's r, alpha (update scale alpha / r) and input dropout.
        targets: module names adapted in each layer (e.g. q_proj, k_proj, v_proj, out_proj, fc1, fc2).
        text: also adapt the text tower.
        base_id, base_revision: recorded in the adapter config so the adapter loads on the right base weights.
        seed: seed of the adapters' random initialisation.

    Example:
        >>> peft_model = apply_lora(model, 8, 16, 0.0, ["q_proj", "v_proj"], text=False)  # doctest: +SKIP
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=lora_pattern(targets, text),
                        bias="none", base_model_name_or_path=base_id, revision=base_revision)  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            peft_model = get_peft_model(model, config)
        except ValueError as err:  # e.g. targets that match no module
            raise ValueError(f"LoRA: {str(err).splitlines()[0]}") from None
    return peft_model


def merge_lora(peft_model: Any) -> Any:
    """The base model with the adapters folded into its weights (a plain `BioCLIPModel`, adapters removed)."""
    return peft_model.merge_and_unload()


def set_trainable(model: Any, method: str) -> None:
    """Freeze what `method` does not train: head -> everything; full -> nothing (LoRA: `peft` already froze)."""
    if method in ("head", "full"):
        for param in model.parameters():
            param.requires_grad_(method == "full")


def text_tower_trains(model: Any) -> bool:
    """Whether any text-tower parameter (or the text projection) has `requires_grad`."""
    return any(p.requires_grad for n, p in model.named_parameters() if "text_model" in n or "text_projection" in n)


def tokenize_classes(processor: Any, texts: Sequence[str]) -> torch.Tensor:
    """Token ids `[C, L]` of the class prompts, cut at the longest end-of-text (exact under the causal mask)."""
    from bioclip_hf.treeoflife.text_embedding import truncate_batch

    return truncate_batch(processor.tokenize(list(texts))["input_ids"])


class FlypModule(torch.nn.Module):
    """What training optimises: images -> logits over ALL classes (FLYP), one module for Accelerate to wrap.

    Args:
        model: the `BioCLIPModel` (with LoRA layers injected, for method lora).
        class_ids: `[C, L]` token ids of the class prompts (re-encoded each step when the text tower trains).
        class_embeds: `[C, D]` normalised class-text embeddings of the frozen text tower (used when it does not train).
        head: start a trainable linear head from `class_embeds` (method head).

    Example:
        >>> module = FlypModule(model, class_ids, class_embeds)  # doctest: +SKIP
        >>> loss = torch.nn.functional.cross_entropy(module(pixels), label_ids)  # doctest: +SKIP
    """

    def __init__(self, model: Any, class_ids: torch.Tensor, class_embeds: torch.Tensor, head: bool = False):
        super().__init__()
        self.model = model
        self.encode_texts = text_tower_trains(model) and not head
        # Not persistent: rebuilt identically from the data and base model at every (re)start.
        self.register_buffer("class_ids", class_ids, persistent=False)
        self.register_buffer("class_embeds", class_embeds.float(), persistent=False)
        self.head = torch.nn.Parameter(class_embeds.float().clone()) if head else None

    def class_weights(self) -> torch.Tensor:
        """`[C, D]`: the head, the re-encoded class texts (text tower training) or the fixed class embeddings."""
        if self.head is not None:
            return self.head
        if self.encode_texts:
            return self.model.encode_text(self.class_ids, normalize=True)
        return self.class_embeds

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        images = self.model.encode_image(pixel_values, normalize=True)
        weights = self.class_weights()
        return self.model.logit_scale.exp().float() * images.float() @ weights.float().T


def flyp_loss(logits: torch.Tensor, label_ids: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each image's logits over all class texts (`FlypModule`) against its class id."""
    return torch.nn.functional.cross_entropy(logits, label_ids)


def wise_ft(base_state: Mapping[str, torch.Tensor], tuned_state: Mapping[str, torch.Tensor],
            alpha: float) -> dict[str, torch.Tensor]:  # fmt: skip
    """WiSE-FT weights `(1 - alpha) * base + alpha * tuned`, per tensor.

    alpha 0 returns the base tensors themselves and alpha 1 the fine-tuned ones (bit-identical endpoints); between,
    floating tensors are mixed in float32 and cast back; integer buffers (position ids) must agree and are kept.

    Args:
        base_state, tuned_state: state dicts with the same keys and shapes.
        alpha: in [0, 1].

    Example:
        >>> wise_ft({"w": torch.zeros(2)}, {"w": torch.ones(2)}, 0.25)["w"]
        tensor([0.2500, 0.2500])
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"WiSE-FT alpha must be in [0, 1], got {alpha}")
    if set(base_state) != set(tuned_state):
        differ = sorted(set(base_state) ^ set(tuned_state))
        raise ValueError(f"WiSE-FT: the two state dicts differ in {len(differ)} key(s), e.g. {differ[0]}")
    if alpha == 0:
        return dict(base_state)
    if alpha == 1:
        return dict(tuned_state)
    mixed = {}
    for key, base in base_state.items():
        tuned = tuned_state[key]
        if base.shape != tuned.shape:
            raise ValueError(f"WiSE-FT: {key} has shape {tuple(base.shape)} in the base and {tuple(tuned.shape)} tuned")
        if not base.is_floating_point():
            if not torch.equal(base, tuned):
                raise ValueError(f"WiSE-FT: non-float tensor {key} differs between the base and the fine-tune")
            mixed[key] = tuned
            continue
        value = torch.lerp(base.float(), tuned.to(base.device).float(), alpha)
        mixed[key] = value.to(tuned.dtype)
    return mixed


def trainable_share(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable parameters, all parameters) of `model`."""
    total = trainable = 0
    for param in model.parameters():
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return trainable, total


__all__ = ["FlypModule", "apply_lora", "flyp_loss", "lora_pattern", "merge_lora", "set_trainable", "text_tower_trains",
           "tokenize_classes", "trainable_share", "wise_ft"]  # fmt: skip
