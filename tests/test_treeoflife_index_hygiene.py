"""Tree-of-Life index hygiene and loading: defective columns and duplicates excluded (and listed), memory-mapped
release files (float32 and float16), the derived-map cache (reuse, invalidation, fallback), columnar name matching
with exactly `Taxon`'s semantics."""

from __future__ import annotations

import json
import logging
import random

import numpy as np
import pytest
import torch
from support.treeoflife import random_index, random_taxa

from bioclip_hf.treeoflife import index as tol_index
from bioclip_hf.treeoflife.cache import cache_locations
from bioclip_hf.treeoflife.index import TreeOfLifeIndex
from bioclip_hf.treeoflife.taxa import DUPLICATE, NON_FINITE, ZERO, TaxaColumns
from bioclip_hf.treeoflife.taxonomy import RANKS, Taxon


def write_release(folder, matrix_dn: np.ndarray, taxa) -> tuple:
    folder.mkdir(parents=True, exist_ok=True)
    npy, names = folder / "txt_emb_species.npy", folder / "txt_emb_species.json"
    np.save(npy, np.ascontiguousarray(matrix_dn))  # C order, as the releases
    names.write_text(json.dumps([t.to_tol_entry() for t in taxa]), encoding="utf-8")
    return npy, names


def defective_release(tmp_path):
    """60 taxa; column 3 all-zero, 7 NaN, 8 +inf, the last 5 all-zero (the release's unembedded remainder batch);
    taxon 20 repeats taxon 10 (kept: first usable copy is 10); taxon 31 repeats zero column 3 (kept: 3 is unusable)."""
    index = random_index(60)
    taxa = list(index.taxa)
    taxa[20], taxa[31] = taxa[10], taxa[3]
    matrix = index.embeddings.numpy().T.copy()
    matrix[:, 3] = 0.0
    matrix[2, 7] = np.nan
    matrix[5, 8] = np.inf
    matrix[:, -5:] = 0.0
    return write_release(tmp_path / "release", matrix.astype(np.float32), taxa), taxa, matrix


@pytest.mark.float_sensitive
def test_defects_are_excluded_counted_once_and_listed(tmp_path, caplog, capsys):
    (npy, names), taxa, matrix = defective_release(tmp_path)
    with caplog.at_level(logging.WARNING, logger="bioclip_hf.treeoflife.index"):
        index = TreeOfLifeIndex.from_tol_files(npy, names)
        TreeOfLifeIndex.from_tol_files(npy, names)  # second load: from the cache, no second warning
    warnings = [r.getMessage() for r in caplog.records if "excluded from prediction" in r.getMessage()]
    assert len(warnings) == 1 and "9 of 60 taxa excluded" in warnings[0]
    assert "6 all-zero embedding, 2 non-finite embedding, 1 duplicate entry" in warnings[0]  # 3 + last 5
    expected = {3: ZERO, 7: NON_FINITE, 8: NON_FINITE, 20: DUPLICATE, **{i: ZERO for i in range(55, 60)}}
    assert {int(i): int(index.problems[i]) for i in np.flatnonzero(index.problems)} == expected
    assert index.problems[31] == 0 and index.problems[10] == 0  # the usable copies stay

    # Excluded taxa take no probability mass: predictions equal an index of the usable columns alone.
    features = torch.nn.functional.normalize(torch.randn(4, index.dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    probs = index.probabilities(features, 30.0)
    usable = np.flatnonzero(index.problems == 0)
    clean = TreeOfLifeIndex([taxa[i] for i in usable], torch.from_numpy(matrix[:, usable].T.copy()))
    assert torch.isfinite(probs).all() and (probs[:, index.problems != 0] == 0).all()
    # Softmax normalisations over 60 (9 of them 0) vs 51 terms, summed in other orders: each probability (<= 1) is off
    # by at most 60 x 2**-24 = 3.6e-6 relative, whatever the kernels; a leaked excluded entry shifts it by far more.
    assert probs[:, usable] == pytest.approx(clean.probabilities(features, 30.0), abs=60 * 2**-24)
    for rank in ("species", "family"):
        for top_full, top_clean in zip(index.predict(features, 30.0, rank, k=100, min_prob=0),
                                       clean.predict(features, 30.0, rank, k=100, min_prob=0)):  # fmt: skip
            assert [t for t, _ in top_full] == [t for t, _ in top_clean]

    from bioclip_hf.cli import main

    assert main(["list-taxa", "--index", str(npy), "--problems", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    listed = json.loads(out)
    assert [(r["position"], r["problem"]) for r in listed][:3] == [(3, "all-zero embedding"), (7, "non-finite embedding"),
                                                                   (8, "non-finite embedding")]  # fmt: skip
    assert listed[3]["position"] == 20 and listed[3]["problem"] == "duplicate entry" and listed[3]["genus"] == taxa[10].genus
    assert "9 of 60 entries excluded" in err
    assert main(["list-taxa", "--index", str(npy), "--format", "json"]) == 0
    assert sum(r["num_taxa"] for r in json.loads(capsys.readouterr().out)) == 51  # only predictable taxa listed


def test_all_defective_or_subset_of_defects_is_refused(tmp_path):
    with pytest.raises(ValueError, match="every taxon of the index is excluded"):
        TreeOfLifeIndex(random_taxa(3), torch.zeros(3, 4))
    (npy, names), taxa, _ = defective_release(tmp_path)
    index = TreeOfLifeIndex.from_tol_files(npy, names)
    with pytest.raises(ValueError, match="every taxon of the index is excluded"):
        index.select(index.problems == ZERO)
    # A subset that keeps a repeat but not its first copy keeps the repeat (it is the subset's first copy).
    keep = np.zeros(len(index), bool)
    keep[[20, 21]] = True
    assert index.select(keep).problems.tolist() == [0, 0]


@pytest.mark.float_sensitive
def test_release_matrix_is_memory_mapped_and_float16_is_accepted(tmp_path, monkeypatch):
    index = random_index(50, dim=12)
    npy32, names32 = write_release(tmp_path / "f32", index.embeddings.numpy().T.astype(np.float32), index.taxa)
    loaded = TreeOfLifeIndex.from_tol_files(npy32, names32)
    # Used as stored: the [N, D] embeddings are the transposed view of the file's [D, N] buffer (no copy).
    assert loaded.embeddings.T.is_contiguous() and not loaded.embeddings.is_contiguous()
    assert torch.equal(loaded.embeddings, index.embeddings)
    npy16, names16 = write_release(tmp_path / "f16", index.embeddings.numpy().T.astype(np.float16), index.taxa)
    half = TreeOfLifeIndex.from_tol_files(npy16, names16)
    assert half.embeddings.dtype == torch.float16
    widened = TreeOfLifeIndex(index.taxa, half.embeddings.float())
    features = torch.nn.functional.normalize(torch.randn(3, 12, generator=torch.Generator().manual_seed(1)), dim=-1)
    monkeypatch.setattr(tol_index, "_CHUNK", 7)  # several float16 -> float32 blocks
    # Same float32 values, only another GEMM blocking: logits (|x| <= 100) agree to 100 * 12 * 2^-24 ~ 1e-4.
    assert half.logits(features, 100.0) == pytest.approx(widened.logits(features, 100.0), abs=1e-4)
    np.save(tmp_path / "ints.npy", np.zeros((3, 4), np.int64))
    (tmp_path / "ints.json").write_text("[]")
    with pytest.raises(ValueError, match="expected float32 or float16"):
        TreeOfLifeIndex.from_tol_files(tmp_path / "ints.npy", tmp_path / "ints.json")


def test_cache_reused_invalidated_and_falls_back(tmp_path, monkeypatch):
    from bioclip_hf.treeoflife import files as tol_files

    index = random_index(40)
    npy, names = write_release(tmp_path / "idx", index.embeddings.numpy().T.astype(np.float32), index.taxa)
    TreeOfLifeIndex.from_tol_files(npy, names)
    cache = cache_locations(names)[0]
    assert cache.name == "txt_emb_species.bioclip-hf-cache.arrow" and cache.parent == names.parent
    with monkeypatch.context() as patch:  # a warm load never parses the JSON
        patch.setattr(tol_files, "read_entries", lambda path: pytest.fail("JSON parsed despite a valid cache"))
        assert TreeOfLifeIndex.from_tol_files(npy, names).taxa == index.taxa
    renamed = list(index.taxa)
    renamed[5] = Taxon(*renamed[5].ranks()[:-1], "renamed", "new common name")
    names.write_text(json.dumps([t.to_tol_entry() for t in renamed]), encoding="utf-8")  # a new revision of the file
    assert TreeOfLifeIndex.from_tol_files(npy, names).taxa[5] == renamed[5]
    # A read-only index folder (here: the cache path is taken by a folder): the user cache is used instead.
    cache.unlink()
    cache.mkdir()
    monkeypatch.setenv("BIOCLIP_HF_CACHE", str(tmp_path / "user-cache"))
    TreeOfLifeIndex.from_tol_files(npy, names)
    assert list((tmp_path / "user-cache" / "tol-index").glob("*.arrow"))
    assert TreeOfLifeIndex.from_tol_files(npy, names, cache=False).taxa[5] == renamed[5]


def test_columnar_matching_has_taxon_semantics():
    rng = random.Random(3)
    taxa = random_taxa(120, seed=3)
    # Mixed case, genus-less epithets and epithets with a space (subspecies) as in real releases.
    taxa += [Taxon("Animalia", "", "Aves", "", "", "", "corax", "Raven"), Taxon("Animalia", genus="Canis",
             species="lupus familiaris"), Taxon("ANIMALIA", "Chordata", genus="corvus", species="Corax")]  # fmt: skip
    index = TreeOfLifeIndex(taxa, torch.nn.functional.normalize(torch.randn(len(taxa), 8), dim=-1))
    probes = ["k0", "K1_p2", "corvus corax", "canis lupus familiaris", "corax", "animalia", "nope"]
    probes += [rng.choice(taxa).name_at(rng.choice(RANKS)) for _ in range(30)]
    for rank in RANKS:
        wanted = {p.lower() for p in probes if p}
        assert index.name_mask(rank, wanted).tolist() == [t.name_at(rank).lower() in wanted for t in taxa], rank
    keep, found = index.columns.find_names({"corvus corax", "corax", "nope", "canis lupus familiaris"})
    expected = [any(t.name_at(r).lower() in {"corvus corax", "corax", "canis lupus familiaris"} for r in RANKS) for t in taxa]
    assert keep.tolist() == expected and found == {"corvus corax", "corax", "canis lupus familiaris"}
    with pytest.raises(ValueError, match="bad taxon entry 1"):
        TaxaColumns.from_entries([[["A"] * 7, ""], [["A"] * 6, ""]])
    assert TaxaColumns.from_entries([[[" Aves ", None, "nan", "", "", "", ""], "NULL"]]).taxon(0) == Taxon("Aves")
