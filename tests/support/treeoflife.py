"""The synthetic Tree of Life: random taxa of any size, random unit embeddings, and index releases in the
TreeOfLife-10M layout (`embeddings/<stem>.npy` `[D, N]` + `<stem>.json` `[[kingdom ... epithet], common]`), as
files or as a dataset repo in the fake HF cache. Tests and benchmarks draw every index from here."""

from __future__ import annotations

import json
import math
import random
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .hub_cache import DEFAULT_COMMIT, write_hub_cache

SMALL_TREE = (2, 3, 3, 3, 3, 3, 3)  # children per node, kingdoms first: at most 1,458 species


def tree_shape(n: int) -> tuple[int, ...]:
    """Branching of a realistically shaped tree for `n` species: 5 kingdoms, 60 phyla, 240 classes, 1,200 orders,
    9,600 families, about n / 5 genera with about 5 species each (the proportions of TreeOfLife-10M's index); the
    last two levels leave room for 4 x n distinct species so that drawing them needs few retries."""
    genera = max(1, math.ceil(n / 5 / 9600))
    return (5, 12, 4, 5, 8, genera, max(1, math.ceil(4 * n / (9600 * genera))))


def random_taxa(n: int = 60, seed: int = 0, empty_fraction: float = 0.15, branching: Sequence[int] = SMALL_TREE):
    """`n` distinct random taxa sorted by lineage: names unique per parent (each extends its parent's name, e.g.
    `K0_p1_c2`), a rank other than kingdom and genus left empty with probability `empty_fraction` (epithets too), and
    about 30% without a common name. `branching`: children per node from the kingdoms down (`tree_shape(n)` for
    large, realistically shaped trees)."""
    from bioclip_hf.treeoflife.taxonomy import Taxon

    if math.prod(branching) < n:
        raise ValueError(f"a tree of shape {tuple(branching)} has fewer than {n} species")
    rng = random.Random(seed)
    taxa = set()
    while len(taxa) < n:
        path = [f"K{rng.randrange(branching[0])}"]
        for depth in range(1, 7):
            path.append(f"{path[-1]}_{'pcofgs'[depth - 1]}{rng.randrange(branching[depth])}")
        values = [v if depth in (0, 5) or rng.random() > empty_fraction else "" for depth, v in enumerate(path)]
        values[6] = values[6].rsplit("_", 1)[1] if values[6] else ""
        common = f"common {len(taxa)}" if rng.random() > 0.3 else ""
        taxa.add(Taxon(*values, common))
    return sorted(taxa, key=lambda t: t.ranks())


def realistic_taxa(n: int, seed: int = 0):
    """`random_taxa` in the shape of a released index (`tree_shape(n)`), each rank below kingdom but genus empty
    for 0.25% of the taxa (about 1% of them lack one rank, as a few families placed in no order do)."""
    return random_taxa(n, seed, empty_fraction=0.0025, branching=tree_shape(n))


def random_embeddings(n: int, dim: int, seed: int = 0):
    """`[n, dim]` float32 unit rows (torch), seeded."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, dim, generator=generator), dim=-1)


def index_for(dim: int, taxa, seed: int = 0):
    """A `TreeOfLifeIndex` of `taxa` with random unit `dim`-sized embeddings (a model's text tower is not needed to
    test how files are found and read; the tiny models embed into 16 dimensions)."""
    from bioclip_hf.treeoflife.index import TreeOfLifeIndex

    return TreeOfLifeIndex(list(taxa), random_embeddings(len(taxa), dim, seed))


def random_index(n: int = 60, dim: int = 8, seed: int = 0):
    """`index_for` on `random_taxa(n, seed)`."""
    return index_for(dim, random_taxa(n, seed), seed)


def write_tol_release(folder: Path, taxa, embeddings, dtype=np.float32, stem: str = "txt_emb_species",
                      seed: int = 0) -> Path:  # fmt: skip
    """`folder/embeddings/<stem>.npy` (`[D, N]`, `dtype`) + `<stem>.json` as the TreeOfLife releases store them;
    returns the `.npy` path.

    `embeddings`: `[N, D]` rows (tensor or array), or an int D: random unit columns (seeded) written block by block
    into a memory map, so that releases of any size are never whole in memory."""
    out = Path(folder) / "embeddings"
    out.mkdir(parents=True, exist_ok=True)
    npy = out / f"{stem}.npy"
    if isinstance(embeddings, int):
        matrix = np.lib.format.open_memmap(npy, mode="w+", dtype=dtype, shape=(embeddings, len(taxa)))
        rng = np.random.default_rng(seed)
        for start in range(0, len(taxa), 65536):
            block = rng.standard_normal((embeddings, min(65536, len(taxa) - start)), dtype=np.float32)
            matrix[:, start : start + block.shape[1]] = block / np.linalg.norm(block, axis=0, keepdims=True)
        matrix.flush()
        del matrix
    else:
        np.save(npy, np.asarray(embeddings).T.astype(dtype))
    (out / f"{stem}.json").write_text(json.dumps([t.to_tol_entry() for t in taxa]), encoding="utf-8")
    return npy


def write_index_release(cache: Path, repo_id: str, index, work: Path | None = None, stems=("txt_emb_species",),
                        commit: str = DEFAULT_COMMIT, ref: str | None = "main", dtype=np.float32) -> Path:  # fmt: skip
    """A dataset repo `repo_id` in the HF cache `cache` at `commit` holding `embeddings/<stem>.{npy,json}` of `index`
    for each of `stems`, or of each `{stem: index}` when `index` is a mapping; returns the snapshot.

    An index is a `TreeOfLifeIndex` or a `(taxa, embeddings)` pair (see `write_tol_release`: an int D for random
    embeddings never whole in memory). The files are written under `work` (kept) or in a scratch folder beside the
    cache (moved into it)."""
    indexes = dict(index) if isinstance(index, Mapping) else dict.fromkeys(stems, index)
    Path(cache).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=Path(cache).parent) as scratch:
        folder = Path(work or scratch) / f"{repo_id.replace('/', '--')}-{commit[:8]}"
        files = {}
        for stem, one in indexes.items():
            taxa, embeddings = one if isinstance(one, tuple) else (one.taxa, one.embeddings)
            npy = write_tol_release(folder, taxa, embeddings, dtype, stem)
            files.update({f"embeddings/{stem}.{ext}": npy.with_suffix(f".{ext}") for ext in ("npy", "json")})
        return write_hub_cache(cache, repo_id, files, repo_type="dataset", commit=commit, ref=ref, move=work is None)
