"""Classify photos: Tree-of-Life taxa, custom labels (zero-shot, optionally binned) and few-shot (SimpleShot).

Every classifier takes image paths, folders (searched recursively), PIL images or uint8 arrays, skips unreadable
images (kept in `classifier.errors`, never aborting the batch) and returns plain records (dicts) that
`records_to_dataframe` turns into a pandas DataFrame.

Example:
    >>> clf = TreeOfLifeClassifier()  # imageomics/bioclip + TreeOfLife-10M  # doctest: +SKIP
    >>> records_to_dataframe(clf.predict(["photos/"], rank="family", k=3))  # doctest: +SKIP
"""

from __future__ import annotations

import glob
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .fewshot import fit_simpleshot
from .taxonomy import OPENAI_TEMPLATES, RANKS, Taxon, check_rank
from .tol_index import TreeOfLifeIndex, clade_label, default_index_repo, encode_prompts, load_index

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def collect_images(inputs: Any, recursive: bool = True) -> tuple[list[Any], list[dict[str, str]]]:
    """Expand `inputs` (paths, folders, globs, PIL images, arrays) into a flat list; missing paths become errors.

    Folders are searched (recursively by default) for files with `IMAGE_EXTENSIONS`, in sorted order; explicit
    files are kept whatever their extension. A path that does not exist but holds `*`, `?` or `[` is a glob
    (`**` spans folders), expanded in sorted order, e.g. "photos/**/*.jpg" (quote it so the shell leaves it alone).

    Example:
        >>> images, errors = collect_images(["photos/", "extra.jpg"])  # doctest: +SKIP
    """
    if isinstance(inputs, (str, os.PathLike)) or not isinstance(inputs, Iterable) or hasattr(inputs, "shape"):
        inputs = [inputs]
    images: list[Any] = []
    errors: list[dict[str, str]] = []
    for item in inputs:
        if not isinstance(item, (str, os.PathLike)):
            images.append(item)
            continue
        path = Path(item)
        if path.is_dir():
            pattern = path.rglob("*") if recursive else path.glob("*")
            images.extend(str(p) for p in sorted(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        elif path.is_file():
            images.append(str(path))
        elif any(char in str(item) for char in "*?[") and (matches := sorted(glob.glob(str(item), recursive=True))):
            images.extend(match for match in matches if Path(match).is_file())
        else:
            errors.append({"file": str(path), "error": f"image not found: {path}"})
    return images, errors


def image_key(image: Any, position: int) -> str:
    """The "file" value of a record: the path, or `<image N>` for in-memory images."""
    return str(image) if isinstance(image, (str, os.PathLike)) else f"<image {position}>"


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
        model_name_or_path: a Hub id or folder loaded with `load_model_and_processor` (default imageomics/bioclip).
        device: "cpu", "cuda", "mps" or None (auto); the model is moved there.
        batch_size: images per forward pass.
        num_workers: processes decoding images (DataLoader workers; 0 decodes in this process).
        progress: show progress bars.
    """

    autocast_dtype: torch.dtype | None = None  # see `optimize`
    _encoder: Callable[..., torch.Tensor] | None = None  # compiled `encode_image`, see `optimize`

    def __init__(
        self, model: Any = None, processor: Any = None, model_name_or_path: str | None = None, device: str | None = None,
        batch_size: int = 32, num_workers: int = 4, progress: bool = False,
    ):
        from .loading import DEFAULT_MODEL, load_model_and_processor, resolve_device

        if (model is None) != (processor is None):
            raise ValueError("pass both model and processor, or model_name_or_path")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if model is None:
            self.model_name = model_name_or_path or DEFAULT_MODEL
            model, processor = load_model_and_processor(self.model_name, device=device)
        else:
            self.model_name = model_name_or_path or getattr(model.config, "_name_or_path", "") or ""
            if device is not None:
                model = model.to(resolve_device(device))
        self.model, self.processor = model.eval(), processor
        self.device = next(model.parameters()).device
        self.batch_size, self.num_workers, self.progress = batch_size, num_workers, progress
        self.errors: list[dict[str, str]] = []

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
        from .loading import resolve_dtype

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
        from .image_loading import image_loader

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

    def predict(self, images: Any, k: int | None = 5, **options: Any) -> list[dict[str, Any]]:
        """Top-`k` records per image (k larger than the number of classes is clipped, None = all); see subclasses."""
        return [record for batch in self.iter_predict(images, k, **options) for record in batch]

    def iter_predict(self, images: Any, k: int | None = 5, **options: Any) -> Iterator[list[dict[str, Any]]]:
        """Like `predict`, one list of records per image batch: results stream out of big folders. k=None: all."""
        if k is None:  # every class, as pybioclip's k=None
            k = 2**31 - 1
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        options = self._check_options(**options)  # fail before any image is read
        for keys, features in self.iter_embeddings(images):
            yield self._batch_records(keys, features, k, **options)

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
            with the released layout, or None for the model's released index (imageomics/bioclip ->
            imageomics/TreeOfLife-10M).
        subset: optional clade names (list) or subset table path restricting (and renormalising) predictions.
        **kwargs: see `BaseClassifier`.

    Example:
        >>> clf = TreeOfLifeClassifier(subset=["Aves"])  # doctest: +SKIP
        >>> clf.predict("raven.jpg", rank="genus", k=3)  # doctest: +SKIP
    """

    def __init__(self, index: TreeOfLifeIndex | str | os.PathLike | None = None, subset: Any = None, **kwargs: Any):
        super().__init__(**kwargs)
        if index is None:
            index = TreeOfLifeIndex.from_hub(default_index_repo(self.model_name))
        elif not isinstance(index, TreeOfLifeIndex):
            index = load_index(index)
        self.full_index = index.to(self.device)
        self.index = self.full_index
        if subset is not None:
            self.apply_subset(subset)

    def apply_subset(self, subset: Any) -> None:
        """Restrict predictions to clades: a list of names, or a path to a subset table (see `TreeOfLifeIndex.subset`)."""
        if isinstance(subset, (str, os.PathLike)) and Path(subset).suffix.lower() in (".csv", ".tsv", ".parquet"):
            self.index = self.full_index.subset(table=subset)
        else:
            self.index = self.full_index.subset(names=[subset] if isinstance(subset, str) else subset)

    def get_label_data(self) -> Any:
        """The taxa of the (full) index as a DataFrame: kingdom ... species (epithet), common_name."""
        return records_to_dataframe([taxon.to_dict() for taxon in self.full_index.taxa])

    def create_taxa_filter(self, rank: str, user_values: Iterable[str]) -> list[bool]:
        """One flag per taxon of the full index: is its name at `rank` among `user_values` (case-insensitive)."""
        rank = check_rank(rank)
        wanted = {str(value).strip().lower() for value in user_values}
        return [taxon.name_at(rank).lower() in wanted for taxon in self.full_index.taxa]

    def apply_filter(self, keep: Sequence[bool] | None) -> None:
        """Predict only among the taxa flagged in `keep` (e.g. from `create_taxa_filter`); None removes the filter."""
        self.index = self.full_index if keep is None else self.full_index.select(keep)

    def predict(
        self, images: Any, rank: str = "species", k: int | None = 5, min_prob: float = 1e-9
    ) -> list[dict[str, Any]]:
        """Top-`k` taxa at `rank` for each image (species below `min_prob` are not summed, as in pybioclip).

        Records: file, rank, the lineage down to `rank` (at species: species_epithet and the binomial species),
        common_name (species rank only), taxon (display name of the clade) and score (probability).
        """
        return super().predict(images, k, rank=rank, min_prob=min_prob)

    def _check_options(self, rank: str = "species", min_prob: float = 1e-9) -> dict[str, Any]:
        return {"rank": check_rank(rank), "min_prob": float(min_prob)}

    def _batch_records(self, keys: list[str], features: torch.Tensor, k: int, rank: str = "species",
                       min_prob: float = 1e-9) -> list[dict[str, Any]]:  # fmt: skip
        batch = self.index.predict(features, self.logit_scale, rank, k, min_prob)
        return [taxon_record(key, rank, taxon, score) for key, predictions in zip(keys, batch) for taxon, score in predictions]


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
        labels: the class names.
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
        self, labels: Sequence[str], templates: Sequence[str | Callable[[str], str]] = OPENAI_TEMPLATES,
        bins: Mapping[str, str] | None = None, label_embeddings: str | os.PathLike | None = None, **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.labels = [str(label).strip() for label in labels if str(label).strip()]
        if not self.labels:
            raise ValueError("no labels given")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        self.templates = list(templates)
        self.bins = self._check_bins(bins)
        self.text_features = self._label_features(label_embeddings).to(self.device)

    def _check_bins(self, bins: Mapping[str, str] | None) -> Mapping[str, str] | None:
        if bins is None:
            return None
        missing = [label for label in self.labels if label not in bins]
        if missing:
            raise ValueError(f"labels without a bin: {', '.join(missing[:5])}")
        return dict(bins)

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

    def predict(self, images: Any, k: int | None = 5) -> list[dict[str, Any]]:
        """Top-`k` labels (or bins) per image; records: file, label, score (probability). k > labels is clipped."""
        return super().predict(images, k)

    def _batch_records(self, keys: list[str], features: torch.Tensor, k: int) -> list[dict[str, Any]]:
        probs = (self.logit_scale * features @ self.text_features.T).softmax(dim=-1)
        names = self.labels
        if self.bins is not None:
            names = list(dict.fromkeys(self.bins[label] for label in self.labels))
            group_ids = torch.tensor([names.index(self.bins[label]) for label in self.labels], device=probs.device)
            probs = probs.new_zeros(probs.shape[0], len(names)).index_add_(1, group_ids, probs)
        values, indices = probs.topk(min(k, len(names)), dim=-1)
        return [{"file": key, "label": names[i], "score": float(v)}
                for key, row_i, row_v in zip(keys, indices.tolist(), values.tolist()) for i, v in zip(row_i, row_v)]  # fmt: skip


class CustomLabelsBinningClassifier(CustomLabelsClassifier):
    """pybioclip's name for binned custom labels: `CustomLabelsClassifier(list(cls_to_bin), bins=cls_to_bin)`.

    Example:
        >>> CustomLabelsBinningClassifier({"duck": "bird", "trout": "fish"}).predict("x.jpg")  # doctest: +SKIP
    """

    def __init__(self, cls_to_bin: Mapping[str, str], **kwargs: Any):
        super().__init__(list(cls_to_bin), bins=cls_to_bin, **kwargs)


def save_label_embeddings(path: str | os.PathLike, labels: Sequence[str], templates: Sequence[str], features: torch.Tensor) -> None:
    """Write `[L, D]` label embeddings to a safetensors file with the labels and templates as metadata."""
    from safetensors.torch import save

    from .io_utils import atomic_write_bytes

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

    def predict(self, images: Any, k: int | None = 5) -> list[dict[str, Any]]:
        """Nearest classes per image; records: file, label, score = 1 - distance / 2 (1 = at the centroid) and
        distance (Euclidean, to the class centroid of the centred, normalised features, in [0, 2])."""
        return super().predict(images, k)

    def _batch_records(self, keys: list[str], features: torch.Tensor, k: int) -> list[dict[str, Any]]:
        distances = -self.simpleshot.predict_scores(features)
        values, indices = distances.topk(min(k, len(self.classes)), dim=-1, largest=False)
        return [{"file": key, "label": self.classes[i], "score": 1.0 - d / 2.0, "distance": d}
                for key, row_i, row_d in zip(keys, indices.tolist(), values.tolist()) for i, d in zip(row_i, row_d)]  # fmt: skip


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
