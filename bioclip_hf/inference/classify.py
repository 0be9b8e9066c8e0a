"""Classify photos: Tree-of-Life taxa, custom labels (zero-shot, optionally binned) and few-shot (SimpleShot).

Every classifier takes image paths, folders (searched recursively), PIL images or uint8 arrays, skips unreadable
images (kept in `classifier.errors`, never aborting the batch) and returns plain records (dicts) that
`records_to_dataframe` turns into a pandas DataFrame.

Example:
    >>> clf = TreeOfLifeClassifier()  # imageomics/bioclip-2 + TreeOfLife-200M  # doctest: +SKIP
    >>> records_to_dataframe(clf.predict(["photos/"], rank="family", k=3))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from bioclip_hf.hub.registry import (
    DEFAULT_MODEL,
    index_source,
    model_provenance,
    requested_model_name,
)
from bioclip_hf.inference.fewshot import fit_simpleshot
from bioclip_hf.inference.images import IMAGE_EXTENSIONS, collect_images, image_key  # noqa: F401  (public here too)
from bioclip_hf.inference.pybioclip_format import (
    check_record_keys,
    to_pybioclip_label_record,
    to_pybioclip_taxon_record,
)
from bioclip_hf.treeoflife.index import TreeOfLifeIndex, clade_label, encode_prompts, load_index
from bioclip_hf.treeoflife.taxonomy import OPENAI_TEMPLATES, RANKS, Taxon, check_rank

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
    """

    autocast_dtype: torch.dtype | None = None  # see `optimize`
    _encoder: Callable[..., torch.Tensor] | None = None  # compiled `encode_image`, see `optimize`

    def __init__(
        self, model: Any = None, processor: Any = None, model_name_or_path: str | None = None, device: str | None = None,
        batch_size: int = 32, num_workers: int = 4, progress: bool = False, revision: str | None = None,
        record_keys: str = "bioclip-hf", model_str: str | None = None, pretrained_str: str | None = None,
        preprocess: str | None = None,
    ):
        from bioclip_hf.models.loading import load_model, load_processor, resolve_device, resolve_model_source

        if (model is None) != (processor is None):
            raise ValueError("pass both model and processor, or model_name_or_path")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.record_keys = check_record_keys(record_keys)
        name = requested_model_name(model_name_or_path, model_str, pretrained_str)
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

    def provenance(self) -> dict[str, Any]:
        """What produced the predictions: model id + revision + resolved commit, preprocessing, device."""
        model = getattr(self.model, "bioclip_source", None)  # set by load_model_and_processor
        if model is None or model.get("id") != self.model_name:
            model = model_provenance(self.model_name, self.model_revision) if self.model_name else {"id": None}
        image_processor = self.processor.image_processor
        config = image_processor.to_dict() if hasattr(image_processor, "to_dict") else {}
        return {"model": model, "preprocessing": json.loads(json.dumps(config, default=str)), "device": str(self.device),
                "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch.")}  # fmt: skip

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())

    def optimize(self, dtype: str | torch.dtype | None = None, compile: bool = False) -> BaseClassifier:
        """Opt-in speed-ups for the image encoder; returns self.

        Args:
            dtype: run the image encoder under autocast in "float16" or "bfloat16" (None/"float32": off). Weights
                stay float32 and features, probabilities and scores are computed in float32; on CPUs with AMX
                bfloat16 is also faster. Expect small score differences (compare top-k agreement).
            compile: `torch.compile` the image encoder (one-time compile cost; pays off on long runs).

        Example:
            >>> clf = TreeOfLifeClassifier().optimize(dtype="bfloat16")  # doctest: +SKIP
        """
        from bioclip_hf.models.loading import resolve_dtype

        self.autocast_dtype = resolve_dtype(dtype)
        self._encoder = torch.compile(self.model.encode_image) if compile else None
        return self

    def encode_pixels(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """`[b, 3, H, W]` preprocessed pixels -> `[b, D]` float32 features (copied to the model's device without
        blocking: pinned batches from `iter_embeddings`' loader overlap the copy with compute)."""
        dtype = next(self.model.parameters()).dtype
        pixels = pixels.to(self.device, dtype, non_blocking=True)
        encoder = self._encoder or self.model.encode_image
        cast = self.autocast_dtype
        with torch.no_grad(), torch.autocast(self.device.type, dtype=cast, enabled=cast is not None):
            return encoder(pixels, normalize=normalize).float()

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


class TreeOfLifeClassifier(BaseClassifier):
    """Zero-shot taxonomic classification against a Tree-of-Life index, at any rank.

    Args:
        index: a `TreeOfLifeIndex`, a path to one (`build-index` folder or `txt_emb_species.npy`), a Hub dataset id
            with the released layout, or None for the model's released index from the registry
            (`bioclip-hf list-models`: imageomics/bioclip-2 -> imageomics/TreeOfLife-200M, ...).
        subset: optional clade names (list) or subset table path restricting (and renormalising) predictions.
        index_revision: branch, tag or commit of the released index's dataset repo (default: the registry's).
        **kwargs: see `BaseClassifier` (pybioclip's `model_str="hf-hub:imageomics/bioclip"` works too).

    Example:
        >>> clf = TreeOfLifeClassifier(subset=["Aves"])  # doctest: +SKIP
        >>> clf.predict("raven.jpg", rank="genus", k=3)  # doctest: +SKIP
    """

    def __init__(self, index: TreeOfLifeIndex | str | os.PathLike | None = None, subset: Any = None,
                 index_revision: str | None = None, **kwargs: Any):  # fmt: skip
        if index is None and kwargs.get("model") is None:  # an unknown model fails before any weights are loaded
            index_source(requested_model_name(kwargs.get("model_name_or_path"), kwargs.get("model_str")) or DEFAULT_MODEL)
        if index is not None and index_revision is not None:
            raise ValueError("index_revision applies to the model's released index (index=None) only")
        super().__init__(**kwargs)
        self.index_origin = None if index is None or isinstance(index, TreeOfLifeIndex) else str(index)
        if index is None:
            index = TreeOfLifeIndex.from_registry(self.model_name, index_revision)
        elif not isinstance(index, TreeOfLifeIndex):
            index = load_index(index)
        self.full_index = index.to(self.device)
        self.index = self.full_index
        if subset is not None:
            self.apply_subset(subset)

    def provenance(self) -> dict[str, Any]:
        """`BaseClassifier.provenance` plus the index: Hub repo + revision + commit + files, or its local path."""
        info = super().provenance()
        meta = self.full_index.metadata
        index = {key: meta[key] for key in ("repo_id", "revision", "commit", "files") if key in meta}
        if self.index_origin is not None:
            path = Path(self.index_origin)
            index = {**index, "path": str(path.resolve()) if path.exists() else self.index_origin}
        info["index"] = {**index, "num_taxa": len(self.full_index), "num_taxa_used": len(self.index)}
        return info

    def apply_subset(self, subset: Any) -> None:
        """Restrict predictions to clades: a list of names, or a path to a subset table (see `TreeOfLifeIndex.subset`)."""
        if isinstance(subset, (str, os.PathLike)) and Path(subset).suffix.lower() in (".csv", ".tsv", ".parquet"):
            self.index = self.full_index.subset(table=subset)
        else:
            self.index = self.full_index.subset(names=[subset] if isinstance(subset, str) else subset)

    def get_label_data(self) -> Any:
        """The taxa of the (full) index as a DataFrame: kingdom ... species (epithet), common_name
        (with `record_keys="pybioclip"`: pybioclip's kingdom ... genus, species_epithet, species, common_name)."""
        frame = self.full_index.columns.to_arrow(dictionary=False).to_pandas()
        if self.record_keys == "pybioclip":  # species = genus + " " + epithet, as pybioclip joins them
            frame = frame.rename(columns={"species": "species_epithet"})
            frame.insert(RANKS.index("species") + 1, "species", frame["genus"] + " " + frame["species_epithet"])
        return frame

    def create_taxa_filter(self, rank: Any, user_values: Iterable[str]) -> list[bool]:
        """One flag per taxon of the full index: is its name at `rank` among `user_values` (case-insensitive).

        Raises:
            ValueError: naming the values that match no taxon at `rank` (as pybioclip does).
        """
        rank = check_rank(rank)
        values = [str(value).strip() for value in user_values]
        keep, unknown = self.full_index.match_names(rank, values)
        if unknown:
            raise ValueError(f"Unknown {rank} received: {', '.join(unknown)}. Only known {rank} may be used.")
        return keep.tolist()

    def create_taxa_filter_from_csv(self, csv_path: str | os.PathLike) -> list[bool]:
        """pybioclip's CSV filter: the first column's header names the rank, its cells the clades to keep."""
        import csv

        with open(csv_path, newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if row]
        column = rows[0][0].strip().lower() if rows else ""
        if column not in RANKS:
            raise ValueError(f"The first column of {csv_path} is named '{column}' but must be one of {','.join(RANKS)}.")
        return self.create_taxa_filter(column, [row[0] for row in rows[1:] if row[0].strip()])

    def apply_filter(self, keep: Sequence[bool] | None) -> None:
        """Predict only among the taxa flagged in `keep` (e.g. from `create_taxa_filter`); None removes the filter."""
        self.index = self.full_index if keep is None else self.full_index.select(keep)

    def predict(
        self, images: Any, rank: Any = "species", min_prob: float = 1e-9, k: int | None = 5,
        batch_size: int | None = None, callback: Callable[[int, int], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Top-`k` taxa at `rank` for each image (species below `min_prob` are not summed, as in pybioclip).

        The positional order is pybioclip's: `predict(images, rank, min_prob, k, batch_size, callback)`; `rank`
        may be a name or pybioclip's `Rank`.

        Records: file, rank, the lineage down to `rank` (at species: species_epithet and the binomial species),
        common_name (species rank only), taxon (display name of the clade) and score (probability); with
        `record_keys="pybioclip"`, pybioclip's keys (see `pybioclip_format.pybioclip_columns`).
        """
        return super().predict(images, k, batch_size, callback, rank=rank, min_prob=min_prob)

    def _check_options(self, rank: Any = "species", min_prob: float = 1e-9) -> dict[str, Any]:
        return {"rank": check_rank(rank), "min_prob": float(min_prob)}

    def _batch_records(self, keys: list[str], features: torch.Tensor, k: int, rank: str = "species",
                       min_prob: float = 1e-9) -> list[dict[str, Any]]:  # fmt: skip
        pybioclip = self.record_keys == "pybioclip"
        # pybioclip applies min_prob to the grouped ranks only; its species top-k is taken over all species.
        batch = self.index.predict(features, self.logit_scale, rank, k, 0.0 if pybioclip and rank == "species" else min_prob)
        records = []
        for key, predictions in zip(keys, batch):
            for taxon, score in predictions:
                record = taxon_record(key, rank, taxon, score)
                records.append(to_pybioclip_taxon_record(record, taxon.ranks()) if pybioclip else record)
        return records


def taxon_record(file: str, rank: str, taxon: Taxon, score: float) -> dict[str, Any]:
    """One TreeOfLife prediction as a flat dict (pybioclip's columns plus "rank" and "taxon")."""
    record: dict[str, Any] = {"file": file, "rank": rank}
    for name, value in zip(RANKS[: RANKS.index(rank)], taxon.ranks()):
        record[name] = value
    if rank == "species":
        record["species_epithet"] = taxon.species
        record["species"] = taxon.name_at("species")
    else:
        record[rank] = taxon.name_at(rank)
    record["common_name"] = taxon.common_name if rank == "species" else ""
    record["taxon"] = clade_label(taxon, rank)
    record["score"] = float(score)
    return record


class CustomLabelsClassifier(BaseClassifier):
    """Zero-shot classification among your own labels (template-averaged text embeddings), optionally binned.

    Args:
        labels: the class names (pybioclip's `cls_ary=` is accepted too).
        templates: prompt templates averaged per label (default: the 80 OpenAI templates).
        bins: optional {label: bin}; predictions then sum label probabilities per bin.
        label_embeddings: a path to embeddings saved with `save_label_embeddings`; loaded when its labels and
            templates match, otherwise computed and written there (a cache).
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
        if cache is not None and Path(cache).exists():
            labels, templates, features = load_label_embeddings(cache)
            if labels == self.labels and templates == self._template_keys() and features.shape[1] == self._dim():
                logger.info("loaded label embeddings from %s", cache)
                return features
            logger.warning("label embeddings in %s are for other labels/templates/model; recomputing", cache)
        features = encode_prompts(self.model, self.processor, self.labels, self.templates, batch_size=256,
                                  progress=self.progress, desc="embedding labels")  # fmt: skip
        if cache is not None:
            save_label_embeddings(cache, self.labels, self._template_keys(), features)
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
