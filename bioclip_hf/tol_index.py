"""Tree-of-Life index: a list of taxa plus their text embeddings, and vectorized rank aggregation.

Predictions are made among all species of the index (softmax over `logit_scale * image @ text.T`); a prediction at a
higher rank sums species probabilities over each clade. The species -> clade map is precomputed once per rank as an
integer tensor, so aggregating a whole batch is one `index_add_` on whatever device holds the probabilities (instead
of a Python loop per image and per species).

Files:
- built with `TreeOfLifeIndex.build(...)` / `bioclip-hf build-index`: a folder with `embeddings.safetensors`
  (`[N, D]`), `taxa.parquet` (columns `RANKS` + common_name) and `index.json` (model, text type, templates);
- the original BioCLIP release: `embeddings/txt_emb_species.npy` (`[D, N]`) + `embeddings/txt_emb_species.json`
  (`[[kingdom, ..., species_epithet], common_name]` per column) in the `imageomics/TreeOfLife-10M` dataset repo.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .taxonomy import (
    DEFAULT_TEMPLATE,
    OPENAI_TEMPLATES,
    RANKS,
    Taxon,
    apply_template,
    check_rank,
    check_text_type,
)

logger = logging.getLogger(__name__)

TOL_EMBEDDINGS_FILE = "embeddings/txt_emb_species.npy"
TOL_NAMES_FILE = "embeddings/txt_emb_species.json"
EMBEDDINGS_NAME, TAXA_NAME, META_NAME = "embeddings.safetensors", "taxa.parquet", "index.json"


@dataclass
class RankGroups:
    """The clades of one rank: `group_ids[i]` is the clade of taxon `i`; `taxa[g]` describes clade `g`."""

    rank: str
    group_ids: torch.Tensor
    taxa: list[Taxon]

    def __len__(self) -> int:
        return len(self.taxa)


def clade_label(taxon: Taxon, rank: str) -> str:
    """Display name of `taxon`'s clade at `rank`; clades with an empty name say so ("Corvidae (genus unknown)")."""
    name = taxon.name_at(rank)
    if name:
        return name
    known = next((value for value in reversed(taxon.lineage(rank)) if value), "")
    return f"{known} ({rank} unknown)".strip()


def aggregate_probs(probs: torch.Tensor, group_ids: torch.Tensor, num_groups: int, min_prob: float = 0.0) -> torch.Tensor:
    """Sum species probabilities `[B, N]` into clade probabilities `[B, G]` (vectorized, device-agnostic).

    Args:
        probs: softmax probabilities over the N taxa, one row per image.
        group_ids: `[N]` long tensor, clade index of each taxon (see `TreeOfLifeIndex.groups`).
        num_groups: G.
        min_prob: species probabilities `<= min_prob` are ignored (pybioclip's semantics).

    Example:
        >>> aggregate_probs(torch.tensor([[0.5, 0.3, 0.2]]), torch.tensor([0, 1, 0]), 2)
        tensor([[0.7000, 0.3000]])
    """
    if probs.shape[-1] != group_ids.shape[0]:
        raise ValueError(f"probabilities cover {probs.shape[-1]} taxa but the group map has {group_ids.shape[0]}")
    if min_prob > 0:
        probs = probs.masked_fill(probs <= min_prob, 0.0)
    out = probs.new_zeros(probs.shape[0], num_groups)
    return out.index_add_(1, group_ids.to(probs.device), probs)


@dataclass
class TreeOfLifeIndex:
    """Taxa and their L2-normalised text embeddings (`embeddings[i]` embeds `taxa[i]`).

    Example:
        >>> index = TreeOfLifeIndex.from_hub("imageomics/TreeOfLife-10M")  # doctest: +SKIP
        >>> index.subset(["Aves"]).predict(image_features, logit_scale=100.0, rank="family", k=3)  # doctest: +SKIP
    """

    taxa: list[Taxon]
    embeddings: torch.Tensor
    metadata: dict[str, Any] = field(default_factory=dict)
    _groups: dict[str, RankGroups] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != len(self.taxa):
            raise ValueError(f"embeddings of shape {tuple(self.embeddings.shape)} do not match {len(self.taxa)} taxa "
                             "(expected [num_taxa, dim])")  # fmt: skip
        if not self.taxa:
            raise ValueError("a Tree-of-Life index needs at least one taxon")

    def __len__(self) -> int:
        return len(self.taxa)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def to(self, device: str | torch.device) -> TreeOfLifeIndex:
        """Move embeddings and cached group maps to `device` (in place; returns self)."""
        self.embeddings = self.embeddings.to(device)
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
                groups = RankGroups(rank, torch.arange(len(self.taxa), device=device), list(self.taxa))
            else:
                ids: dict[tuple[str, ...], int] = {}
                group_ids = [ids.setdefault(taxon.lineage(rank), len(ids)) for taxon in self.taxa]
                taxa = [Taxon(*lineage) for lineage in ids]
                groups = RankGroups(rank, torch.tensor(group_ids, dtype=torch.long, device=device), taxa)
            self._groups[rank] = groups
        return self._groups[rank]

    def probabilities(self, image_features: torch.Tensor, logit_scale: float | torch.Tensor) -> torch.Tensor:
        """Softmax over the index of `logit_scale * image_features @ embeddings.T` (features L2-normalised)."""
        if image_features.shape[-1] != self.dim:
            raise ValueError(f"image features have dim {image_features.shape[-1]} but the index has dim {self.dim}; "
                             "was it built with another model?")  # fmt: skip
        features = image_features.to(self.embeddings.device, torch.float32)
        logits = float(logit_scale) * features @ self.embeddings.float().T
        return logits.softmax(dim=-1)

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
        if names is None and table is None:
            raise ValueError("subset needs clade names or a table")
        keep = [False] * len(self.taxa)
        wanted = [names] if isinstance(names, str) else list(names or [])
        if table is not None:
            patterns, extra_names = _read_subset_table(table)
            wanted += extra_names
            for ranks, values in patterns.items():
                for i, taxon in enumerate(self.taxa):
                    keep[i] = keep[i] or _match_key(taxon, ranks) in values
        if wanted:
            lowered = {name.strip().lower() for name in wanted if name and name.strip()}
            found = set()
            for i, taxon in enumerate(self.taxa):
                hits = lowered.intersection(_names_lower(taxon))
                if hits:
                    keep[i] = True
                    found |= hits
            missing = sorted(lowered - found)
            if missing:
                logger.warning("subset: %d name(s) not in the index: %s", len(missing), ", ".join(missing[:10]))
        return self.select(keep)

    def select(self, keep: Sequence[bool] | torch.Tensor) -> TreeOfLifeIndex:
        """A smaller index with the taxa where `keep` (one flag per taxon) is true."""
        keep = [bool(flag) for flag in (keep.tolist() if isinstance(keep, torch.Tensor) else keep)]
        if len(keep) != len(self.taxa):
            raise ValueError(f"the filter has {len(keep)} flags but the index has {len(self.taxa)} taxa")
        indices = [i for i, flag in enumerate(keep) if flag]
        if not indices:
            raise ValueError("no taxa in the index match the requested subset")
        positions = torch.tensor(indices, dtype=torch.long, device=self.embeddings.device)
        logger.info("subset keeps %d of %d taxa", len(indices), len(self.taxa))
        return TreeOfLifeIndex([self.taxa[i] for i in indices], self.embeddings[positions], dict(self.metadata))

    # -- persistence -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write `embeddings.safetensors` + `taxa.parquet` + `index.json` into folder `path` (atomically)."""
        import pandas as pd
        from safetensors.torch import save_file

        from .io_utils import atomic_directory

        path = Path(path)
        with atomic_directory(path) as scratch:
            scratch = Path(scratch)
            save_file({"embeddings": self.embeddings.detach().float().cpu().contiguous()}, str(scratch / EMBEDDINGS_NAME))
            pd.DataFrame([t.to_dict() for t in self.taxa]).to_parquet(scratch / TAXA_NAME, index=False)
            meta = {**self.metadata, "num_taxa": len(self.taxa), "dim": self.dim, "format": "bioclip-hf-tol-index/1"}
            (scratch / META_NAME).write_text(json.dumps(meta, indent=2, default=str))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> TreeOfLifeIndex:
        """Load a folder written by `save`, a folder with `txt_emb_species.{npy,json}`, or the `.npy` file itself."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"Tree-of-Life index not found: {path}")
        if path.suffix == ".npy":
            return cls.from_tol_files(path, path.with_suffix(".json"))
        if (path / EMBEDDINGS_NAME).exists():
            import pandas as pd
            from safetensors.torch import load_file

            embeddings = load_file(str(path / EMBEDDINGS_NAME))["embeddings"]
            frame = pd.read_parquet(path / TAXA_NAME)
            taxa = [Taxon.from_dict(row) for row in frame.to_dict("records")]
            meta_file = path / META_NAME
            metadata = json.loads(meta_file.read_text()) if meta_file.exists() else {}
            return cls(taxa, embeddings, metadata)
        for npy in (path / "txt_emb_species.npy", path / TOL_EMBEDDINGS_FILE):
            if npy.exists():
                return cls.from_tol_files(npy, npy.with_suffix(".json"))
        raise FileNotFoundError(f"{path} holds no Tree-of-Life index ({EMBEDDINGS_NAME} or txt_emb_species.npy)")

    @classmethod
    def from_tol_files(cls, embeddings_file: str | os.PathLike, names_file: str | os.PathLike) -> TreeOfLifeIndex:
        """Read BioCLIP's `txt_emb_species.npy` (`[D, N]`) and `txt_emb_species.json` (N names)."""
        import numpy as np

        for file in (embeddings_file, names_file):
            if not Path(file).exists():
                raise FileNotFoundError(f"Tree-of-Life file not found: {file}")
        array = np.load(embeddings_file, mmap_mode="r")
        with open(names_file, encoding="utf-8") as handle:
            names = json.load(handle)
        if array.ndim != 2 or array.shape[1] != len(names):
            raise ValueError(f"{embeddings_file} has shape {array.shape}; expected [dim, {len(names)}] to match {names_file}")
        taxa = [Taxon.from_tol_entry(entry) for entry in names]
        # The file is [D, N]: transposing gives an [N, D] view without copying; float16 files become float32.
        embeddings = torch.from_numpy(np.array(array, dtype=np.float32)).T  # copy: not a read-only memmap
        return cls(taxa, embeddings, {"source": str(embeddings_file)})

    @classmethod
    def from_hub(cls, repo_id: str = "imageomics/TreeOfLife-10M", revision: str | None = None,
                 embeddings_file: str = TOL_EMBEDDINGS_FILE, names_file: str = TOL_NAMES_FILE,
                 cache_dir: str | None = None) -> TreeOfLifeIndex:  # fmt: skip
        """Download (or read from the HF cache) a released index from a Hub dataset repo.

        Example:
            >>> index = TreeOfLifeIndex.from_hub("imageomics/TreeOfLife-10M")  # doctest: +SKIP
        """
        from huggingface_hub import hf_hub_download

        files = [hf_hub_download(repo_id, name, repo_type="dataset", revision=revision, cache_dir=cache_dir)
                 for name in (embeddings_file, names_file)]  # fmt: skip
        index = cls.from_tol_files(*files)
        index.metadata.update({"repo_id": repo_id, "revision": revision})
        return index

    # -- building ----------------------------------------------------------------------------------
    @classmethod
    def build(
        cls, taxa: Sequence[Taxon], model: Any, processor: Any, text_type: str = "taxonomic+common",
        templates: Sequence[str | Callable[[str], str]] = OPENAI_TEMPLATES, batch_size: int = 256, progress: bool = True,
    ) -> TreeOfLifeIndex:
        """Embed every taxon's `text_type` text, averaged over `templates` (BioCLIP's own recipe).

        Args:
            taxa: the taxa (e.g. from `taxonomy.read_taxa_table`).
            model, processor: a `BioCLIPModel` (on its device) and its `BioCLIPProcessor`.
            text_type: one of `TEXT_TYPES`.
            templates: prompt templates averaged per taxon; `(DEFAULT_TEMPLATE,)` is 80x faster.
            batch_size: texts per forward pass.
            progress: show a progress bar.

        Example:
            >>> index = TreeOfLifeIndex.build(read_taxa_table("taxa.csv"), model, processor)  # doctest: +SKIP
        """
        check_text_type(text_type)
        texts = [taxon.text(text_type) for taxon in taxa]
        embeddings = encode_prompts(model, processor, texts, templates, batch_size, progress, desc="building index")
        meta = {"model": getattr(getattr(model, "config", None), "_name_or_path", ""), "text_type": text_type,
                "templates": [t if isinstance(t, str) else repr(t) for t in templates]}  # fmt: skip
        return cls(list(taxa), embeddings, meta)


@torch.no_grad()
def encode_prompts(
    model: Any, processor: Any, names: Sequence[str], templates: Sequence[str | Callable[[str], str]] = (DEFAULT_TEMPLATE,),
    batch_size: int = 256, progress: bool = False, desc: str = "embedding text",
) -> torch.Tensor:
    """Template-averaged, L2-normalised text embeddings `[len(names), D]` (float32, CPU).

    Each name is put in every template, embedded, normalised, averaged and normalised again (CLIP's zero-shot
    recipe, also how BioCLIP's TreeOfLife embeddings were made).

    Example:
        >>> encode_prompts(model, processor, ["Corvus corax"], OPENAI_TEMPLATES)  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    if not templates:
        raise ValueError("at least one template is needed")
    names = list(names)
    device = next(model.parameters()).device
    per_batch = max(1, batch_size // len(templates))
    chunks: list[torch.Tensor] = []
    bar = tqdm(total=len(names), desc=desc, unit="name", disable=not progress)
    for start in range(0, len(names), per_batch):
        chunk = names[start : start + per_batch]
        texts = [apply_template(template, name) for name in chunk for template in templates]
        input_ids = processor.tokenize(texts)["input_ids"].to(device)
        features = model.encode_text(input_ids, normalize=True).float()
        features = features.reshape(len(chunk), len(templates), -1).mean(dim=1)
        chunks.append(torch.nn.functional.normalize(features, dim=-1).cpu())
        bar.update(len(chunk))
    bar.close()
    if not chunks:
        raise ValueError("no names to embed")
    return torch.cat(chunks)


def load_index(spec: str | os.PathLike) -> TreeOfLifeIndex:
    """An index from a local path (see `TreeOfLifeIndex.load`) or, when no such path exists, a Hub dataset id
    holding `embeddings/txt_emb_species.{npy,json}` (e.g. "imageomics/TreeOfLife-200M")."""
    path = Path(spec)
    if not path.exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", str(spec)):
        return TreeOfLifeIndex.from_hub(str(spec))
    return TreeOfLifeIndex.load(path)


def _names_lower(taxon: Taxon) -> tuple[str, ...]:
    """`taxon.name_at(rank).lower()` for every rank (unvalidated fast path: subsets scan every taxon)."""
    ranks = taxon.ranks()
    binomial = f"{taxon.genus} {taxon.species}".strip() if taxon.species else ""
    return tuple(name.lower() for name in ranks[:-1]) + (binomial.lower(),)


def _match_key(taxon: Taxon, ranks: tuple[str, ...]) -> tuple[str, ...]:
    names = _names_lower(taxon)
    return tuple(names[RANKS.index(rank)] for rank in ranks)


def _read_subset_table(table: str | os.PathLike) -> tuple[dict[tuple[str, ...], set[tuple[str, ...]]], list[str]]:
    """Rows of a subset table grouped by which rank columns they fill: {ranks: {values}}, plus bare names."""
    import pandas as pd

    table = Path(table)
    if not table.exists():
        raise FileNotFoundError(f"subset table not found: {table}")
    if table.suffix == ".parquet":
        frame = pd.read_parquet(table).astype(str)
    else:
        frame = pd.read_csv(table, sep="\t" if table.suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
    frame.columns = [str(column).strip().lower() for column in frame.columns]
    if "scientific_name" in frame.columns and "species" not in frame.columns:
        frame = frame.rename(columns={"scientific_name": "species"})
    rank_columns = [rank for rank in RANKS if rank in frame.columns]
    if not rank_columns:
        # Header-less list or a single "name" column: every cell is a clade name; the header may be a name too.
        header = [] if len(frame.columns) != 1 or frame.columns[0] in ("name", "names", "taxon", "label") else [frame.columns[0]]
        return {}, header + [str(v) for v in frame.iloc[:, 0].tolist()]
    patterns: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
    for row in frame[rank_columns].to_dict("records"):
        cells = {rank: str(row[rank]).strip() for rank in rank_columns if str(row[rank]).strip() not in ("", "nan")}
        if "species" in cells and " " not in cells["species"] and cells.get("genus"):
            cells["species"] = f"{cells['genus']} {cells['species']}"  # epithet column + genus column
        if cells:
            ranks = tuple(rank for rank in RANKS if rank in cells)
            patterns.setdefault(ranks, set()).add(tuple(cells[rank].lower() for rank in ranks))
    if not patterns:
        raise ValueError(f"subset table {table} has no non-empty rank values")
    return patterns, []
