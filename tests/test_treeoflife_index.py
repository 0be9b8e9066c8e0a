"""Tree-of-Life index: building, file formats (own + TreeOfLife-10M release + HF cache), subsets, rank aggregation."""

from __future__ import annotations

import collections
import re

import numpy as np
import pytest
import torch
from support.hub_cache import DEFAULT_COMMIT, commit_of
from support.treeoflife import index_for, random_index, random_taxa, write_index_release, write_tol_release

from bioclip_hf.hub.registry import RevisionNotCachedError, default_index_repo
from bioclip_hf.treeoflife.index import (
    TOL_EMBEDDINGS_FILE,
    TOL_NAMES_FILE,
    TreeOfLifeIndex,
    aggregate_probs,
    clade_label,
    encode_prompts,
    load_index,
)
from bioclip_hf.treeoflife.taxonomy import DEFAULT_TEMPLATE, OPENAI_TEMPLATES, RANKS, Taxon


def python_grouping(index: TreeOfLifeIndex, probs: torch.Tensor, rank: str, k: int, min_prob: float):
    """pybioclip's per-image loop: sum probabilities by lineage key, then heapq top-k."""
    results = []
    for row in probs:
        totals = collections.defaultdict(float)
        for i in torch.nonzero(row > min_prob).flatten().tolist():
            totals[index.taxa[i].lineage(rank)] += float(row[i])
        top = sorted(totals.items(), key=lambda item: -item[1])[:k]
        results.append(top)
    return results


@pytest.mark.float_sensitive
@pytest.mark.parametrize("rank", RANKS[:-1])
def test_aggregation_matches_python_grouping_at_every_rank(rank):
    index = random_index()
    probs = (torch.randn(5, len(index)) * 3).softmax(-1)
    ours = index.top_clades(probs, rank, k=4, min_prob=1e-3)
    reference = python_grouping(index, probs, rank, 4, 1e-3)
    # A clade's score is a float32 sum (ours) vs a float64 one (Python) of <= 60 probabilities of total <= 1: they
    # differ by at most (n - 1) x 2**-24 x total < 60 x 2**-24 = 3.6e-6, whatever the order or vector width.
    sum_bound = len(index) * 2**-24
    for got, want in zip(ours, reference):
        assert [taxon.lineage(rank) for taxon, _ in got] == [key for key, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=sum_bound)
    # Without a threshold every image's clade probabilities sum to one: the softmax's own normalisation and the two
    # float32 summations each add <= 60 x 2**-24.
    groups = index.groups(rank)
    sums = aggregate_probs(probs, groups.group_ids, len(groups)).sum(-1)
    assert sums == pytest.approx(torch.ones(5), abs=3 * sum_bound)


def test_empty_ranks_stay_separate_clades_with_clear_labels():
    taxa = [Taxon("A", "P", "C", "O", "F", "G", "x"), Taxon("A", "P", "C", "", "", "H", "y"),
            Taxon("A", "P", "C", "O", "F", "G", "z"), Taxon("A", "P2", "C", "O", "F", "G", "w")]  # fmt: skip
    index = TreeOfLifeIndex(taxa, torch.eye(4))
    groups = index.groups("family")
    assert groups.group_ids.tolist() == [0, 1, 0, 2]  # homonym "F" under another phylum is its own clade
    assert clade_label(groups.taxa[1], "family") == "C (family unknown)"
    assert clade_label(Taxon("A", genus="G"), "species") == "G (species unknown)"
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    (top,) = index.top_clades(probs, "family", k=10, min_prob=0)
    assert [(t.family, round(s, 6)) for t, s in top] == [("F", 0.4), ("F", 0.4), ("", 0.2)]


def test_species_rank_k_larger_than_index_and_min_prob():
    index = random_index(n=6)
    probs = torch.tensor([[0.5, 0.3, 0.1, 0.05, 0.05, 0.0]])
    (top,) = index.top_clades(probs, "species", k=100, min_prob=0.06)
    assert [s for _, s in top] == pytest.approx([0.5, 0.3, 0.1])
    assert top[0][0] == index.taxa[0]
    with pytest.raises(ValueError, match="k must be"):
        index.top_clades(probs, "species", k=0)
    with pytest.raises(ValueError, match="unknown rank"):
        index.top_clades(probs, "tribe")


@pytest.mark.float_sensitive
def test_subset_by_names_and_table_is_renormalised(tmp_path):
    index = random_index()
    features = torch.nn.functional.normalize(torch.randn(3, index.dim), dim=-1)
    kingdom = index.taxa[0].kingdom
    genus = index.taxa[-1].name_at("genus")
    sub = index.subset([kingdom.lower(), genus])
    expected = [i for i, t in enumerate(index.taxa) if t.kingdom == kingdom or t.genus == genus]
    assert sub.taxa == [index.taxa[i] for i in expected]
    full = index.probabilities(features, 10.0)[:, expected]
    # Two float32 routes to the same probabilities (<= 1): softmax over the subset vs softmax over all 60 then
    # renormalised; each sum of <= 60 terms, exp and division add a relative 2**-24 per term/op: < 200 x 2**-24.
    assert sub.probabilities(features, 10.0) == pytest.approx(full / full.sum(-1, keepdim=True), abs=200 * 2**-24)
    # Table rows constrain all their filled rank columns; genus + epithet columns form the binomial.
    target = next(t for t in index.taxa if t.species)
    (tmp_path / "s.csv").write_text(f"kingdom,genus,species\n{target.kingdom},{target.genus},{target.species}\n")
    assert index.subset(table=tmp_path / "s.csv").taxa == [t for t in index.taxa if t.name_at("species") == target.name_at("species")]
    (tmp_path / "names.csv").write_text(f"{kingdom}\n{genus}\n")  # header-less list of names
    assert index.subset(table=tmp_path / "names.csv").taxa == sub.taxa
    with pytest.raises(ValueError, match="no taxa in the index match"):
        index.subset(["Nonexistentia"])
    with pytest.raises(FileNotFoundError, match="subset table not found"):
        index.subset(table=tmp_path / "missing.csv")


def test_save_load_round_trip(tmp_path):
    index = random_index()
    index.metadata["text_type"] = "taxonomic"
    index.save(tmp_path / "idx")
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == ["embeddings.safetensors", "index.json", "taxa.parquet"]
    loaded = TreeOfLifeIndex.load(tmp_path / "idx")
    assert loaded.taxa == index.taxa and torch.equal(loaded.embeddings, index.embeddings)
    assert loaded.metadata["text_type"] == "taxonomic" and loaded.metadata["num_taxa"] == len(index)
    with pytest.raises(FileNotFoundError, match="index not found"):
        TreeOfLifeIndex.load(tmp_path / "nope")


def test_reads_released_tol_files(tmp_path):
    index = random_index()
    write_tol_release(tmp_path, index.taxa, index.embeddings, np.float16)
    for source in (tmp_path, tmp_path / TOL_EMBEDDINGS_FILE):
        loaded = TreeOfLifeIndex.load(source)
        assert loaded.taxa == index.taxa and loaded.embeddings.shape == (len(index), index.dim)
        assert loaded.embeddings.dtype == torch.float16  # memory-mapped as stored, widened block-wise to predict
        assert loaded.embeddings.float() == pytest.approx(index.embeddings, abs=1e-3)  # float16 of |x| <= 1: <= 2**-11
    np.save(tmp_path / TOL_EMBEDDINGS_FILE, np.zeros((index.dim, 3), np.float32))
    with pytest.raises(ValueError, match="expected \\[dim, 60\\]"):
        TreeOfLifeIndex.load(tmp_path)


def test_from_hub_reads_offline_cache(offline_hub_cache):
    index = random_index()
    write_index_release(offline_hub_cache, "imageomics/TreeOfLife-10M", index, dtype=np.float16)
    loaded = TreeOfLifeIndex.from_hub(default_index_repo("hf-hub:imageomics/bioclip"))
    assert loaded.taxa == index.taxa
    assert {key: loaded.metadata[key] for key in ("repo_id", "revision", "commit", "files")} == {
        "repo_id": "imageomics/TreeOfLife-10M", "revision": None, "commit": DEFAULT_COMMIT,
        "files": [TOL_EMBEDDINGS_FILE, TOL_NAMES_FILE]}  # fmt: skip
    by_hub_id = load_index("imageomics/TreeOfLife-10M")  # a Hub id where no such local path exists
    assert by_hub_id.taxa == index.taxa and by_hub_id.metadata["commit"] == DEFAULT_COMMIT
    with pytest.raises(Exception, match="(?i)offline|cannot find|local"):
        TreeOfLifeIndex.from_hub("imageomics/TreeOfLife-200M")
    with pytest.raises(ValueError, match="build-index"):
        default_index_repo("/some/local/model")


def provenance_of(index: TreeOfLifeIndex) -> dict:
    return {key: index.metadata[key] for key in ("repo_id", "revision", "commit", "files")}


def test_from_hub_picks_release_layout_files_and_records_commit(offline_hub_cache, tmp_path):
    """TreeOfLife-200M's layout: pybioclip's `txt_emb_species` beside model-named `txt_emb_<model>` files. By default
    `from_hub` reads `txt_emb_species`; named candidates are tried in order; the commit read is always recorded."""
    taxa = random_taxa(30)
    species, vith = index_for(16, taxa[:12]), index_for(16, taxa, seed=1)
    repo, commit = "imageomics/TreeOfLife-200M", commit_of("tol200m")
    write_index_release(offline_hub_cache, repo, {"txt_emb_species": species, "txt_emb_bioclip-2.5-vith14": vith},
                        commit=commit)  # fmt: skip
    index = TreeOfLifeIndex.from_hub(repo)
    assert index.taxa == species.taxa and torch.equal(index.embeddings, species.embeddings)  # float32 as stored
    assert provenance_of(index) == {"repo_id": repo, "revision": None, "commit": commit,
                                    "files": [TOL_EMBEDDINGS_FILE, TOL_NAMES_FILE]}  # fmt: skip
    # The first candidate present wins: stems, `.npy` paths in the repo and `IndexFiles` are all accepted.
    candidates = ["txt_emb_bioclip-2", "embeddings/txt_emb_bioclip-2.5-vith14.npy"]
    named = TreeOfLifeIndex.from_hub(repo, revision="main", files=candidates)
    assert named.taxa == vith.taxa and torch.equal(named.embeddings, vith.embeddings)
    assert provenance_of(named) == {"repo_id": repo, "revision": "main", "commit": commit, "files": [
        "embeddings/txt_emb_bioclip-2.5-vith14.npy", "embeddings/txt_emb_bioclip-2.5-vith14.json"]}  # fmt: skip
    # The earlier spelling, one pair by name (positional as before), reads the same files.
    pair = ("embeddings/txt_emb_bioclip-2.5-vith14.npy", "embeddings/txt_emb_bioclip-2.5-vith14.json")
    assert provenance_of(TreeOfLifeIndex.from_hub(repo, "main", *pair)) == provenance_of(named)
    with pytest.raises(ValueError, match="not both"):
        TreeOfLifeIndex.from_hub(repo, embeddings_file=pair[0], files=candidates)
    # A registry model's index goes the same way, with the registry's candidates.
    registry = TreeOfLifeIndex.from_registry("hf-hub:imageomics/bioclip-2.5-vith14")
    assert provenance_of(registry) == {**provenance_of(named), "revision": None}
    # An older commit no branch points to, asked for by its hash, is read and recorded as such.
    older = commit_of("tol200m-older")
    write_index_release(offline_hub_cache, repo, {"txt_emb_species": vith}, commit=older, ref=None)
    assert provenance_of(TreeOfLifeIndex.from_hub(repo, revision=older))["commit"] == older
    with pytest.raises(FileNotFoundError, match=f"{repo}@{older} has none of embeddings/txt_emb_bioclip-2.5-vith14.npy"):
        TreeOfLifeIndex.from_hub(repo, revision=older, files=["txt_emb_bioclip-2.5-vith14"])
    with pytest.raises(RevisionNotCachedError, match=f"{repo} at commit {'2' * 40} is not in the offline"):
        TreeOfLifeIndex.from_hub(repo, revision="2" * 40)
    with pytest.raises(ValueError, match="neither an .npy path in the repo nor a stem"):
        TreeOfLifeIndex.from_hub(repo, files=["embeddings/txt_emb_species.json"])


def test_from_hub_with_its_own_cache_dir(offline_hub_cache, tmp_path):
    index = random_index(n=8)
    other = tmp_path / "other-cache"
    write_index_release(other, "imageomics/TreeOfLife-10M", index, dtype=np.float16)  # not in the default cache
    loaded = TreeOfLifeIndex.from_hub("imageomics/TreeOfLife-10M", cache_dir=str(other))
    assert loaded.taxa == index.taxa and loaded.metadata["commit"] == DEFAULT_COMMIT
    where = re.escape(f"({other})")
    with pytest.raises(RevisionNotCachedError, match=f"cache {where}.*cached commits: {DEFAULT_COMMIT}"):
        TreeOfLifeIndex.from_hub("imageomics/TreeOfLife-10M", revision="3" * 40, cache_dir=str(other))


@pytest.mark.float_sensitive
def test_build_with_tiny_model_is_template_averaged(tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    taxa = random_taxa(5)
    index = TreeOfLifeIndex.build(taxa, model, processor, text_type="scientific", templates=OPENAI_TEMPLATES[:3],
                                  batch_size=4, progress=False)  # fmt: skip
    assert index.embeddings.shape == (5, model.config.projection_dim) and index.metadata["recipe"] == "scientific"
    texts = [template.format(taxa[2].text("scientific")) for template in OPENAI_TEMPLATES[:3]]
    with torch.no_grad():
        manual = model.encode_text(processor.tokenize(texts)["input_ids"], normalize=True).mean(0)
    # Unit-norm vectors from batches of 4 vs 3 texts: rounding only (a few float32 ulps, measured <= 6e-7).
    assert index.embeddings[2] == pytest.approx(torch.nn.functional.normalize(manual, dim=0), abs=1e-5)
    single = encode_prompts(model, processor, [taxa[0].text("taxonomic")], (DEFAULT_TEMPLATE,))
    assert single.norm(dim=-1) == pytest.approx(torch.ones(1))
    with pytest.raises(ValueError, match="dim 3 but the index has dim"):
        index.probabilities(torch.randn(2, 3), 1.0)
