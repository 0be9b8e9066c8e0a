"""Classify among your own labels: zero-shot custom labels (optionally binned) and few-shot (SimpleShot).

Example:
    >>> clf = CustomLabelsClassifier(["duck", "goose"])  # doctest: +SKIP
    >>> clf.predict("bird.jpg", k=1)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from bioclip_hf.inference.classifier_base import BaseClassifier
from bioclip_hf.inference.fewshot import fit_simpleshot
from bioclip_hf.inference.images import collect_images
from bioclip_hf.inference.pybioclip_format import (
    to_pybioclip_label_record,
)
from bioclip_hf.treeoflife.index import encode_prompts
from bioclip_hf.treeoflife.taxonomy import OPENAI_TEMPLATES

logger = logging.getLogger(__name__)


class CustomLabelsClassifier(BaseClassifier):
    """Zero-shot classification among your own labels (template-averaged text embeddings), optionally binned.

    Args:
        labels: the class names (pybioclip's `cls_ary=` is accepted too).
        templates: prompt templates averaged per label (default: the 80 OpenAI templates).
        bins: optional {label: bin}; predictions then sum label probabilities per bin.
        label_embeddings: a path to embeddings saved with `save_label_embeddings`; loaded when its labels and
            templates match, otherwise computed and written there (a cache). None: the automatic cache
            (`inference.label_cache`, keyed by model commit, labels and templates), so a repeated run skips the
            text encoder.
        **kwargs: see `BaseClassifier`.

    Example:
        >>> clf = CustomLabelsClassifier(["duck", "goose"], label_embeddings="labels.safetensors")  # doctest: +SKIP
        >>> clf.predict("bird.jpg", k=1)  # doctest: +SKIP
    """

    def __init__(
        self, labels: Iterable[str] | None = None, templates: Sequence[str | Callable[[str], str]] = OPENAI_TEMPLATES,
        bins: Mapping[str, str] | None = None, label_embeddings: str | os.PathLike | None = None,
        cls_ary: Iterable[str] | None = None, **kwargs: Any,
    ):
        if labels is not None and cls_ary is not None:
            raise ValueError("pass labels or cls_ary (pybioclip's name), not both")
        labels = cls_ary if labels is None else labels
        self.labels = [str(label).strip() for label in labels or () if str(label).strip()]
        if not self.labels:
            raise ValueError("no labels given")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        self.bins = self._check_bins(bins)  # bad labels or bins fail before the model is loaded
        super().__init__(**kwargs)
        self.templates = list(templates)
        self.text_features = self._label_features(label_embeddings).to(self.device)

    def _check_bins(self, bins: Mapping[str, Any] | None) -> dict[str, str] | None:
        if bins is None:
            return None
        if any(_is_missing(value) for value in bins.values()):
            raise ValueError("Empty, null, or nan are not allowed for bin values.")  # pybioclip's words
        cleaned = {str(label).strip(): str(value).strip() for label, value in bins.items()}
        missing = [label for label in self.labels if label not in cleaned]
        if missing:
            raise ValueError(f"labels without a bin: {', '.join(missing[:5])}")
        return cleaned

    def _template_keys(self) -> list[str]:
        return [t if isinstance(t, str) else repr(t(" {} ")) for t in self.templates]

    def _label_features(self, cache: str | os.PathLike | None) -> torch.Tensor:
        automatic = cache is None  # the automatic cache keyed by model commit, labels and templates (`label_cache`)
        if automatic:
            from bioclip_hf.inference.label_cache import label_cache_file

            # the text tower's own weights decide the embeddings (the image encoder's dtype does not)
            precision = "+".join(sorted({str(p.dtype).removeprefix("torch.") for p in self.model.text_model.parameters()}))
            cache = label_cache_file(self.model, self.labels, self._template_keys(), precision)
        if cache is not None and Path(cache).exists():
            try:
                labels, templates, features = load_label_embeddings(cache)
            except Exception as err:  # noqa: BLE001  (safetensors' own error too) a damaged automatic entry is rewritten
                if not automatic:
                    raise
                logger.warning("ignoring unreadable label-embedding cache %s: %s", cache, err)
                labels, templates, features = [], [], torch.empty(0, 0)
            if labels == self.labels and templates == self._template_keys() and features.shape[1] == self._dim():
                logger.info("loaded label embeddings from %s", cache)
                return features
            if not automatic:
                logger.warning("label embeddings in %s are for other labels/templates/model; recomputing", cache)
        features = encode_prompts(self.model, self.processor, self.labels, self.templates, batch_size=256,
                                  progress=self.progress, desc="embedding labels")  # fmt: skip
        if cache is not None:
            try:
                save_label_embeddings(cache, self.labels, self._template_keys(), features)
            except OSError as err:  # a read-only cache folder costs the next run the text encoder, nothing else
                if not automatic:
                    raise
                logger.info("cannot write the label-embedding cache %s: %s", cache, err)
        return features

    def _dim(self) -> int:
        return int(self.model.config.projection_dim)

    def save_label_embeddings(self, path: str | os.PathLike) -> None:
        """Save the label embeddings (safetensors, labels and templates in its metadata) for re-use."""
        save_label_embeddings(path, self.labels, self._template_keys(), self.text_features)

    def predict(self, images: Any, k: int | None = 5, batch_size: int | None = None,
                callback: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:  # fmt: skip
        """Top-`k` labels (or bins) per image; records: file, label, score (probability). k > labels is clipped.

        The positional order is pybioclip's: `predict(images, k, batch_size, callback)`; with
        `record_keys="pybioclip"` the records say file_name, classification, score.
        """
        return super().predict(images, k, batch_size, callback)

    def _batch_records(self, keys: list[str], features: torch.Tensor, k: int) -> list[dict[str, Any]]:
        probs = (self.logit_scale * features @ self.text_features.T).softmax(dim=-1)
        names = self.labels
        if self.bins is not None:
            names = list(dict.fromkeys(self.bins[label] for label in self.labels))
            group_ids = torch.tensor([names.index(self.bins[label]) for label in self.labels], device=probs.device)
            probs = probs.new_zeros(probs.shape[0], len(names)).index_add_(1, group_ids, probs)
        values, indices = probs.topk(min(k, len(names)), dim=-1)
        records = [{"file": key, "label": names[i], "score": float(v)}
                   for key, row_i, row_v in zip(keys, indices.tolist(), values.tolist()) for i, v in zip(row_i, row_v)]  # fmt: skip
        return [to_pybioclip_label_record(r) for r in records] if self.record_keys == "pybioclip" else records


class CustomLabelsBinningClassifier(CustomLabelsClassifier):
    """pybioclip's name for binned custom labels: `CustomLabelsClassifier(list(cls_to_bin), bins=cls_to_bin)`.

    Example:
        >>> CustomLabelsBinningClassifier({"duck": "bird", "trout": "fish"}).predict("x.jpg")  # doctest: +SKIP
    """

    def __init__(self, cls_to_bin: Mapping[str, str], **kwargs: Any):
        super().__init__(list(cls_to_bin), bins=cls_to_bin, **kwargs)  # empty/NaN bins raise ValueError, as in pybioclip


def _is_missing(value: Any) -> bool:
    """None, NaN or a blank string: pybioclip refuses these as bin names."""
    return value is None or (isinstance(value, float) and value != value) or not str(value).strip()


def save_label_embeddings(path: str | os.PathLike, labels: Sequence[str], templates: Sequence[str], features: torch.Tensor) -> None:
    """Write `[L, D]` label embeddings to a safetensors file with the labels and templates as metadata."""
    from safetensors.torch import save

    from bioclip_hf.utils.io import atomic_write_bytes

    metadata = {"labels": json.dumps(list(labels)), "templates": json.dumps(list(templates))}
    atomic_write_bytes(Path(path), save({"label_embeddings": features.detach().float().cpu().contiguous()}, metadata))


def load_label_embeddings(path: str | os.PathLike) -> tuple[list[str], list[str], torch.Tensor]:
    """Read a file written by `save_label_embeddings`: (labels, templates, `[L, D]` embeddings)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        if "labels" not in metadata:
            raise ValueError(f"{path} is not a label-embeddings file (no labels metadata)")
        features = handle.get_tensor("label_embeddings")
    return json.loads(metadata["labels"]), json.loads(metadata.get("templates", "[]")), features


class FewShotClassifier(BaseClassifier):
    """Few-shot classification with SimpleShot from labelled example images.

    Args:
        examples: a folder with one sub-folder of images per label (searched recursively), or {label: images}.
        **kwargs: see `BaseClassifier`.

    Example:
        >>> clf = FewShotClassifier("examples/")  # examples/duck/*.jpg, examples/goose/*.jpg  # doctest: +SKIP
        >>> clf.predict("bird.jpg", k=1)  # doctest: +SKIP
    """

    def __init__(self, examples: str | os.PathLike | Mapping[str, Any], **kwargs: Any):
        super().__init__(**kwargs)
        examples = read_examples_folder(examples) if isinstance(examples, (str, os.PathLike)) else examples
        support, labels = [], []
        for label, images in examples.items():
            keys, features = self.embed_images(images)
            support.append(features)
            labels += [str(label)] * len(keys)
        self.support_errors, self.errors = list(self.errors), []
        if not labels:
            raise ValueError("no readable example images")
        self.simpleshot = fit_simpleshot(torch.cat(support), labels)
        self.classes = self.simpleshot.classes

    def predict(self, images: Any, k: int | None = 5, batch_size: int | None = None,
                callback: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:  # fmt: skip
        """Nearest classes per image; records: file, label, score = 1 - distance / 2 (1 = at the centroid) and
        distance (Euclidean, to the class centroid of the centred, normalised features, in [0, 2]); with
        `record_keys="pybioclip"`: file_name, classification, score, distance."""
        return super().predict(images, k, batch_size, callback)

    def _batch_records(self, keys: list[str], features: torch.Tensor, k: int) -> list[dict[str, Any]]:
        distances = -self.simpleshot.predict_scores(features)
        values, indices = distances.topk(min(k, len(self.classes)), dim=-1, largest=False)
        records = [{"file": key, "label": self.classes[i], "score": 1.0 - d / 2.0, "distance": d}
                   for key, row_i, row_d in zip(keys, indices.tolist(), values.tolist()) for i, d in zip(row_i, row_d)]  # fmt: skip
        if self.record_keys == "pybioclip":
            return [{**to_pybioclip_label_record(r), "distance": r["distance"]} for r in records]
        return records


def read_examples_folder(folder: str | os.PathLike) -> dict[str, list[str]]:
    """{sub-folder name: image paths under it} for a few-shot examples folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"few-shot examples folder not found: {folder}")
    examples = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        images, _ = collect_images([sub])
        if images:
            examples[sub.name] = images
    if len(examples) < 1:
        raise ValueError(f"{folder} has no sub-folders with images (expected one sub-folder per label)")
    return examples
