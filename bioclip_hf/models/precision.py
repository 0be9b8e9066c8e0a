"""Which precision the encoders run in: `--dtype auto` and what it resolves to on this machine.

`auto` picks bfloat16 only where it is native and safe, and only once bf16 has passed the agreement rule
(`AUTO_BF16`, see below; until then auto is float32 everywhere and says why):
- on a CPU that computes bf16 in hardware (AVX512-BF16 or AMX-BF16, read from the CPU's flags; never guessed from
  the vendor), for a model whose training precision allows it (mixed or bf16; see `training_precision`);
- everywhere else float32: CPUs without native bf16 (torch would emulate bf16 matrix multiplies: slower than
  float32), CUDA and MPS (today's behaviour; `--dtype bfloat16/float16` opts in there), macOS and other systems
  whose flags we cannot read, and models recorded as trained in float32 only.

The precision is the image encoder's: that is where the time goes. The text encoder always runs in float32, because
the agreement rule failed for bf16 text embeddings (`benchmarks/bench_cpu_precision.py`: top-5 overlap 98.2% on
ViT-B/16 with the label texts embedded in bf16, 99.2% with float32 texts), and Tree-of-Life indexes are float32 text
embeddings anyway. Where bf16 is in effect on a CPU the image encoder's Linear weights are stored in bf16 (the same
numbers as bf16 autocast over float32 weights, which casts these weights the same way; about half the model's
memory) and it runs under bf16 autocast. LayerNorms, embeddings and the projection stay float32; features,
probabilities and scores are always computed in float32.

Detection is mockable: `BIOCLIP_HF_CPU_FLAGS="avx2,avx512_bf16"` replaces the flags read from the CPU (tests, and
to ask "what would auto do on that machine"), or patch `_detect_flags` and call `cpu_capability.cache_clear()`.

Example:
    >>> resolve_precision("auto", "cuda", "pure_bf16").dtype
    'float32'
"""

from __future__ import annotations

import functools
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
QUANTIZE_CHOICES = ("int8",)
FLAGS_ENV = "BIOCLIP_HF_CPU_FLAGS"
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 instructions computing bf16 dot products in hardware
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # int8 dot products (fast dynamic int8)
# Training precisions (registry `ModelEntry.training_precision`, or a saved config's `training_precision`).
TRAINING_PRECISIONS = ("float32", "amp_fp16", "amp_bf16", "pure_bf16", "unknown")
_BF16_SAFE = frozenset({"amp_fp16", "amp_bf16", "pure_bf16", "unknown"})  # unknown: CLIP models train with AMP
# The rule for a default (issue 18): top-1 agreement >= 99.5% and top-5 overlap >= 99% with float32 on every model
# measured. benchmarks/bench_cpu_precision.py, 2026-12-07 (birds525 photos x 525 species texts, bf16 image
# encoder): random ViT-B/16 passed (100 photos: top-1 100%, top-5 99.2%), random ViT-L/14 failed (24 photos: 100%,
# 98.3%) and a model trained by `bioclip-hf train` on the photos (zero-shot 2.5%, 13x chance) failed (200 photos:
# 98.0%, 99.5%; near-ties). So bf16 stays opt-in (`--dtype bfloat16`); set True when a rerun passes on every model
# (a released checkpoint in the HF cache is measured automatically).
AUTO_BF16 = False
BF16_EVIDENCE = "bf16 failed the agreement rule on a trained model (top-1 98.0% < 99.5%, bench_cpu_precision.py)"


@dataclass(frozen=True)
class CpuCapability:
    """The CPU flags that matter for precision, and where they were read.

    Args:
        flags: lower-case CPU feature flags (e.g. {"avx2", "avx512_bf16"}).
        source: "/proc/cpuinfo", the env variable's name, or "unavailable" (e.g. macOS: nothing proven).

    Example:
        >>> CpuCapability(frozenset({"avx2"}), "test").native_bf16
        False
    """

    flags: frozenset[str]
    source: str
    onednn_bf16: bool = True  # torch's oneDNN can run bf16 here (`torch.ops.mkldnn._is_mkldnn_bf16_supported`)
    torch_capability: str = ""  # torch's own `torch.backends.cpu.get_cpu_capability()`, e.g. "AVX512"

    @property
    def native_bf16(self) -> bool:
        return self.onednn_bf16 and any(flag in self.flags for flag in BF16_FLAGS)

    @property
    def vnni(self) -> bool:
        return any(flag in self.flags for flag in VNNI_FLAGS)

    def describe(self) -> str:
        """The flags that matter, e.g. "avx2 avx512f avx512_bf16 (from /proc/cpuinfo)"."""
        shown = [f for f in ("avx2", "avx512f", *BF16_FLAGS, "amx_tile", *VNNI_FLAGS) if f in self.flags]
        torch_says = f"; torch: {self.torch_capability}" if self.torch_capability else ""
        onednn = "" if self.onednn_bf16 else "; torch's oneDNN has no bf16 here"
        return f"{' '.join(shown) or 'no AVX2/AVX-512/AMX flags'} (from {self.source}{torch_says}{onednn})"


def _detect_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo", system: str | None = None) -> tuple[frozenset[str], str]:
    """The CPU's flags from /proc/cpuinfo (Linux x86); elsewhere (macOS, Windows) nothing is proven: no flags."""
    cpuinfo = Path(cpuinfo)
    if (system or platform.system()) != "Linux" or not cpuinfo.is_file():
        return frozenset(), "unavailable"
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset(), "unavailable"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":  # x86; ARM's "Features" line is not read: bf16 there is not proven fast in torch
            return frozenset(value.split()), str(cpuinfo)
    return frozenset(), "unavailable"


@functools.lru_cache(maxsize=1)
def cpu_capability() -> CpuCapability:
    """This machine's `CpuCapability` (cached; `BIOCLIP_HF_CPU_FLAGS` overrides detection).

    Example:
        >>> isinstance(cpu_capability().native_bf16, bool)
        True
    """
    override = os.environ.get(FLAGS_ENV)
    if override is not None:
        return CpuCapability(frozenset(override.replace(",", " ").lower().split()), FLAGS_ENV)
    flags, source = _detect_flags()
    return CpuCapability(flags, source, *_torch_view())


def _torch_view() -> tuple[bool, str]:
    """(torch's oneDNN runs bf16 on this CPU, torch's CPU capability name): a native-bf16 flag counts only when
    torch can use it."""
    import torch

    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        onednn = False
    return onednn, str(torch.backends.cpu.get_cpu_capability())


def training_precision(model_name_or_path: Any = None, config: Any = None) -> str:
    """How a model was trained, as far as we know: the saved config's `training_precision` if recorded, else the
    registry entry's, else "unknown" (treated as mixed precision: CLIP-family models are trained with AMP).

    Args:
        model_name_or_path: Hub id (`hf-hub:` accepted) or folder.
        config: the loaded model config (its `training_precision` attribute wins when present).

    Example:
        >>> training_precision("imageomics/bioclip-2")
        'pure_bf16'
    """
    from bioclip_hf.hub.registry import get_entry, is_local

    recorded = getattr(config, "training_precision", None)
    if recorded:
        value = str(recorded)
        return value if value in TRAINING_PRECISIONS else "unknown"
    if model_name_or_path:
        entry = None if is_local(model_name_or_path) else get_entry(model_name_or_path)
        if entry is not None:
            return entry.training_precision
    return "unknown"


def resolve_auto_dtype(device: Any, training_precision: str = "unknown",
                       capability: CpuCapability | None = None) -> tuple[str, str]:  # fmt: skip
    """What `--dtype auto` means for `device` and a model trained in `training_precision`: (dtype name, reason).

    Args:
        device: "cpu", "cuda", "cuda:1", "mps" or a torch.device.
        training_precision: one of `TRAINING_PRECISIONS`.
        capability: the CPU's flags (default: `cpu_capability()`).

    Example:
        >>> resolve_auto_dtype("cpu", "pure_bf16", CpuCapability(frozenset({"avx512_bf16"}), "test"))[0]
        'bfloat16'
    """
    kind = str(getattr(device, "type", device) or "cpu").split(":")[0]
    if kind != "cpu":
        return "float32", f"auto on {kind} keeps float32 (--dtype bfloat16 or float16 opts in)"
    if training_precision not in _BF16_SAFE:
        return "float32", f"the model is recorded as trained in {training_precision}; bf16 is not assumed safe"
    capability = capability or cpu_capability()
    if not capability.native_bf16:
        return "float32", (f"this CPU has no native bf16 ({' / '.join(BF16_FLAGS)} absent: {capability.describe()}); "
                           "emulated bf16 is slower than float32")  # fmt: skip
    found = next(flag for flag in BF16_FLAGS if flag in capability.flags)
    if not AUTO_BF16:
        return "float32", f"this CPU computes bf16 natively ({found}), but {BF16_EVIDENCE}; --dtype bfloat16 opts in"
    return "bfloat16", f"this CPU computes bf16 natively ({found}) and the model was trained in {training_precision}"


@dataclass(frozen=True)
class Precision:
    """The precision in effect for the encoders (see the module docstring).

    Args:
        requested: what was asked for ("auto", "float32", ...).
        dtype: what runs: "float32", "bfloat16" or "float16" (autocast dtype; float32: no autocast).
        reason: one line saying why (for logs and run records).
        weights: "bfloat16" where the encoders' Linear weights are stored in bf16 (CPU), else "float32".
        quantize: "int8" where the image encoder's Linear layers are dynamically quantized, else None.
    """

    requested: str
    dtype: str
    reason: str
    weights: str = "float32"
    quantize: str | None = None

    @property
    def autocast(self) -> Any:
        """The torch dtype for `torch.autocast`, or None (float32: autocast off)."""
        import torch

        return None if self.dtype == "float32" else getattr(torch, self.dtype)

    def to_dict(self) -> dict[str, Any]:
        return {"requested": self.requested, "dtype": self.dtype, "weights": self.weights,
                "quantize": self.quantize, "reason": self.reason}  # fmt: skip


def _dtype_name(dtype: Any) -> str:
    name = "auto" if dtype is None else str(dtype).removeprefix("torch.")
    name = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}.get(name, name)
    if name not in DTYPE_CHOICES:
        raise ValueError(f"unsupported dtype {dtype!r}; choose one of: {', '.join(DTYPE_CHOICES)}")
    return name


def resolve_precision(dtype: Any = "auto", device: Any = "cpu", training_precision: str = "unknown",
                      capability: CpuCapability | None = None, quantize: str | None = None) -> Precision:  # fmt: skip
    """The `Precision` for a requested dtype ("auto", "float32", "bfloat16", "float16" or a torch dtype).

    Args:
        dtype: what the user asked for (None = "auto").
        device: where the model runs.
        training_precision: see `training_precision()`.
        capability: CPU flags (default: detected).
        quantize: None or "int8" (the image encoder's Linear layers; activations then stay float32).

    Example:
        >>> resolve_precision("bfloat16", "cpu").weights
        'bfloat16'
    """
    requested = _dtype_name(dtype)
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"unsupported quantize {quantize!r}; choose one of: {', '.join(QUANTIZE_CHOICES)}")
    kind = str(getattr(device, "type", device) or "cpu").split(":")[0]
    if quantize is not None:
        if kind != "cpu":
            raise ValueError(f"quantize={quantize!r} runs on the CPU only (dynamic int8); the model is on {kind}")
        if requested not in ("auto", "float32"):
            raise ValueError(f"quantize={quantize!r} runs the image encoder with float32 activations; "
                             f"use dtype auto or float32, not {requested}")  # fmt: skip
        return Precision(requested, "float32", "int8 dynamic quantization of the image encoder (float32 activations)",
                         quantize=quantize)  # fmt: skip
    if requested == "auto":
        name, reason = resolve_auto_dtype(device, training_precision, capability)
    else:
        name, reason = requested, "requested"
    weights = "bfloat16" if name == "bfloat16" and kind == "cpu" else "float32"
    return Precision(requested, name, reason, weights)


def apply_precision(model: Any, precision: Precision) -> Any:
    """Make `model`'s encoders run in `precision` by themselves (in place; returns `model`).

    The image tower's forward runs under autocast in `precision.dtype`, so every caller (the classifiers, the
    evaluation harness) gets the same precision and float32 features (the projection stays float32); the text tower
    stays float32 (see the module docstring). Where `precision.weights` is "bfloat16" (CPU) the image tower's Linear
    weights are also stored in bf16: the same numbers (autocast rounds these weights the same way), half the memory. Casting goes layer by layer and
    releases the memory-mapped float32 pages it read after each layer, so the peak adds about one layer.
    Idempotent; float32 leaves the model untouched. bf16 weights cannot be undone.

    Example:
        >>> apply_precision(model, resolve_precision("bfloat16", "cpu"))  # doctest: +SKIP
    """
    import torch

    from bioclip_hf.utils.memory import release_clean_file_pages

    current = getattr(model, "bioclip_precision", None)
    if current is not None and (current.dtype, current.weights) == (precision.dtype, precision.weights):
        return model
    if current is not None and current.weights != "float32":
        raise ValueError(f"the encoders' weights are stored in {current.weights} already; load the model again "
                         f"for {precision.dtype}")  # fmt: skip
    towers = (model.vision_model,)  # the text encoder stays float32: bf16 text embeddings failed the agreement rule
    for tower in towers:
        tower.__dict__.pop("forward", None)  # undo an earlier autocast wrapper
    if precision.autocast is None:
        model.bioclip_precision = None
        return model
    for tower in towers:
        if precision.weights == "bfloat16":
            linears = [module for module in tower.modules() if isinstance(module, torch.nn.Linear)]
            for count, module in enumerate(linears, 1):
                module.to(torch.bfloat16)
                if count % 6 == 0 or count == len(linears):  # ~ once per transformer layer (q, k, v, out, fc1, fc2)
                    release_clean_file_pages(model.parameters())  # the float32 pages just read, so they never pile up
        device = next(tower.parameters()).device.type
        tower.forward = torch.autocast(device, dtype=precision.autocast)(tower.forward)
    model.bioclip_precision = precision
    logger.info("encoders run in %s, Linear weights in %s (%s)", precision.dtype, precision.weights, precision.reason)
    return model


__all__ = [
    "DTYPE_CHOICES", "QUANTIZE_CHOICES", "TRAINING_PRECISIONS", "CpuCapability", "Precision", "apply_precision",
    "cpu_capability", "resolve_auto_dtype", "resolve_precision", "training_precision",
]  # fmt: skip
