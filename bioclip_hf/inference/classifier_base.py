"""The shared classifier machinery: model loading, batched fault-tolerant image embedding, and records.

Every classifier (Tree-of-Life, custom labels, few-shot) derives from `BaseClassifier`: it takes image paths,
folders (searched recursively), PIL images or uint8 arrays, skips unreadable images (kept in `classifier.errors`,
never aborting the batch) and returns plain records (dicts) that `records_to_dataframe` turns into a DataFrame.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

from bioclip_hf.hub.registry import (
    DEFAULT_MODEL,
    model_provenance,
    requested_model_name,
)
from bioclip_hf.inference.images import collect_images, image_key
from bioclip_hf.inference.pybioclip_format import (
    check_record_keys,
)

logger = logging.getLogger(__name__)


def records_to_dataframe(records: Sequence[Mapping[str, Any]]) -> Any:
    """Records from any `predict` as a pandas DataFrame (columns in record order).

    Example:
        >>> records_to_dataframe([{"file": "a.jpg", "label": "cat", "score": 0.9}]).shape
        (1, 3)
    """
    import pandas as pd

    return pd.DataFrame.from_records(list(records))


class BaseClassifier:
    """Shared model loading and batched, fault-tolerant image embedding.

    Args:
        model, processor: a loaded `BioCLIPModel` / `BioCLIPProcessor` (takes precedence), or
        model_name_or_path: a Hub id (`hf-hub:` prefix accepted), a registry model (`bioclip-hf list-models`) or a
            folder, loaded with `load_model_and_processor` (default imageomics/bioclip-2). `model_str` is
            pybioclip's name for it.
        device: "cpu", "cuda", "mps" or None (auto); the model is moved there.
        batch_size: images per forward pass.
        num_workers: processes decoding images (DataLoader workers; 0 decodes in this process).
        progress: show progress bars.
        revision: branch, tag or commit of the model repo (default: the registry's pinned commit, else `main`).
        record_keys: "bioclip-hf" (default) or "pybioclip" (`file_name`, `classification`, pybioclip's columns).
        pretrained_str: pybioclip's open_clip pretrained tag; only None is supported (pass a Hub id instead).
        preprocess: "open_clip" or "pybioclip" image preprocessing (None: the model's own open_clip settings);
            "pybioclip" squashes images to the model size exactly as pybioclip does, for identical answers.
        dtype: encoder precision (keyword only): "auto" (default: bf16 on CPUs with native bf16 for models trained
            in mixed/bf16 precision, else float32; see `bioclip_hf.models.precision`), "float32", "bfloat16" or
            "float16". Features, probabilities and scores are float32 whatever the choice; `self.precision` says
            what is in effect and why. It applies to the image encoder (the text encoder stays float32). With bf16
            on a CPU the image encoder's Linear weights are stored in bf16 (about half the model's memory) when the
            classifier loaded the model itself; a model you pass in is never modified.
        quantize: "int8" (keyword only): dynamic int8 on the image encoder's Linear layers (CPU; cached per model
            commit, see `bioclip_hf.models.quantize`). None (default): off.
    """

    autocast_dtype: torch.dtype | None = None  # see `optimize`
    precision: Any = None  # the `Precision` in effect, see `optimize`
    _encoder: Callable[..., torch.Tensor] | None = None  # compiled `encode_image`, see `optimize`

    def __init__(
        self, model: Any = None, processor: Any = None, model_name_or_path: str | None = None, device: str | None = None,
        batch_size: int = 32, num_workers: int = 4, progress: bool = False, revision: str | None = None,
        record_keys: str = "bioclip-hf", model_str: str | None = None, pretrained_str: str | None = None,
        preprocess: str | None = None, *, dtype: str | torch.dtype | None = "auto", quantize: str | None = None,
    ):
        from bioclip_hf.models.loading import load_model, load_processor, resolve_device, resolve_model_source

        if (model is None) != (processor is None):
            raise ValueError("pass both model and processor, or model_name_or_path")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.record_keys = check_record_keys(record_keys)
        name = requested_model_name(model_name_or_path, model_str, pretrained_str)
        self._owns_model = model is None  # only a model loaded here may get bf16 weights or int8 layers in place
        if model is None:
            self.model_name = name or DEFAULT_MODEL
            source = resolve_model_source(self.model_name, revision)  # the registry's pin unless `revision` is given
            self.model_revision = source.revision
            model, processor = load_model(source, device), load_processor(source)
        else:
            self.model_name = name or getattr(model.config, "_name_or_path", "") or ""
            self.model_revision = revision
            if device is not None:
                model = model.to(resolve_device(device))
        if preprocess is not None:
            if not hasattr(processor, "with_preprocess"):
                raise ValueError(f"preprocess={preprocess!r} needs a BioCLIPProcessor, got {type(processor).__name__}")
            processor = processor.with_preprocess(preprocess)
        self.model, self.processor = model.eval(), processor
        self.device = next(model.parameters()).device
        self.batch_size, self.num_workers, self.progress = batch_size, num_workers, progress
        self.errors: list[dict[str, str]] = []
        self._set_precision(dtype, quantize)

    def provenance(self) -> dict[str, Any]:
        """What produced the predictions: model id + revision + resolved commit, preprocessing, device."""
        model = getattr(self.model, "bioclip_source", None)  # set by load_model_and_processor
        if model is None or model.get("id") != self.model_name:
            model = model_provenance(self.model_name, self.model_revision) if self.model_name else {"id": None}
        image_processor = self.processor.image_processor
        config = image_processor.to_dict() if hasattr(image_processor, "to_dict") else {}
        return {"model": model, "preprocessing": json.loads(json.dumps(config, default=str)), "device": str(self.device),
                "dtype": self.precision.dtype, "precision": self.precision.to_dict()}  # fmt: skip

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())

    def optimize(self, dtype: str | torch.dtype | None = None, compile: bool = False, *,
                 quantize: str | None = None) -> BaseClassifier:  # fmt: skip
        """Speed-ups for the image encoder; returns self.

        Args:
            dtype: "auto", "float32", "bfloat16" or "float16" (None: keep the precision chosen at construction).
                Features, probabilities and scores stay float32; expect small score differences in bf16/fp16
                (`benchmarks/bench_cpu_precision.py` measures the top-k agreement).
            compile: `torch.compile` the image encoder (one-time compile cost; pays off on long runs).
            quantize: "int8": dynamic int8 on the image encoder's Linear layers (CPU; see the class docstring).

        Example:
            >>> clf = TreeOfLifeClassifier().optimize(dtype="bfloat16")  # doctest: +SKIP
        """
        if dtype is not None or quantize is not None:
            self._set_precision(self.precision.requested if dtype is None else dtype,
                                quantize or self.precision.quantize)  # fmt: skip
        self._encoder = torch.compile(self.model.encode_image) if compile else None
        return self

    def _set_precision(self, dtype: Any, quantize: str | None) -> None:
        """Resolve `dtype` ("auto" included) for this model and device, and apply it: a model loaded here runs its
        encoders in that precision by itself (bf16 Linear weights on a CPU; int8 image layers); a model passed in
        is left as it is and only `encode_pixels` runs under autocast."""
        import dataclasses

        from bioclip_hf.models.precision import apply_precision, resolve_precision, training_precision

        if self.precision is not None and self.precision.quantize and quantize != self.precision.quantize:
            raise ValueError("the image encoder is already quantized; load a new classifier for another precision")
        applied = getattr(self.model, "bioclip_precision", None)
        if not self._owns_model and applied is not None and dtype in (None, "auto") and not quantize:
            # a model passed in that already runs in a precision (`apply_precision`, e.g. the Space's shared
            # model): "auto" means that one, so the index, caches and provenance follow what really runs
            self.precision, self.autocast_dtype = applied, applied.autocast
            return
        trained = training_precision(self.model_name, self.model.config)
        precision = resolve_precision(dtype, self.device, trained, quantize=quantize)
        if not self._owns_model:
            if precision.quantize:
                raise ValueError("quantize applies to models the classifier loads; pass model_name_or_path")
            precision = dataclasses.replace(precision, weights="float32")  # autocast in encode_pixels: same numbers
        else:
            if precision.quantize and not getattr(self.model, "bioclip_quantized", None):
                from bioclip_hf.models.quantize import quantize_image_encoder

                quantize_image_encoder(self.model, precision.quantize, revision=self.model_revision)
            apply_precision(self.model, precision)
        self.precision, self.autocast_dtype = precision, precision.autocast
        logger.info("precision: %s (%s)", precision.dtype, precision.reason)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context the encoders run under (a no-op in float32)."""
        cast = self.autocast_dtype
        return torch.autocast(self.device.type, dtype=cast, enabled=cast is not None)

    def encode_pixels(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """`[b, 3, H, W]` preprocessed pixels -> `[b, D]` float32 features (copied to the model's device without
        blocking: pinned batches from `iter_embeddings`' loader overlap the copy with compute)."""
        dtype = self.model.vision_model.embeddings.patch_embedding.weight.dtype  # float32 unless loaded in half
        pixels = pixels.to(self.device, dtype, non_blocking=True)
        encoder = self._encoder or self.model.encode_image
        with torch.no_grad(), self.autocast():
            features = encoder(pixels).float()
        return torch.nn.functional.normalize(features, dim=-1) if normalize else features  # in float32

    def embed_images(self, images: Any, normalize: bool = True) -> tuple[list[str], torch.Tensor]:
        """Embed `images`; returns (file keys, `[M, D]` features) for the readable ones (see `iter_embeddings`)."""
        keys: list[str] = []
        features: list[torch.Tensor] = []
        for batch_keys, batch_features in self.iter_embeddings(images, normalize):
            keys.extend(batch_keys)
            features.append(batch_features)
        if not features:
            return keys, torch.empty(0, int(self.model.config.projection_dim), device=self.device)
        return keys, torch.cat(features)

    def image_batches(self, items: Sequence[Any]) -> Any:
        """A DataLoader decoding `items` (paths, PIL images, arrays) in `num_workers` processes, in order."""
        from bioclip_hf.inference.images import image_loader

        return image_loader(items, self.processor.image_processor.transform, self.batch_size, self.num_workers,
                            pin_memory=self.device.type == "cuda")  # fmt: skip

    def iter_embeddings(self, images: Any, normalize: bool = True) -> Iterator[tuple[list[str], torch.Tensor]]:
        """Yield (file keys, `[b, D]` float32 features) batch by batch; `num_workers` processes decode ahead.

        Unreadable or missing images are logged, skipped and listed in `self.errors` (reset on each call).
        """
        from tqdm.auto import tqdm

        items, self.errors = collect_images(images)
        for error in self.errors:
            logger.warning("skipping %s: %s", error["file"], error["error"])
        bar = tqdm(total=len(items), desc="images", unit="img", disable=not self.progress)
        for batch in self.image_batches(items):
            start = batch["start"]
            for offset, message in batch["errors"]:
                key = image_key(items[start + offset], start + offset)
                logger.warning("skipping %s: %s", key, message)
                self.errors.append({"file": key, "error": message})
            if batch["pixels"] is not None:
                keys = [image_key(items[start + offset], start + offset) for offset in batch["ok"]]
                yield keys, self.encode_pixels(batch["pixels"], normalize)
            bar.update(batch["size"])
        bar.close()

    def predict(
        self, images: Any, k: int | None = 5, batch_size: int | None = None,
        callback: Callable[[int, int], None] | None = None, **options: Any,
    ) -> list[dict[str, Any]]:
        """Top-`k` records per image (k larger than the number of classes is clipped, None = all); see subclasses.

        Args:
            batch_size: images per forward pass for this call (default: the classifier's).
            callback: called as `callback(processed, total)` after each batch (pybioclip's progress hook).
        """
        total = sum(len(part) for part in collect_images(images)) if callback is not None else 0
        records: list[dict[str, Any]] = []
        with self._batch_size_set_to(batch_size):
            processed = 0
            for keys, batch in self._iter_batches(images, k, **options):
                records.extend(batch)
                processed += len(keys)
                if callback is not None:
                    callback(processed + len(self.errors), total)
        return records

    def iter_predict(self, images: Any, k: int | None = 5, **options: Any) -> Iterator[list[dict[str, Any]]]:
        """Like `predict`, one list of records per image batch: results stream out of big folders. k=None: all."""
        for _keys, batch in self._iter_batches(images, k, **options):
            yield batch

    def _iter_batches(self, images: Any, k: int | None, **options: Any) -> Iterator[tuple[list[str], list[dict[str, Any]]]]:
        if k is None:  # every class, as pybioclip's k=None
            k = 2**31 - 1
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        options = self._check_options(**options)  # fail before any image is read
        for keys, features in self.iter_embeddings(images):
            yield keys, self._batch_records(keys, features, k, **options)

    @contextlib.contextmanager
    def _batch_size_set_to(self, batch_size: int | None) -> Iterator[None]:
        if batch_size is None:
            yield
            return
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        saved, self.batch_size = self.batch_size, batch_size
        try:
            yield
        finally:
            self.batch_size = saved

    def predict_features(self, keys: Sequence[Any], features: torch.Tensor, k: int | None = 5,
                         **options: Any) -> list[dict[str, Any]]:  # fmt: skip
        """Records (as `predict`) for image features already computed (e.g. by `encode_pixels`); `keys` fill "file"."""
        k = 2**31 - 1 if k is None else k
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return self._batch_records(list(keys), features, k, **self._check_options(**options))

    def _check_options(self, **options: Any) -> dict[str, Any]:
        if options:
            raise TypeError(f"{type(self).__name__}.predict got unexpected options: {', '.join(options)}")
        return {}

    def _batch_records(self, keys: list[str], features: torch.Tensor, k: int, **options: Any) -> list[dict[str, Any]]:
        raise NotImplementedError
