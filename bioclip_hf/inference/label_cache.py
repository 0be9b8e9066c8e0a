"""The automatic cache of custom-label text embeddings: a repeated `predict --labels` run skips the text encoder.

Each entry is a `save_label_embeddings` file under `<cache root>/label-embeddings/<key>.safetensors` (cache root:
`$BIOCLIP_HF_CACHE`, default `~/.cache/bioclip_hf`), the key a digest of everything the embeddings depend on: the
model (Hub id + the commit loaded, or a local folder's path with its files' sizes and modification times), the
labels in order, the templates, the embedding size and the text encoder's precision. Another commit, another label
list or other templates give another key (a miss, then a new entry); the file's own labels and templates are
checked again on reading. A model whose origin is unknown (passed in as an object) is not cached automatically.
`BIOCLIP_HF_LABEL_CACHE=0` turns the cache off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FOLDER = "label-embeddings"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".txt")

__all__ = ["label_cache_file", "model_identity"]


def model_identity(model: Any) -> dict[str, Any] | None:
    """What identifies a loaded model's weights: {"id", "commit"} for a Hub model, {"path", "files"} for a local
    folder (name, size, mtime of its weight/config files), None when its origin is unknown.

    Example:
        >>> model_identity(object()) is None
        True
    """
    source = getattr(model, "bioclip_source", None) or {}
    if source.get("commit"):
        return {"id": source.get("id"), "commit": source["commit"]}
    path = source.get("path")
    if path and Path(path).is_dir():
        files = sorted(p for p in Path(path).iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
        return {"path": str(Path(path).resolve()), "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]}
    return None


def label_cache_file(model: Any, labels: Sequence[str], templates: Sequence[str], precision: str) -> Path | None:
    """The cache entry for these label embeddings (it may not exist yet), or None when they cannot be cached.

    Args:
        model: the loaded `BioCLIPModel` (its `bioclip_source` identifies it).
        labels: the labels, in order.
        templates: the templates as saved (`CustomLabelsClassifier._template_keys`).
        precision: the text encoder's precision (e.g. "float32", "bfloat16"): embeddings differ slightly by it.

    Example:
        >>> label_cache_file(model, ["duck", "goose"], ["a photo of {}."], "float32")  # doctest: +SKIP
        PosixPath('/home/me/.cache/bioclip_hf/label-embeddings/3f2a....safetensors')
    """
    from bioclip_hf.utils.io import cache_root

    if os.environ.get("BIOCLIP_HF_LABEL_CACHE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    identity = model_identity(model)
    if identity is None:
        return None
    dim = getattr(getattr(model, "config", None), "projection_dim", None)
    key = {"format": 1, "model": identity, "labels": list(labels), "templates": list(templates), "dim": dim,
           "precision": precision}  # fmt: skip
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]
    return cache_root() / FOLDER / f"{digest}.safetensors"
