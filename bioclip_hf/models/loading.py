"""One place that turns a model name into a ready (model, processor) pair for CLI, eval, Space."""

from __future__ import annotations

import logging
from typing import Any

from bioclip_hf.hub.registry import (
    DEFAULT_MODEL,
    MODELS,
    check_revision_cached,
    is_local,
    model_provenance,
    model_revision,
    normalize_model_id,
)

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MODEL", "OFFICIAL_REPOS", "load_model_and_processor", "resolve_device"]
# The official releases may only ship open_clip's pickle weights; they are read with
# torch.load(weights_only=True), which refuses arbitrary objects, so the loader opts in for them alone.
OFFICIAL_REPOS = frozenset(entry.repo_id for entry in MODELS)


def resolve_device(device: str | None = None) -> str:
    """`None`/"auto" -> cuda if available, else mps, else cpu; otherwise validated as given."""
    import torch

    if device in (None, "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    try:
        torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"invalid device {device!r}: {err}") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return device


def load_model_and_processor(
    name_or_path: str = DEFAULT_MODEL, device: str | None = None, dtype: Any = None, allow_pickle: bool = False,
    revision: str | None = None,
) -> tuple[Any, Any]:
    """Load a BioCLIP model (eval mode, on `device`) and its processor from a folder or Hub repo id.

    Args:
        name_or_path: transformers- or open_clip-format checkpoint (local folder, Hub repo id, `hf-hub:` id).
        device: "cpu", "cuda", "cuda:1", "mps" or None/"auto".
        dtype: optional torch dtype for the weights (e.g. torch.float16 on GPU).
        allow_pickle: allow reading pickle weights of open_clip checkpoints (always on for `OFFICIAL_REPOS`).
        revision: branch, tag or commit of a Hub repo; None loads the registry's pinned commit (if any) or `main`.

    Example:
        >>> model, processor = load_model_and_processor("hf-hub:imageomics/bioclip")  # doctest: +SKIP
    """
    from bioclip_hf.hub.access import hub_download_kwargs

    name = normalize_model_id(name_or_path)
    revision = model_revision(name, revision)
    hub: dict[str, Any] = {}
    if not is_local(name) and revision:
        check_revision_cached(name, revision)
        hub["revision"] = revision
    # An unreachable Hub fails here in seconds with one line (or the cache is used), not after minutes of retries,
    # and before the model code (transformers) is imported.
    hub.update(hub_download_kwargs(name, revision=revision, local_alternative="a local checkpoint folder (--model ./folder)"))
    from bioclip_hf.models.bioclip.modeling_bioclip import BioCLIPModel
    from bioclip_hf.models.bioclip.processing_bioclip import BioCLIPProcessor

    device = resolve_device(device)
    kwargs: dict[str, Any] = {"allow_pickle": allow_pickle or name in OFFICIAL_REPOS, **hub}
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = BioCLIPModel.from_pretrained(name, **kwargs).to(device).eval()
    processor = BioCLIPProcessor.from_pretrained(name, **hub)
    # Where the weights came from (commit read back from the HF cache now), for classifiers given this model.
    model.bioclip_source = model_provenance(name, revision)
    logger.info("loaded %s%s on %s", name, f"@{revision}" if revision else "", device)
    return model, processor


DTYPES = ("float32", "float16", "bfloat16")


def resolve_dtype(dtype: Any) -> Any:
    """"float16"/"bfloat16" (or the torch dtypes) -> the torch dtype for autocast; None/"float32" -> None (off)."""
    import torch

    if dtype is None or dtype in ("float32", torch.float32):
        return None
    if isinstance(dtype, torch.dtype) and dtype in (torch.float16, torch.bfloat16):
        return dtype
    if dtype in ("float16", "bfloat16"):
        return getattr(torch, dtype)
    raise ValueError(f"unsupported dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
