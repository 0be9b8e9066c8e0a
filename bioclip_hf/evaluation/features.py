"""One image pass per task: image features cached on disk, keyed by everything they depend on.

Key: model id + Hub commit (or, for a local folder, a hash of its weight and config files), task unit name, data
fingerprint (each image's path, size and mtime, or its bytes), the processor's preprocessing config and the model
dtype. Stored are the raw image projections (float32, not normalised: BioCLIP 2's FishNet / AwA2 probes train on
them); zero-shot, few-shot and the other protocols normalise as they need. So re-scoring a task (another protocol,
other shots, a fixed bug in the scoring) costs no encoder time.

Layout: `<cache_dir>/<task unit>/<key>.npy` + `<key>.json` (what the key was made of), written atomically.
Default cache_dir: `$BIOCLIP_HF_CACHE/eval-features`, `~/.cache/bioclip_hf` by default.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".json", ".txt")


def precision_in_effect(model: Any) -> dict[str, Any]:
    """How the encoders run: `apply_precision`'s record (without its reason) and any quantization."""
    precision = getattr(model, "bioclip_precision", None)
    record = {k: v for k, v in precision.to_dict().items() if k != "reason"} if precision is not None else {}
    return {**record, "quantized": getattr(model, "bioclip_quantized", None)}


def default_cache_dir() -> Path:
    """`eval-features/` under bioclip-hf's cache folder (`$BIOCLIP_HF_CACHE`, default `~/.cache/bioclip_hf`)."""
    from bioclip_hf.utils.io import cache_root

    return cache_root() / "eval-features"


@functools.cache
def _folder_hash(folder: str, signature: tuple) -> str:
    digest = hashlib.sha256()
    for name, _size, _mtime in signature:
        digest.update(name.encode() + b"\0")
        with open(Path(folder) / name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def model_identity(name_or_path: str) -> dict[str, Any] | None:
    """What identifies the weights: a Hub id with its cached commit, or a local folder's content hash.

    Returns None when a Hub model's commit cannot be resolved (then nothing is cached: a moving `main` could
    serve stale features).

    Example:
        >>> model_identity("./my-model")["content_sha256"][:8]  # doctest: +SKIP
        '3f2a9c1e'
    """
    from bioclip_hf.hub.registry import model_provenance, model_revision

    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in MODEL_FILE_SUFFIXES)
        signature = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
        return {"path": str(folder.resolve()), "content_sha256": _folder_hash(str(folder), signature)}
    provenance = model_provenance(name_or_path, model_revision(name_or_path))  # the registry pin, as loaded
    if not provenance.get("commit"):
        return None
    return {"id": provenance["id"], "commit": provenance["commit"]}


@dataclass
class FeatureCache:
    """Where image features are cached, and for which model.

    Args:
        model_name: the model's id or folder (for `model_identity`).
        cache_dir: root folder (default: `default_cache_dir()`); None with `enabled=False` caches nothing.
        enabled: False: always extract (still one pass per task within a run).

    Example:
        >>> cache = FeatureCache("imageomics/bioclip-2", "/tmp/features")  # doctest: +SKIP
        >>> features, info = cache.features(model, processor, part, batch_size=256)  # doctest: +SKIP
    """

    model_name: str
    cache_dir: str | Path | None = None
    enabled: bool = True

    def __post_init__(self) -> None:
        self.cache_dir = Path(self.cache_dir) if self.cache_dir else default_cache_dir()
        self._identity: dict[str, Any] | None | bool = False  # False: not computed yet

    def identity(self) -> dict[str, Any] | None:
        if self._identity is False:
            self._identity = model_identity(self.model_name) if self.enabled else None
            if self.enabled and self._identity is None:
                logger.warning("%s: no Hub commit known for this model, image features are not cached", self.model_name)
        return self._identity  # type: ignore[return-value]

    def key(self, model: Any, processor: Any, part: Any) -> tuple[str, dict[str, Any]] | None:
        """(hex key, its ingredients) for one task unit, or None when this model cannot be cached."""
        identity = self.identity()
        if identity is None:
            return None
        ingredients = {
            "model": identity,
            "task": part.name,
            "data": part.fingerprint(),
            "preprocessing": json.loads(processor.image_processor.to_json_string()),
            "dtypes": sorted({str(p.dtype) for p in model.parameters()}),  # a reduced-precision model: other key
            # autocast (bf16 on CUDA) and int8 layers leave no trace in parameter dtypes: name them too
            "precision": precision_in_effect(model),
            "normalized": False,
        }
        blob = json.dumps(ingredients, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:32], ingredients

    def path(self, part_name: str, key: str) -> Path:
        return Path(self.cache_dir) / part_name.replace("/", "__") / f"{key}.npy"

    def features(self, model: Any, processor: Any, part: Any, batch_size: int = 64) -> tuple[np.ndarray, dict]:
        """Raw image features `[N, D]` of `part` (float32), from the cache or one encoder pass (then cached).

        Returns (features, info): info has `cached` (bool), `images`, `seconds` and `images_per_second` of the
        pass (0 / None when cached) and `path` of the cache file (None when not cached).
        """
        from bioclip_hf.evaluation.harness import image_features
        from bioclip_hf.utils.io import atomic_open, atomic_write_bytes

        keyed = self.key(model, processor, part)
        path = self.path(part.name, keyed[0]) if keyed else None
        if path is not None and path.is_file():
            features = np.load(path)
            if features.shape[0] == len(part):
                logger.info("%s: image features from the cache (%s)", part.name, path)
                return features, {"cached": True, "images": len(part), "seconds": 0.0, "images_per_second": None,
                                  "path": str(path)}  # fmt: skip
            logger.warning("%s: cached features have %d rows for %d images; extracting again", path, len(features), len(part))
        start = time.perf_counter()
        features = image_features(model, processor, part.images, batch_size, normalize=False).astype(np.float32)
        seconds = time.perf_counter() - start
        if path is not None:
            with atomic_open(path) as fh:
                np.save(fh, features)
            atomic_write_bytes(path.with_suffix(".json"), (json.dumps(keyed[1], indent=2, default=str) + "\n").encode())
        info = {"cached": False, "images": len(part), "seconds": round(seconds, 3),
                "images_per_second": round(len(part) / seconds, 2) if seconds > 0 else None,
                "path": str(path) if path else None}  # fmt: skip
        logger.info("%s: %d images encoded in %.1f s", part.name, len(part), seconds)
        return features, info


def l2_normalize(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32), as BioCLIP 2's scripts do after `encode_image`."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.maximum(norms, np.finfo(np.float32).tiny)).astype(np.float32)
