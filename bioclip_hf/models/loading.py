"""One place that turns a model name into a ready model (and processor) for every command: predict, embed,
evaluate, build-index, `train --init_from`, convert, push, and the Space.

Resolving the source (`resolve_model_source`) applies, in this order: the `hf-hub:` spelling, an explicit revision or
else the registry's pinned commit, the offline check that a pinned commit is cached, the fast one-line failure when
the Hub cannot be reached, and the `allow_pickle` policy (on for the official releases). The loaded model records
where its weights came from (`model.bioclip_source`: id, revision, commit read back from the HF cache).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
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

__all__ = ["DEFAULT_MODEL", "OFFICIAL_REPOS", "ModelSource", "load_model", "load_model_and_processor", "load_processor",
           "resolve_device", "resolve_model_source"]  # fmt: skip
# The official releases may only ship open_clip's pickle weights; they are read with
# torch.load(weights_only=True), which refuses arbitrary objects, so the loader opts in for them alone.
OFFICIAL_REPOS = frozenset(entry.repo_id for entry in MODELS)
LOCAL_ALTERNATIVE = "a local checkpoint folder (--model ./folder)"


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


@dataclass(frozen=True)
class ModelSource:
    """A checkpoint to load, resolved once: what to read, at which revision, and how.

    Attributes:
        name: Hub repo id (`hf-hub:` removed) or local path.
        revision: the explicit revision, else the registry's pinned commit, else None (`main`); None for paths.
        hub: download kwargs for `from_pretrained` / `cached_file` (`revision`, `local_files_only` when the Hub
            cannot be reached but the repo is cached).
        allow_pickle: whether open_clip pickle weights may be read (always for `OFFICIAL_REPOS`).
    """

    name: str
    revision: str | None = None
    hub: dict[str, Any] = field(default_factory=dict)
    allow_pickle: bool = False

    def provenance(self) -> dict[str, Any]:
        """Id, requested revision and the commit the HF cache holds for it now (or the absolute local path)."""
        return model_provenance(self.name, self.revision)


def resolve_model_source(
    name_or_path: str = DEFAULT_MODEL, revision: str | None = None, allow_pickle: bool = False,
    local_alternative: str = LOCAL_ALTERNATIVE,
) -> ModelSource:
    """Apply the pins, the offline checks and the pickle policy to a model name; no model code is imported.

    Args:
        name_or_path: local folder, Hub repo id or `hf-hub:` id.
        revision: branch, tag or commit of a Hub repo; None: the registry's pinned commit (if any) or `main`.
        allow_pickle: allow reading pickle weights of open_clip checkpoints (always on for `OFFICIAL_REPOS`).
        local_alternative: what to suggest instead when the Hub is unreachable and the repo is not cached.

    Example:
        >>> resolve_model_source("hf-hub:imageomics/bioclip-2").revision  # doctest: +SKIP
        '2957b322090f9cb17ae72c71981c7218a28d81e0'
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
    hub.update(hub_download_kwargs(name, revision=revision, local_alternative=local_alternative))
    return ModelSource(name, revision, hub, allow_pickle or name in OFFICIAL_REPOS)


def load_model(source: ModelSource, device: str | None = None, dtype: Any = None) -> Any:
    """The `BioCLIPModel` of a resolved source (eval mode, on `device`), with `bioclip_source` provenance set.

    Example:
        >>> model = load_model(resolve_model_source("imageomics/bioclip"), device="cpu")  # doctest: +SKIP
    """
    from bioclip_hf.models.bioclip.modeling_bioclip import BioCLIPModel

    device = resolve_device(device)
    kwargs: dict[str, Any] = {"allow_pickle": source.allow_pickle, **source.hub}
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = BioCLIPModel.from_pretrained(source.name, **kwargs).to(device).eval()
    # Where the weights came from (commit read back from the HF cache now), for classifiers, cards and logs.
    model.bioclip_source = source.provenance()
    logger.info("loaded %s%s on %s", source.name, f"@{source.revision}" if source.revision else "", device)
    return model


def load_processor(source: ModelSource) -> Any:
    """The `BioCLIPProcessor` saved with a resolved source (built from `open_clip_config.json` for open_clip)."""
    from bioclip_hf.models.bioclip.processing_bioclip import BioCLIPProcessor

    return BioCLIPProcessor.from_pretrained(source.name, **source.hub)


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
    source = resolve_model_source(name_or_path, revision, allow_pickle)
    return load_model(source, device, dtype), load_processor(source)


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
