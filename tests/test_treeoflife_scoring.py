"""Scoring an index where it lies: chunked float32 scoring of the memory-mapped release, the cached float16 copy
(same labels and order, scores within float16's rounding), the cache's keying, and pages released while scoring."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support.paths import REPO_ROOT
from support.tolerances import FEATURE_ATOL, half_index_logit_atol, half_index_score_rtol, score_rtol
from support.treeoflife import random_embeddings, random_taxa, write_tol_release

from bioclip_hf.treeoflife import scoring
from bioclip_hf.treeoflife.half_cache import HALF_SUFFIX
from bioclip_hf.treeoflife.index import TreeOfLifeIndex

SCALE = 100.0
DIM = 512
WEIGHTS = (1.0, 0.8, 0.6, 0.45, 0.35)  # each image mixes 5 taxa: a clear top 5 (logit gaps of about 5)


@pytest.fixture
def release(tmp_path, monkeypatch):
    """(npy path of a 600-taxa release, its `[N, D]` embeddings); chunks of 128 taxa (the last one partial)."""
    monkeypatch.setattr(scoring, "CHUNK", 128)
    taxa = random_taxa(600, seed=3)
    embeddings = random_embeddings(len(taxa), DIM, seed=3)
    return write_tol_release(tmp_path / "release", taxa, embeddings), embeddings


def mixed_features(embeddings: torch.Tensor, count: int = 6, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(embeddings), generator=generator)[: count * len(WEIGHTS)].view(count, len(WEIGHTS))
    mixed = (torch.tensor(WEIGHTS)[None, :, None] * embeddings[rows]).sum(dim=1)
    return torch.nn.functional.normalize(mixed, dim=-1)


def assert_same_predictions(expected, actual, rtol: float) -> None:
    assert len(actual) == len(expected)
    for want, got in zip(expected, actual):
        assert [taxon for taxon, _ in got] == [taxon for taxon, _ in want]
        for (_, p_want), (_, p_got) in zip(want, got):
            assert p_got == pytest.approx(p_want, rel=rtol)


def well_separated(predictions, rtol: float) -> bool:
    """Consecutive probabilities differ by more than both sides' tolerance: their order cannot flip."""
    return all(a > b * (1 + rtol) ** 2 for row in predictions for (_, a), (_, b) in zip(row, row[1:]))


def test_mapped_release_is_scored_in_chunks_as_in_memory(release):
    npy, embeddings = release
    mapped = TreeOfLifeIndex.load(npy)
    assert mapped._buffer is not None and mapped.embeddings.dtype == torch.float32  # scored from the mapped file
    in_memory = TreeOfLifeIndex(mapped.taxa, embeddings.clone())
    features = mixed_features(embeddings)
    torch.testing.assert_close(mapped.logits(features, SCALE), in_memory.logits(features, SCALE),
                               rtol=0, atol=SCALE * FEATURE_ATOL)  # fmt: skip
    for rank in ("species", "family"):
        assert_same_predictions(in_memory.predict(features, SCALE, rank, 5), mapped.predict(features, SCALE, rank, 5),
                                score_rtol(SCALE))  # fmt: skip


def test_float16_copy_keeps_labels_and_order_within_float16_rounding(release):
    npy, embeddings = release
    exact = TreeOfLifeIndex.load(npy)
    half = TreeOfLifeIndex.load(npy).set_precision("float16")
    assert half.precision == "float16" and half._half.dtype == torch.float16 and half._half_buffer is not None
    assert (npy.parent / f"{npy.stem}{HALF_SUFFIX}").is_file()  # cached beside the release
    features = mixed_features(embeddings)
    exact_logits, half_logits = exact.logits(features, SCALE), half.logits(features, SCALE)
    assert not torch.equal(exact_logits, half_logits)  # the copy is really float16
    torch.testing.assert_close(half_logits, exact_logits, rtol=0, atol=half_index_logit_atol(SCALE))
    rtol = half_index_score_rtol(SCALE)
    for rank, k in (("species", 5), ("genus", 3), ("family", 3)):
        expected = exact.predict(features, SCALE, rank, k)
        assert well_separated(expected, rtol), rank  # the data leave no room for a legitimate swap
        assert_same_predictions(expected, half.predict(features, SCALE, rank, k), rtol)
    back = half.set_precision("float32")
    torch.testing.assert_close(back.logits(features, SCALE), exact_logits, rtol=0, atol=0)


def test_float16_precision_carries_to_subsets_and_in_memory_indexes(release):
    npy, embeddings = release
    half = TreeOfLifeIndex.load(npy).set_precision("float16")
    kingdom = half.taxa[0].kingdom
    subset = half.subset([kingdom])
    assert subset.precision == "float16" and subset._half is not None and subset._half_buffer is None
    exact = TreeOfLifeIndex.load(npy).subset([kingdom])
    features = mixed_features(embeddings)
    torch.testing.assert_close(subset.logits(features, SCALE), exact.logits(features, SCALE), rtol=0,
                               atol=half_index_logit_atol(SCALE))  # fmt: skip
    with pytest.raises(ValueError, match="unknown index precision 'int8'"):
        half.set_precision("int8")


def test_float16_cache_is_reused_and_rewritten_when_the_release_changes(release):
    npy, _ = release
    TreeOfLifeIndex.load(npy).set_precision("float16")
    cached = npy.parent / f"{npy.stem}{HALF_SUFFIX}"
    first = cached.stat()
    TreeOfLifeIndex.load(npy).set_precision("float16")
    assert cached.stat().st_mtime_ns == first.st_mtime_ns and cached.stat().st_ino == first.st_ino  # a hit
    taxa = TreeOfLifeIndex.load(npy).taxa
    other = random_embeddings(len(taxa), DIM, seed=9)
    write_tol_release(npy.parent.parent, list(taxa), other)  # a new revision of the same files
    index = TreeOfLifeIndex.load(npy).set_precision("float16")
    assert cached.stat().st_ino != first.st_ino  # rewritten (atomically: a new file renamed over the old one)
    features = mixed_features(other)
    torch.testing.assert_close(index.logits(features, SCALE), SCALE * features @ other.T, rtol=0,
                               atol=half_index_logit_atol(SCALE))  # fmt: skip
    assert not [p.name for p in npy.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_float16_copy_refuses_values_beyond_its_range(tmp_path):
    taxa = random_taxa(20, seed=1)
    big = random_embeddings(20, 8, seed=1) * 1e6  # not unit vectors: float16 would overflow
    npy = write_tol_release(tmp_path, taxa, big)
    index = TreeOfLifeIndex.load(npy).set_precision("float16")
    assert index.precision == "float32" and index._half is None
    assert not (npy.parent / f"{npy.stem}{HALF_SUFFIX}").exists()


RSS_SCRIPT = """
import json, sys
import numpy as np, torch
from bioclip_hf.treeoflife import scoring
from bioclip_hf.treeoflife.index import TreeOfLifeIndex

npy, precision, release = sys.argv[1], sys.argv[2], sys.argv[3] == "release"
scoring.CHUNK = 4096
drop = scoring.release_pages
if not release:
    scoring.release_pages = lambda buffer: None

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

index = TreeOfLifeIndex.load(npy).set_precision(precision)
features = torch.nn.functional.normalize(torch.randn(4, index.dim, generator=torch.Generator().manual_seed(0)), dim=-1)
for rank in ("species", "family"):  # allocator and clade-map warm-up
    index.predict(features, 100.0, rank, 5)
drop(index._half_buffer if precision == "float16" else index._buffer)  # start from no resident matrix page
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark to the current RSS
for rank in ("species", "family", "species"):
    index.predict(features, 100.0, rank, 5)
print(json.dumps({"peak": status("VmHWM") - before, "after": status("VmRSS") - before}))
"""


@pytest.fixture(scope="module")
def large_release(tmp_path_factory):
    """A 100 MB float32 release (131,072 taxa x 192) with trivially distinct names (written without Taxon objects)."""
    folder = tmp_path_factory.mktemp("large") / "embeddings"
    folder.mkdir()
    n, dim = 131_072, 192
    npy = folder / "txt_emb_species.npy"
    matrix = np.lib.format.open_memmap(npy, mode="w+", dtype=np.float32, shape=(dim, n))
    rng = np.random.default_rng(0)
    for start in range(0, n, 32768):
        block = rng.standard_normal((dim, 32768), dtype=np.float32)
        matrix[:, start : start + 32768] = block / np.linalg.norm(block, axis=0, keepdims=True)
    matrix.flush()
    del matrix
    entries = [[["K", f"P{i % 7}", f"C{i % 31}", f"O{i % 97}", f"F{i % 1009}", f"G{i // 4}", f"s{i}"], ""] for i in range(n)]
    npy.with_suffix(".json").write_text(json.dumps(entries))
    return npy


def measure_rss(npy: Path, precision: str, release: bool) -> dict[str, int]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(npy), precision, "release" if release else "keep"],
                          capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_scoring_releases_the_mapped_pages(large_release, precision):
    scored_bytes = large_release.stat().st_size // (2 if precision == "float16" else 1)
    kept = measure_rss(large_release, precision, release=False)
    # The measurement sees the pages: without releasing them, scoring keeps (nearly) the whole matrix resident.
    assert kept["after"] > 0.9 * scored_bytes, kept
    released = measure_rss(large_release, precision, release=True)
    assert released["peak"] < scored_bytes / 4, released  # a few chunks at most, never the matrix
    assert released["after"] < scored_bytes / 8, released
