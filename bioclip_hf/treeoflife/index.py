"""Tree-of-Life index: taxa plus their text embeddings, vectorized rank aggregation, and defect-aware loading.

Predictions are made among all species of the index (softmax over `logit_scale * image @ text.T`); a prediction at a
higher rank sums species probabilities over each clade with one precomputed species -> clade map per rank and one
`index_add_` on whatever device holds the probabilities.

Taxa are columnar (`taxa.TaxaColumns`); `Taxon` objects are made only for the predictions returned. Released
matrices are memory-mapped as they are (`[D, N]`, float32 or float16; the `[N, D]` view is a transpose, not a copy),
and what loading derives (columns, clade ids, problem flags) is cached next to the files (`treeoflife.cache`).
A memory-mapped matrix is scored where it lies, a chunk of taxa at a time, its pages released after each chunk
(`treeoflife.scoring`): exactly in float32 by default, or from a cached float16 copy (`set_precision("float16")`,
`treeoflife.half_cache`) with half the bytes to stream.

Entries whose embedding is all zero or non-finite (the TreeOfLife-200M BioCLIP 2 matrix had 15,487 all-zero columns)
and repeated entries are excluded from prediction: their logits are -inf, so they take no probability mass. Loading
warns once with the counts; `problem_records()` / `bioclip-hf list-taxa --problems` list them.

Files:
- `TreeOfLifeIndex.save` / `bioclip-hf build-index`: a folder with `embeddings.safetensors` (`[N, D]`),
  `taxa.parquet` (columns `RANKS` + common_name) and `index.json` (model, recipe, templates);
- the releases (`save_release`): `txt_emb_species.npy` (`[D, N]`) + `txt_emb_species.json` (`[[kingdom, ...,
  species_epithet], common_name]` per column), e.g. `embeddings/` of the `imageomics/TreeOfLife-10M` dataset repo.
  `from_hub` and `from_registry` (a registry model's index) get them through one download path
  (`hub.index_files.resolve_index_files`) and record repo, revision, commit and files in `metadata`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bioclip_hf.hub.registry import SPECIES_FILES, IndexFiles, index_source
from bioclip_hf.treeoflife.aggregation import RankGroups, aggregate_probs, clade_label
from bioclip_hf.treeoflife.cache import derived_taxa
from bioclip_hf.treeoflife.scoring import gather_columns, mapped_buffer, release_pages, score_chunks
from bioclip_hf.treeoflife.taxa import (
    DUPLICATE,
    PROBLEMS,
    TaxaColumns,
    TaxonSequence,
    find_problems,
    first_rows,
    mark_duplicates,
)
from bioclip_hf.treeoflife.taxonomy import RANKS, Taxon, check_rank
from bioclip_hf.treeoflife.text_embedding import RELEASE_RECIPE, check_recipe, encode_prompts, recipe_text

logger = logging.getLogger(__name__)

TOL_EMBEDDINGS_FILE, TOL_NAMES_FILE = SPECIES_FILES.embeddings, SPECIES_FILES.names
EMBEDDINGS_NAME, TAXA_NAME, META_NAME = "embeddings.safetensors", "taxa.parquet", "index.json"
_CHUNK = 32768  # taxa per block when scanning embeddings in memory (96 MB at 768-d)
PRECISIONS = ("float32", "float16")
_WARNED: set[str] = set()  # sources whose problems were already reported in this process

__all__ = ["RankGroups", "TreeOfLifeIndex", "aggregate_probs", "clade_label", "encode_prompts", "load_index"]


class TreeOfLifeIndex:
    """Taxa and their L2-normalised text embeddings (`embeddings[i]` embeds `taxa[i]`).

    Args:
        taxa: a sequence of `Taxon` or `TaxaColumns`.
        embeddings: `[N, D]` float tensor or array (float16 is widened block-wise when predicting).
        metadata: free-form provenance (model, recipe, source files).
        problems: per-taxon problem codes (`taxa.PROBLEMS`); computed from `embeddings` when None.

    Example:
        >>> index = TreeOfLifeIndex.from_hub("imageomics/TreeOfLife-10M")  # doctest: +SKIP
        >>> index.subset(["Aves"]).predict(image_features, logit_scale=100.0, rank="family", k=3)  # doctest: +SKIP
    """

    def __init__(self, taxa: Sequence[Taxon] | TaxaColumns, embeddings: torch.Tensor | np.ndarray,
                 metadata: dict[str, Any] | None = None, problems: np.ndarray | None = None):  # fmt: skip
        if isinstance(taxa, TaxonSequence) and taxa.rows is None and taxa.depth == len(RANKS) - 1:
            taxa = taxa.columns  # another index's taxa: reuse the columns
        self.columns = taxa if isinstance(taxa, TaxaColumns) else TaxaColumns.from_taxa(taxa)
        embeddings = torch.from_numpy(embeddings) if isinstance(embeddings, np.ndarray) else embeddings
        if embeddings.ndim != 2 or embeddings.shape[0] != len(self.columns):
            raise ValueError(f"embeddings of shape {tuple(embeddings.shape)} do not match {len(self.columns)} taxa "
                             "(expected [num_taxa, dim])")  # fmt: skip
        if not len(self.columns):
            raise ValueError("a Tree-of-Life index needs at least one taxon")
        self.embeddings = embeddings
        self.metadata: dict[str, Any] = dict(metadata or {})
        computed = problems is None
        if computed:
            problems = find_problems(_tensor_maxabs(embeddings), self.columns)
        self.problems = np.asarray(problems, np.int8)
        if len(self.problems) != len(self.columns):
            raise ValueError(f"{len(self.problems)} problem flags for {len(self.columns)} taxa")
        if self.problems.all():
            raise ValueError("every taxon of the index is excluded (all-zero, non-finite or duplicate embeddings)")
        self._excluded = torch.from_numpy(self.problems != 0).to(embeddings.device) if self.problems.any() else None
        self._groups: dict[str, RankGroups] = {}
        self.precision = "float32"  # see `set_precision`
        self._source: tuple[Path, np.ndarray, int] | None = None  # (file, memory-mapped matrix, taxa axis)
        self._buffer = self._half_buffer = None  # the mappings whose pages are released while scoring
        self._half: torch.Tensor | None = None
        self._no_half = False  # the float16 copy could not be made (values beyond float16's range)
        if computed:
            report_problems(self, "index")

    def __len__(self) -> int:
        return len(self.columns)

    def __repr__(self) -> str:
        return f"TreeOfLifeIndex({len(self)} taxa, dim {self.dim}, {self.num_excluded} excluded)"

    @property
    def taxa(self) -> TaxonSequence:
        """The taxa as a read-only sequence of `Taxon` (each built when accessed)."""
        return TaxonSequence(self.columns)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def num_excluded(self) -> int:
        """Taxa excluded from prediction (see `problem_records`)."""
        return int((self.problems != 0).sum())

    def to(self, device: str | torch.device) -> TreeOfLifeIndex:
        """Move embeddings and cached group maps to `device` (in place; returns self)."""
        moved = self.embeddings.to(device)
        if moved is not self.embeddings:  # now a copy in (device) memory: nothing mapped is scored any more
            self._source, self._buffer, self._half_buffer = None, None, None
            self._half = None if self._half is None else self._half.to(device)
        self.embeddings = moved
        if self._excluded is not None:
            self._excluded = self._excluded.to(device)
        for groups in self._groups.values():
            groups.group_ids = groups.group_ids.to(device)
        return self

    # -- rank aggregation --------------------------------------------------------------------------
    def groups(self, rank: str) -> RankGroups:
        """Clades at `rank`, keyed by full lineage (homonyms in different kingdoms stay apart); cached.

        At "species" every index entry is its own clade, as in pybioclip.
        """
        rank = check_rank(rank)
        if rank not in self._groups:
            device = self.embeddings.device
            if rank == "species":
                groups = RankGroups(rank, torch.arange(len(self), device=device), self.taxa)
            else:
                depth = RANKS.index(rank)
                ids = self.columns.lineage_ids(depth)
                taxa = TaxonSequence(self.columns, first_rows(ids), depth)
                groups = RankGroups(rank, torch.from_numpy(ids.astype(np.int64)).to(device), taxa)
            self._groups[rank] = groups
        return self._groups[rank]

    def set_precision(self, precision: str) -> TreeOfLifeIndex:
        """Score with the stored matrix ("float32", exact: the default) or a float16 copy ("float16": cached on disk
        and memory-mapped for a released index, in memory otherwise); products and sums stay float32. Returns self.

        float16 rounds each stored component by at most 2^-11 relative, so a logit moves by at most
        `logit_scale * 2^-11`; where the copy cannot be made (values beyond float16's range) it stays float32.

        Example:
            >>> index = TreeOfLifeIndex.from_registry("imageomics/bioclip-2").set_precision("float16")  # doctest: +SKIP
        """
        if precision not in PRECISIONS:
            raise ValueError(f"unknown index precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
        if precision == "float16" and self._half is None and not self._no_half:
            try:
                self._half = self._half_copy()
            except ValueError as err:
                logger.warning("%s", err)
                self._no_half = True  # not tried again
        self.precision = "float32" if self._half is None else precision
        return self

    def _half_copy(self) -> torch.Tensor:
        if self.embeddings.dtype == torch.float16:
            self._half_buffer = self._buffer
            return self.embeddings
        if self._source is not None:
            from bioclip_hf.treeoflife.half_cache import half_matrix

            half = half_matrix(*self._source)
            if half is not None:
                self._half_buffer = mapped_buffer(half)
                return torch.from_numpy(half)
        half = self.embeddings.to(torch.float16)
        if torch.isinf(half).any() and (torch.isinf(half) & torch.isfinite(self.embeddings)).any():
            raise ValueError("the index holds values beyond float16's range; scoring stays float32")
        return half

    def _attach_source(self, file: str | os.PathLike, matrix: np.ndarray, taxa_axis: int) -> None:
        """Remember the memory-mapped file behind `embeddings` (released while scoring; source of the float16 copy)."""
        self._source, self._buffer = (Path(file), matrix, taxa_axis), mapped_buffer(matrix)

    def logits(self, image_features: torch.Tensor, logit_scale: float | torch.Tensor) -> torch.Tensor:
        """`logit_scale * image_features @ embeddings.T`, with -inf for excluded taxa (features L2-normalised).

        A memory-mapped or float16 matrix is scored in blocks of contiguous rows (`scoring.score_chunks`: taxa of
        an `[N, D]` copy, dimensions of a released `[D, N]` file), its pages released after each; the `[B, N]`
        logits are float32 whatever the precision.
        """
        if image_features.shape[-1] != self.dim:
            raise ValueError(f"image features have dim {image_features.shape[-1]} but the index has dim {self.dim}; "
                             "was it built with another model?")  # fmt: skip
        scaled = float(logit_scale) * image_features.to(self.embeddings.device, torch.float32)
        half = self.precision == "float16" and self._half is not None
        matrix, buffer = (self._half, self._half_buffer) if half else (self.embeddings, self._buffer)
        if matrix.dtype == torch.float32 and buffer is None:
            logits = scaled @ matrix.T  # in memory: one product (a [D, N] file's transposed view is used as stored)
        elif matrix.T.is_contiguous() and not matrix.is_contiguous():  # the released [D, N] layout
            logits = score_chunks(scaled, matrix.T, 1, buffer)
        else:
            logits = score_chunks(scaled, matrix, 0, buffer)
        if self._excluded is not None:
            logits.masked_fill_(self._excluded, float("-inf"))
        return logits

    def probabilities(self, image_features: torch.Tensor, logit_scale: float | torch.Tensor) -> torch.Tensor:
        """Softmax over the index of `logits(...)`; excluded taxa get probability 0."""
        return self.logits(image_features, logit_scale).softmax(dim=-1)

    def predict(
        self, image_features: torch.Tensor, logit_scale: float | torch.Tensor, rank: str = "species", k: int = 5,
        min_prob: float = 1e-9,
    ) -> list[list[tuple[Taxon, float]]]:
        """Top-`k` clades at `rank` per image as `(taxon, probability)`; see `aggregate_probs` for `min_prob`."""
        probs = self.probabilities(image_features, logit_scale)
        return self.top_clades(probs, rank, k, min_prob)

    def top_clades(
        self, probs: torch.Tensor, rank: str, k: int = 5, min_prob: float = 1e-9, chunk_size: int = 16
    ) -> list[list[tuple[Taxon, float]]]:
        """Aggregate `[B, N]` species probabilities to `rank` and keep the top `k` (k > clades is clipped).

        Clades whose probability is 0 after the `min_prob` threshold are dropped, so fewer than `k` may come back.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        groups = self.groups(rank)
        results: list[list[tuple[Taxon, float]]] = []
        # Row chunks bound the thresholded copy of probs (16 x 450k floats = 29 MB) and stay cache-friendly.
        for start in range(0, probs.shape[0], chunk_size):
            chunk = probs[start : start + chunk_size]
            if rank == "species":
                scores = chunk.masked_fill(chunk <= min_prob, 0.0) if min_prob > 0 else chunk
            else:
                scores = aggregate_probs(chunk, groups.group_ids, len(groups), min_prob)
            values, indices = scores.topk(min(k, scores.shape[-1]), dim=-1)
            for row_i, row_v in zip(indices.cpu().tolist(), values.cpu().tolist()):
                results.append([(groups.taxa[i], v) for i, v in zip(row_i, row_v) if v > 0])
        return results

    # -- subsets -----------------------------------------------------------------------------------
    def subset(self, names: Iterable[str] | None = None, table: str | os.PathLike | None = None) -> TreeOfLifeIndex:
        """A smaller index keeping the taxa inside the given clades (predictions are renormalised over it).

        Args:
            names: clade names at any rank, case-insensitive ("Aves", "Corvidae", "Corvus corax").
            table: CSV/TSV/parquet whose rank columns (kingdom ... species, or scientific_name) list clades; a row
                keeps the taxa matching all of its non-empty cells. A table without rank columns lists names.

        Example:
            >>> birds = index.subset(["Aves"])  # doctest: +SKIP
        """
        from bioclip_hf.treeoflife.files import read_subset_table

        if names is None and table is None:
            raise ValueError("subset needs clade names or a table")
        keep = np.zeros(len(self), bool)
        wanted = [names] if isinstance(names, str) else list(names or [])
        if table is not None:
            patterns, extra_names = read_subset_table(table)
            wanted += extra_names
            for ranks, values in patterns.items():
                keep |= self.columns.match(ranks, values)
        lowered = {name.strip().lower() for name in wanted if name and name.strip()}
        if lowered:
            hits, found = self.columns.find_names(lowered)
            keep |= hits
            missing = sorted(lowered - found)
            if missing:
                logger.warning("subset: %d name(s) not in the index: %s", len(missing), ", ".join(missing[:10]))
        return self.select(keep)

    def name_mask(self, rank: str, values: Iterable[str]) -> np.ndarray:
        """One flag per taxon: is its name at `rank` (binomial for species) among `values` (case-insensitive)?"""
        return self.match_names(rank, values)[0]

    def match_names(self, rank: str, values: Iterable[str]) -> tuple[np.ndarray, list[str]]:
        """(`name_mask`, the values that name no taxon at `rank`)."""
        rank = check_rank(rank)
        values = [str(value).strip() for value in values]
        mask, found = self.columns.match_values([rank], [[value.lower()] for value in values])
        return mask, [value for value, hit in zip(values, found) if not hit]

    def select(self, keep: Sequence[bool] | np.ndarray | torch.Tensor) -> TreeOfLifeIndex:
        """A smaller index with the taxa where `keep` (one flag per taxon) is true."""
        keep = np.asarray(keep.cpu() if isinstance(keep, torch.Tensor) else keep, dtype=bool).reshape(-1)
        if len(keep) != len(self):
            raise ValueError(f"the filter has {len(keep)} flags but the index has {len(self)} taxa")
        rows = np.flatnonzero(keep)
        if not len(rows):
            raise ValueError("no taxa in the index match the requested subset")
        positions = torch.from_numpy(rows).to(self.embeddings.device)
        if self.embeddings.T.is_contiguous():  # a [D, N] file: gather along its rows, keep the orientation
            embeddings = gather_columns(self.embeddings.T, positions, self._buffer).T
        else:
            embeddings = self.embeddings.index_select(0, positions)
            release_pages(self._buffer)  # the gather may have touched most of a mapped file
        columns = self.columns.take(rows)
        kept = self.problems[rows]
        problems = mark_duplicates(np.where(kept == DUPLICATE, 0, kept), columns)  # a repeat may be the first copy now
        logger.info("subset keeps %d of %d taxa", len(rows), len(self))
        subset = TreeOfLifeIndex(columns, embeddings, dict(self.metadata), problems=problems)
        return subset.set_precision(self.precision)

    def problem_records(self) -> list[dict[str, Any]]:
        """The excluded taxa: position in the file, kingdom ... species (epithet), common_name and the problem."""
        records = []
        for row in np.flatnonzero(self.problems):
            values = self.columns.values(int(row))
            record: dict[str, Any] = {"position": int(row), **dict(zip(RANKS, values[:-1])), "common_name": values[-1]}
            record["problem"] = PROBLEMS[int(self.problems[row])]
            records.append(record)
        return records

    # -- persistence -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write `embeddings.safetensors` + `taxa.parquet` + `index.json` into folder `path` (atomically)."""
        import pyarrow.parquet as pq
        from safetensors.torch import save_file

        from bioclip_hf.utils.io import atomic_directory

        path = Path(path)
        with atomic_directory(path) as scratch:
            scratch = Path(scratch)
            save_file({"embeddings": self.embeddings.detach().float().cpu().contiguous()}, str(scratch / EMBEDDINGS_NAME))
            pq.write_table(self.columns.to_arrow(dictionary=False), scratch / TAXA_NAME)
            meta = {**self.metadata, "num_taxa": len(self), "dim": self.dim, "format": "bioclip-hf-tol-index/1"}
            (scratch / META_NAME).write_text(json.dumps(meta, indent=2, default=str))
        return path

    def save_release(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write the released layout: `path` (a `.npy`, float32 `[D, N]`) and the `.json` names beside it; a folder
        `path` gets `embeddings/txt_emb_species.{npy,json}`, the layout pybioclip reads from a Hub dataset repo.

        Example:
            >>> index.save_release("my-index/embeddings/txt_emb_species.npy")  # doctest: +SKIP
        """
        from bioclip_hf.treeoflife.files import write_release_files

        path = Path(path)
        npy = path if path.suffix == ".npy" else path / TOL_EMBEDDINGS_FILE
        matrix = self.embeddings.detach().float().cpu().T.numpy()
        return write_release_files(npy, matrix, self.columns.to_entries())

    @classmethod
    def load(cls, path: str | os.PathLike, cache: bool = True) -> TreeOfLifeIndex:
        """Load a folder written by `save`, a folder with `txt_emb_species.{npy,json}` (also under `embeddings/`, or
        one model-named `txt_emb_*.npy`), or a `.npy` file with its `.json` beside it."""
        from bioclip_hf.treeoflife.files import find_release_files

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"Tree-of-Life index not found: {path}")
        if path.suffix == ".npy":
            return cls.from_tol_files(path, path.with_suffix(".json"), cache=cache)
        if (path / EMBEDDINGS_NAME).exists():
            return cls._load_folder(path, cache)
        release = find_release_files(path) if path.is_dir() else None
        if release is not None:
            return cls.from_tol_files(*release, cache=cache)
        raise FileNotFoundError(f"{path} holds no Tree-of-Life index ({EMBEDDINGS_NAME} or txt_emb_species.npy)")

    @classmethod
    def _load_folder(cls, path: Path, cache: bool) -> TreeOfLifeIndex:
        from bioclip_hf.treeoflife.files import open_safetensors_matrix

        if not (path / TAXA_NAME).is_file():
            raise FileNotFoundError(f"{path} has {EMBEDDINGS_NAME} but no {TAXA_NAME}")
        matrix = open_safetensors_matrix(path / EMBEDDINGS_NAME)  # [N, D]

        def read_taxa() -> TaxaColumns:
            import pyarrow.parquet as pq

            return TaxaColumns.from_arrow(pq.read_table(path / TAXA_NAME))

        columns, problems = derived_taxa(path / EMBEDDINGS_NAME, path / TAXA_NAME, matrix, 0, read_taxa, cache)
        meta_file = path / META_NAME
        metadata = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        metadata["source"] = str(path)
        index = cls(columns, torch.from_numpy(matrix), metadata, problems=problems)
        index._attach_source(path / EMBEDDINGS_NAME, matrix, 0)
        report_problems(index, str(path))
        return index

    @classmethod
    def from_tol_files(cls, embeddings_file: str | os.PathLike, names_file: str | os.PathLike,
                       cache: bool = True) -> TreeOfLifeIndex:  # fmt: skip
        """Read a released `txt_emb_*.npy` (`[D, N]`, float32 or float16, memory-mapped) and its `.json` (N names).

        Args:
            embeddings_file, names_file: the two files.
            cache: read/write the derived taxa columns, clade ids and problem flags next to `names_file`.
        """
        from bioclip_hf.treeoflife.files import open_matrix, read_entries

        for file in (embeddings_file, names_file):
            if not Path(file).exists():
                raise FileNotFoundError(f"Tree-of-Life file not found: {file}")
        matrix = open_matrix(embeddings_file)  # [D, N]

        def read_taxa() -> TaxaColumns:
            return TaxaColumns.from_entries(read_entries(names_file), source=str(names_file))

        columns, problems = derived_taxa(embeddings_file, names_file, matrix, 1, read_taxa, cache)
        index = cls(columns, torch.from_numpy(matrix).T, {"source": str(embeddings_file)}, problems=problems)
        index._attach_source(embeddings_file, matrix, 1)
        report_problems(index, str(embeddings_file))
        return index

    @classmethod
    def from_hub(cls, repo_id: str = "imageomics/TreeOfLife-10M", revision: str | None = None,
                 embeddings_file: str = TOL_EMBEDDINGS_FILE, names_file: str = TOL_NAMES_FILE, cache_dir: str | None = None,
                 *, files: Sequence[IndexFiles | str] | None = None, cache: bool = True) -> TreeOfLifeIndex:  # fmt: skip
        """Download (or read from the HF cache) a released index from a Hub dataset repo.

        `index.metadata` records where it came from: `repo_id`, `revision`, the `commit` obtained and the `files`.

        Args:
            repo_id: the dataset repo.
            revision: branch, tag or commit (default `main`).
            embeddings_file, names_file: the file pair to read (default: pybioclip's `txt_emb_species` layout).
            cache_dir: HF cache folder (default: huggingface_hub's).
            files: instead of one pair, candidate pairs, the first present wins: `IndexFiles`, `.npy` paths in the repo
                or stems such as "txt_emb_bioclip-2".
            cache: see `from_tol_files`.

        Example:
            >>> index = TreeOfLifeIndex.from_hub("imageomics/TreeOfLife-10M")  # doctest: +SKIP
            >>> index.metadata["commit"]  # doctest: +SKIP
        """
        from bioclip_hf.hub.index_files import resolve_index_files

        pair = IndexFiles(embeddings_file, names_file)
        if pair != SPECIES_FILES:  # a pair named the earlier way; the default pair is resolve_index_files' own
            if files is not None:
                raise ValueError("give files=[...] or embeddings_file/names_file, not both")
            files = [pair]
        resolved = resolve_index_files(repo_id, files, revision, cache_dir)
        index = cls.from_tol_files(resolved.embeddings_path, resolved.names_path, cache=cache)
        index.metadata.update(resolved.provenance())
        return index

    @classmethod
    def from_registry(cls, model: str | os.PathLike, revision: str | None = None) -> TreeOfLifeIndex:
        """The released index a registry model predicts with (`bioclip-hf list-models`), via `from_hub`.

        Args:
            model: a registry model id (`hf-hub:` prefix accepted).
            revision: branch, tag or commit of the index's dataset repo (default: the registry's).

        Example:
            >>> index = TreeOfLifeIndex.from_registry("imageomics/bioclip-2")  # doctest: +SKIP
            >>> index.metadata["files"]  # doctest: +SKIP
            ['embeddings/txt_emb_bioclip-2.npy', 'embeddings/txt_emb_bioclip-2.json']
        """
        source = index_source(model)
        return cls.from_hub(source.repo_id, revision or source.revision, files=source.files)

    # -- building ----------------------------------------------------------------------------------
    @classmethod
    def build(
        cls, taxa: Sequence[Taxon], model: Any, processor: Any, recipe: str = RELEASE_RECIPE,
        templates: Sequence[str | Callable[[str], str]] | None = None, batch_size: int = 256, progress: bool = True,
        text_type: str | None = None,
    ) -> TreeOfLifeIndex:
        """Embed every taxon's recipe text, averaged over templates (by default exactly as the releases were made).

        Args:
            taxa: the taxa (e.g. from `taxonomy.read_taxa_table`, or a released `.json` via `TaxaColumns`).
            model, processor: a `BioCLIPModel` (on its device) and its `BioCLIPProcessor`.
            recipe: one of `text_embedding.RECIPES`: "release" (the released indexes' text) or a text type.
            templates: prompt templates averaged per taxon (default: the 80 OpenAI templates; one is 80x faster).
            batch_size: texts per forward pass.
            progress: show a progress bar.
            text_type: former name of `recipe` (a text type).

        Example:
            >>> index = TreeOfLifeIndex.build(read_taxa_table("taxa.csv"), model, processor)  # doctest: +SKIP
        """
        from bioclip_hf.treeoflife.taxonomy import OPENAI_TEMPLATES

        recipe = check_recipe(text_type or recipe)
        templates = tuple(templates) if templates else OPENAI_TEMPLATES
        taxa = list(taxa)
        texts = [recipe_text(taxon, recipe) for taxon in taxa]
        embeddings = encode_prompts(model, processor, texts, templates, batch_size, progress, desc="building index")
        meta = {"model": getattr(getattr(model, "config", None), "_name_or_path", ""), "recipe": recipe,
                "templates": [t if isinstance(t, str) else repr(t) for t in templates]}  # fmt: skip
        return cls(taxa, embeddings, meta)


def _tensor_maxabs(embeddings: torch.Tensor) -> np.ndarray:
    """Per-row largest |value| (NaN/inf propagate), a block of rows at a time (no full-size temporary)."""
    blocks = [embeddings[s : s + _CHUNK].detach().abs().amax(dim=1).float().cpu() for s in range(0, len(embeddings), _CHUNK)]
    return torch.cat(blocks).numpy()


def report_problems(index: TreeOfLifeIndex, source: str) -> None:
    """Warn (once per source and process) about the entries excluded from prediction, with counts per problem."""
    if not index.num_excluded or source in _WARNED:
        return
    if source != "index":
        _WARNED.add(source)
    counts = np.bincount(index.problems, minlength=len(PROBLEMS) + 1)
    detail = ", ".join(f"{counts[code]:,} {name}" for code, name in PROBLEMS.items() if counts[code])
    logger.warning("%s: %s of %s taxa excluded from prediction (%s); list them with `bioclip-hf list-taxa --problems`",
                   source, f"{index.num_excluded:,}", f"{len(index):,}", detail)  # fmt: skip


def load_index(spec: str | os.PathLike) -> TreeOfLifeIndex:
    """An index from a local path (see `TreeOfLifeIndex.load`) or, when no such path exists, a Hub dataset id
    holding `embeddings/txt_emb_species.{npy,json}` (e.g. "imageomics/TreeOfLife-200M")."""
    path = Path(spec)
    if not path.exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", str(spec)):
        return TreeOfLifeIndex.from_hub(str(spec))
    return TreeOfLifeIndex.load(path)
