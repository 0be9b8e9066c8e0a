"""`--quantize int8`: dynamic int8 on the image encoder's Linear layers, saved once per model commit.

Weights are quantized per output channel (symmetric int8); activations are quantized per batch on the fly, so no
calibration data is needed. torch's dynamic quantized Linear runs on FBGEMM/oneDNN, which use VNNI (AVX512-VNNI,
AVX-VNNI, AMX-INT8) where the CPU has it. Attention, LayerNorms and the text encoder stay float32.

Why torch's own and not ONNX Runtime (measured on ViT-B/16, random weights, birds525 photos, a 2-core AVX2 EPYC,
interleaved runs): against torch float32, torch int8 ran 1.53x, ONNX Runtime float32 1.21x and ONNX Runtime int8
1.93x, with the same agreement (feature cosine >= 0.9996). ORT int8 is thus ~1.26x faster than torch int8, mostly
from ORT's graph fusions (its own float32 is 1.21x), but it needs the `onnx` + `onnxscript` packages and a first-run
export + quantization (~100 s for ViT-B/16 here, minutes for ViT-L/14), and takes the image encoder out of torch
(no `torch.compile`, a second runtime). torch's path needs nothing new and keeps a `BioCLIPModel`. torch deprecates
quantized tensors in favour of torchao; ONNX Runtime is the measured-faster alternative if that removal lands.

The quantized layers are stored as a safetensors file (int8 weights, float32 scales, float32 biases; no pickle)
under `$BIOCLIP_HF_CACHE/quantized/` keyed by the model's commit (or, for a local folder, its weights' path, size
and modification time), so later runs load it instead of quantizing again.

Example:
    >>> quantize_image_encoder(model)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from bioclip_hf.utils.io import cache_root

logger = logging.getLogger(__name__)

SCHEMES = ("int8",)
FORMAT_VERSION = "1"


def _quantized_module_type() -> Any:
    import torch.ao.nn.quantized.dynamic as nnqd

    return nnqd.Linear


def _targets(model: Any) -> dict[str, Any]:
    """{state-dict prefix: module} of the Linear layers to quantize: the image encoder and its projection."""
    import torch

    found = {f"vision_model.{name}": module for name, module in model.vision_model.named_modules()
             if isinstance(module, (torch.nn.Linear, _quantized_module_type()))}  # fmt: skip
    found["visual_projection"] = model.visual_projection
    return found


def _set_module(model: Any, name: str, module: Any) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _quantized_linear(weight: Any, bias: Any, scales: Any) -> Any:
    """A dynamic int8 Linear from an int8 `[out, in]` weight, per-row float32 `scales` and a float32 bias."""
    import torch

    with warnings.catch_warnings():  # torch deprecates quantized tensors in favour of torchao (not a dependency)
        warnings.simplefilter("ignore")
        qweight = torch._make_per_channel_quantized_tensor(weight, scales.double(), torch.zeros_like(scales, dtype=torch.long), 0)
        layer = _quantized_module_type()(weight.shape[1], weight.shape[0], bias_=bias is not None, dtype=torch.qint8)
        layer.set_weight_bias(qweight, bias)
    return layer


def _quantize_linear(linear: Any) -> tuple[Any, dict[str, Any]]:
    """(dynamic int8 layer, its tensors to store) for a float Linear: symmetric per-output-channel int8."""
    import torch

    weight = linear.weight.detach().float()
    scales = (weight.abs().amax(dim=1) / 127.0).clamp_min(torch.finfo(torch.float32).tiny)
    q = torch.clamp(torch.round(weight / scales[:, None]), -127, 127).to(torch.int8)
    bias = None if linear.bias is None else linear.bias.detach().float().clone()
    tensors = {"weight": q, "scales": scales}
    if bias is not None:
        tensors["bias"] = bias
    return _quantized_linear(q, bias, scales), tensors


def model_key(model: Any) -> str | None:
    """What identifies the weights: `<model id>@<commit>`, or a local folder's weights path+size+mtime digest."""
    source = getattr(model, "bioclip_source", None) or {}
    commit = source.get("commit") or getattr(model.config, "_commit_hash", None)
    if commit and source.get("id"):
        return f"{source['id']}@{commit}"
    path = source.get("path")
    if path and Path(path).is_dir():
        stats = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(path).iterdir()
                       if p.suffix in (".safetensors", ".bin", ".pt"))  # fmt: skip
        return f"{path}#{hashlib.sha256(repr(stats).encode()).hexdigest()[:16]}" if stats else None
    return None


def cache_file(model: Any, scheme: str = "int8", cache_dir: str | os.PathLike | None = None) -> Path | None:
    """Where the quantized layers of `model` are cached (None when the weights cannot be identified)."""
    key = model_key(model)
    if key is None:
        return None
    root = Path(cache_dir) if cache_dir else cache_root()
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return root / "quantized" / f"{digest}-image-{scheme}.safetensors"


def save_quantized(model: Any, path: str | os.PathLike, key: str | None = None) -> Path:
    """Write the quantized image-encoder layers of `model` (after `quantize_image_encoder`) to `path` atomically.

    Example:
        >>> save_quantized(model, "image-int8.safetensors")  # doctest: +SKIP
    """
    from safetensors.torch import save_file

    from bioclip_hf.utils.io import atomic_path

    tensors: dict[str, Any] = {}
    for name, layer in _targets(model).items():
        if not isinstance(layer, _quantized_module_type()):
            raise ValueError(f"{name} is not quantized; call quantize_image_encoder first")
        weight, bias = layer._weight_bias()
        tensors[f"{name}.weight"] = weight.int_repr().contiguous()
        tensors[f"{name}.scales"] = weight.q_per_channel_scales().float().contiguous()
        if bias is not None:
            tensors[f"{name}.bias"] = bias.detach().float().contiguous()
    metadata = {"format": FORMAT_VERSION, "scheme": "int8", "model": key or model_key(model) or ""}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def load_quantized(model: Any, path: str | os.PathLike) -> Any:
    """Replace the image encoder's Linear layers of `model` by the quantized ones saved at `path` (in place).

    Example:
        >>> load_quantized(model, "image-int8.safetensors")  # doctest: +SKIP
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
        if meta.get("format") != FORMAT_VERSION or meta.get("scheme") != "int8":
            raise ValueError(f"{path}: not a bioclip-hf int8 image-encoder file (metadata {json.dumps(meta)})")
        names = set(handle.keys())
        for name, layer in _targets(model).items():
            if f"{name}.weight" not in names:
                raise ValueError(f"{path} has no quantized weights for {name}; it was saved from another architecture")
            weight, scales = handle.get_tensor(f"{name}.weight"), handle.get_tensor(f"{name}.scales")
            if tuple(weight.shape) != (layer.out_features, layer.in_features):
                raise ValueError(f"{path}: {name} has shape {tuple(weight.shape)}, the model {(layer.out_features, layer.in_features)}")
            bias = handle.get_tensor(f"{name}.bias") if f"{name}.bias" in names else None
            _set_module(model, name, _quantized_linear(weight, bias, scales))
    model.bioclip_quantized = "int8"
    return model


def quantize_image_encoder(model: Any, scheme: str = "int8", cache: bool = True, revision: str | None = None,
                           cache_dir: str | os.PathLike | None = None) -> Any:  # fmt: skip
    """Dynamic int8 on the image encoder's Linear layers of a float `BioCLIPModel` on the CPU (in place).

    Args:
        model: the model (its text encoder is left as it is).
        scheme: "int8" (symmetric per-channel weights, dynamic per-batch activations).
        cache: load the layers from the cache when this model's weights were quantized before; save them otherwise.
        revision: unused for the key (the commit read back from the cache identifies the weights); kept for logs.
        cache_dir: cache root (default `$BIOCLIP_HF_CACHE`, else `~/.cache/bioclip_hf`).

    Example:
        >>> model = quantize_image_encoder(load_model(resolve_model_source("imageomics/bioclip")))  # doctest: +SKIP
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unsupported quantization {scheme!r}; choose one of: {', '.join(SCHEMES)}")
    if getattr(model, "bioclip_quantized", None) == scheme:
        return model
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("int8 dynamic quantization runs on the CPU only; load the model with device='cpu'")
    precision = getattr(model, "bioclip_precision", None)
    if precision is not None and precision.weights != "float32":  # the cache is keyed by commit: float weights only
        raise ValueError(f"int8 quantizes float32 weights; this model's are already {precision.weights}")
    path = cache_file(model, scheme, cache_dir) if cache else None
    if path is not None and path.is_file():
        try:
            load_quantized(model, path)
            logger.info("loaded the int8 image encoder from %s", path)
            return model
        except (ValueError, OSError) as err:  # a stale or damaged file: quantize again and overwrite it
            logger.warning("ignoring %s (%s); quantizing again", path, err)
    from bioclip_hf.utils.memory import release_clean_file_pages

    for count, (name, layer) in enumerate(_targets(model).items(), 1):
        _set_module(model, name, _quantize_linear(layer)[0])
        if count % 6 == 0:  # ~ once per layer: the memory-mapped float32 pages just read do not pile up
            release_clean_file_pages(model.parameters())
    model.bioclip_quantized = scheme
    logger.info("quantized the image encoder to int8%s", f" ({revision})" if revision else "")
    if path is not None:
        try:
            save_quantized(model, path)
            logger.info("cached the int8 image encoder in %s", path)
        except OSError as err:  # a read-only cache only costs the next run a re-quantization
            logger.warning("could not cache the int8 image encoder in %s: %s", path, err)
    return model


__all__ = ["SCHEMES", "cache_file", "load_quantized", "model_key", "quantize_image_encoder", "save_quantized"]
