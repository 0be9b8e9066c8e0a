"""Reading and writing checkpoints in open_clip's Hub layout.

The layout used by `imageomics/bioclip` and `imageomics/bioclip-2` (and written by open_clip's
`push_to_hf_hub`) is a folder or repo holding `open_clip_config.json` plus
`open_clip_model.safetensors` and/or `open_clip_pytorch_model.bin`. This module only depends on
torch, safetensors and huggingface_hub so that it also works as `trust_remote_code` code.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

OPEN_CLIP_CONFIG_NAME = "open_clip_config.json"
OPEN_CLIP_SAFE_WEIGHTS_NAME = "open_clip_model.safetensors"
OPEN_CLIP_PICKLE_WEIGHTS_NAME = "open_clip_pytorch_model.bin"

# open_clip resblock parameter → HF CLIPEncoderLayer parameter (q/k/v are split from in_proj_*).
_BLOCK_MAP = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
_DIRECT_MAP = {
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
}
# Stored transposed in open_clip (x @ W) but as nn.Linear weights (W.T) in transformers.
_TRANSPOSED_MAP = {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight"}
_TOWERS = {"visual.transformer.resblocks": "vision_model.encoder.layers", "transformer.resblocks": "text_model.encoder.layers"}
# Buffers open_clip may have persisted in old checkpoints; they are recomputed, never loaded.
_IGNORED_KEYS = {"attn_mask", "visual.attn_mask", "text.attn_mask"}
_BLOCK_RE = re.compile(r"^(visual\.transformer\.resblocks|transformer\.resblocks)\.(\d+)\.(.+)$")


class CheckpointFormatError(ValueError):
    """A checkpoint is missing, in an unknown layout, or does not fit the architecture."""


def find_open_clip_weights(folder: str | os.PathLike, allow_pickle: bool = False) -> Path:
    """Return the weights file of an open_clip Hub-layout folder, preferring safetensors."""
    folder = Path(folder)
    safe, pickle_file = folder / OPEN_CLIP_SAFE_WEIGHTS_NAME, folder / OPEN_CLIP_PICKLE_WEIGHTS_NAME
    if safe.is_file():
        return safe
    if pickle_file.is_file():
        if not allow_pickle:
            raise CheckpointFormatError(
                f"{pickle_file} is a pickle file; pass allow_pickle=True (CLI: --allow-pickle) to load it"
            )
        return pickle_file
    raise CheckpointFormatError(
        f"no open_clip weights in {folder}: expected {OPEN_CLIP_SAFE_WEIGHTS_NAME} or {OPEN_CLIP_PICKLE_WEIGHTS_NAME}"
    )


def read_open_clip_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read `open_clip_config.json`, returning `{"model_cfg": ..., "preprocess_cfg": ...}`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointFormatError(f"missing open_clip config file {path}") from None
    except json.JSONDecodeError as err:
        raise CheckpointFormatError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or "model_cfg" not in data:
        raise CheckpointFormatError(f"{path} has no 'model_cfg' entry; not an open_clip config")
    data.setdefault("preprocess_cfg", {})
    return data


def load_state_dict_file(path: str | os.PathLike, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Load a raw open_clip state dict from `.safetensors`, or (opt-in) a pickle / training checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointFormatError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointFormatError(f"{path} is not a readable safetensors file: {err}") from None
    if not allow_pickle:
        raise CheckpointFormatError(f"{path} is a pickle file; pass allow_pickle=True (CLI: --allow-pickle) to load it")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointFormatError(f"{path} is not a readable torch checkpoint: {err}") from None
    # open_clip training checkpoints wrap the weights ({"epoch", "state_dict", "optimizer"}) and may
    # carry DDP's "module." prefix.
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointFormatError(f"{path} does not hold a state dict")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def open_clip_to_hf_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename/split/transpose an open_clip CLIP state dict into BioCLIPModel's parameter names."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key in _IGNORED_KEYS:
            continue
        if key in _DIRECT_MAP:
            out[_DIRECT_MAP[key]] = value
        elif key in _TRANSPOSED_MAP:
            out[_TRANSPOSED_MAP[key]] = value.t().contiguous()
        elif match := _BLOCK_RE.match(key):
            out.update(_convert_block_param(_TOWERS[match.group(1)], match.group(2), match.group(3), value))
        else:
            raise CheckpointFormatError(f"unexpected open_clip checkpoint key {key!r} (not a plain ViT CLIP)")
    return out


def _convert_block_param(prefix: str, index: str, name: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    base = f"{prefix}.{index}"
    if name in ("attn.in_proj_weight", "attn.in_proj_bias"):
        if value.shape[0] % 3:
            raise CheckpointFormatError(f"{name} of block {index} has shape {tuple(value.shape)}, not 3*width")
        kind = name.rsplit("_", 1)[1]
        q, k, v = value.chunk(3, dim=0)
        return {f"{base}.self_attn.{p}_proj.{kind}": t.contiguous() for p, t in zip("qkv", (q, k, v))}
    module, _, param = name.rpartition(".")
    if module not in _BLOCK_MAP:
        raise CheckpointFormatError(f"unexpected parameter {name!r} in {prefix} block {index}")
    return {f"{base}.{_BLOCK_MAP[module]}.{param}": value}


def hf_to_open_clip_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`open_clip_to_hf_state_dict` (buffers such as `position_ids` are dropped)."""
    direct = {v: k for k, v in _DIRECT_MAP.items()}
    transposed = {v: k for k, v in _TRANSPOSED_MAP.items()}
    block = {v: k for k, v in _BLOCK_MAP.items()}
    towers = {v: k for k, v in _TOWERS.items()}
    out: dict[str, torch.Tensor] = {}
    pending_qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        if key.endswith("position_ids"):
            continue
        if key in direct:
            out[direct[key]] = value
            continue
        if key in transposed:
            out[transposed[key]] = value.t().contiguous()
            continue
        tower = next((t for t in towers if key.startswith(t + ".")), None)
        if tower is None:
            raise CheckpointFormatError(f"unexpected BioCLIP parameter {key!r}")
        index, _, rest = key[len(tower) + 1 :].partition(".")
        base = f"{towers[tower]}.{index}"
        qkv = re.match(r"self_attn\.([qkv])_proj\.(weight|bias)$", rest)
        if qkv:
            pending_qkv.setdefault(f"{base}.attn.in_proj_{qkv.group(2)}", {})[qkv.group(1)] = value
            continue
        module, _, param = rest.rpartition(".")
        if module not in block:
            raise CheckpointFormatError(f"unexpected BioCLIP parameter {key!r}")
        out[f"{base}.{block[module]}.{param}"] = value
    for key, parts in pending_qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointFormatError(f"incomplete q/k/v projections for {key}")
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def check_shapes(converted: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str) -> None:
    """Fail with one line naming the first missing, unexpected or mis-shaped parameter."""
    expected = {k: v for k, v in expected.items() if not k.endswith("position_ids")}
    missing = sorted(set(expected) - set(converted))
    if missing:
        raise CheckpointFormatError(f"{source}: missing parameter {missing[0]!r} ({len(missing)} missing in total)")
    extra = sorted(set(converted) - set(expected))
    if extra:
        raise CheckpointFormatError(f"{source}: unexpected parameter {extra[0]!r} ({len(extra)} unexpected in total)")
    for key, ref in expected.items():
        if tuple(converted[key].shape) != tuple(ref.shape):
            raise CheckpointFormatError(
                f"{source}: shape mismatch for {key}: checkpoint {tuple(converted[key].shape)} vs model {tuple(ref.shape)}"
            )
