"""Classify photos: Tree-of-Life taxa, custom labels (zero-shot, optionally binned) and few-shot (SimpleShot).

Every classifier takes image paths, folders (searched recursively), PIL images or uint8 arrays, skips unreadable
images (kept in `classifier.errors`, never aborting the batch) and returns plain records (dicts) that
`records_to_dataframe` turns into a pandas DataFrame.

Example:
    >>> clf = TreeOfLifeClassifier()  # imageomics/bioclip-2 + TreeOfLife-200M  # doctest: +SKIP
    >>> records_to_dataframe(clf.predict(["photos/"], rank="family", k=3))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from bioclip_hf.hub.index_files import bundled_index
from bioclip_hf.hub.registry import (
    DEFAULT_MODEL,
    index_source,
    is_local,
    requested_model_name,
)
from bioclip_hf.inference.classifier_base import BaseClassifier, records_to_dataframe  # noqa: F401  (public here)
from bioclip_hf.inference.custom_labels import (  # noqa: F401  (public here: the classifiers' one import path)
    CustomLabelsBinningClassifier,
    CustomLabelsClassifier,
    FewShotClassifier,
    load_label_embeddings,
    read_examples_folder,
    save_label_embeddings,
)
from bioclip_hf.inference.images import IMAGE_EXTENSIONS, collect_images, image_key  # noqa: F401  (public here too)
from bioclip_hf.inference.pybioclip_format import (
    to_pybioclip_taxon_record,
)
from bioclip_hf.treeoflife.index import TreeOfLifeIndex, clade_label, load_index
from bioclip_hf.treeoflife.taxonomy import RANKS, Taxon, check_rank

logger = logging.getLogger(__name__)


class TreeOfLifeClassifier(BaseClassifier):
    """Zero-shot taxonomic classification against a Tree-of-Life index, at any rank.

    Args:
        index: a `TreeOfLifeIndex`, a path to one (`build-index` folder or `txt_emb_species.npy`), a Hub dataset id
            with the released layout, or None: the model's own label index when it carries one (a `bioclip-hf
            finetune` output, `label_index/`), else its released index from the registry
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
        bundled = None
        if index is None and kwargs.get("model") is None:  # an unknown model fails before any weights are loaded
            name = requested_model_name(kwargs.get("model_name_or_path"), kwargs.get("model_str")) or DEFAULT_MODEL
            bundled = bundled_index(name, kwargs.get("revision"))  # a fine-tune's own label index
            if bundled is None:
                index_source(name)
        if index is not None and index_revision is not None:
            raise ValueError("index_revision applies to the model's released index (index=None) only")
        super().__init__(**kwargs)
        if index is None and kwargs.get("model") is not None and self.model_name and is_local(self.model_name):
            bundled = bundled_index(self.model_name)  # a loaded model: only its local folder is looked at
        if bundled is not None and index_revision is not None:
            raise ValueError(f"{self.model_name} carries its own label index: index_revision does not apply")
        index = bundled if index is None else index
        self.index_origin = None if index is None or isinstance(index, TreeOfLifeIndex) else str(index)
        if index is None:
            index = TreeOfLifeIndex.from_registry(self.model_name, index_revision)
        elif bundled is not None:
            index = TreeOfLifeIndex.load(bundled, cache=False)  # no derived-data cache inside the model folder
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
        info["index"] = {**index, "num_taxa": len(self.full_index), "num_taxa_used": len(self.index),
                         "precision": self.index_precision()}  # fmt: skip
        return info

    def index_precision(self) -> str:
        """How the index is scored: exactly ("float32") when the image encoder runs in float32, else from its cached
        float16 copy ("float16": half the bytes; its rounding, <= 2^-11 per component, is far below bf16's)."""
        precision = getattr(self.precision, "dtype", "float32")
        return "float32" if precision == "float32" else "float16"

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
        self.index.set_precision(self.index_precision())
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
