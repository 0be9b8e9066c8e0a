"""Rank aggregation: our vectorized index_add path vs pybioclip's per-image Python grouping, same inputs.

Setup (defaults): a synthetic Tree of Life of 450,000 species (tests/support `realistic_taxa`: 5 kingdoms ... 9,600
families, ~95k genera, ~1% of species missing a rank), random unit 512-d text embeddings, 256 image features placed near random species, logit scale 100,
min_prob 1e-9 (pybioclip's default). Both paths get the same softmax probabilities `[256, 450000]`.

- ours: `TreeOfLifeIndex.top_clades` (precomputed species->clade ids, `index_add_`, `topk`); the one-time
  group-map construction per rank is reported separately.
- reference: a faithful re-implementation of pybioclip's `TreeOfLifeClassifier.format_grouped_probs`
  (loop over species above min_prob, build the classification dict, join names, `+=` tensor scores, heapq top-k).
  It costs about a second per image, so by default it runs on the first `--reference-images` images; the ratio
  compares time per image (both over their images) and the top-k names/scores are asserted equal on those images.

Run: python benchmarks/bench_rank_aggregation.py [--rank family] [--reference-images 16] [--device cpu]
Prints per-image times, the speed-up (target >= 20x at family rank) and the peak extra resident memory of each
path's first call (the shared inputs excluded).
"""

from __future__ import annotations

import argparse
import collections
import heapq
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from bioclip_hf.treeoflife.index import TreeOfLifeIndex
from bioclip_hf.treeoflife.taxonomy import RANKS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the synthetic Tree of Life: tests/support
from support.treeoflife import realistic_taxa  # noqa: E402

# ---- pybioclip's grouping, re-implemented faithfully (bioclip/predict.py, TreeOfLifeClassifier) ----------------


def _labels(rank_index: int) -> list[str]:
    names = []
    for i in range(rank_index + 1):
        if i == 6:
            names.append("species_epithet")
        names.append(RANKS[i])
    if rank_index == 6:
        names.append("common_name")
    return names


def create_classification_dict(names: list, rank_index: int) -> dict[str, str]:
    scientific_names, common_name = names
    result = {}
    for idx, label in enumerate(_labels(rank_index)):
        if label == "species":
            value = scientific_names[-2] + " " + scientific_names[-1]
        elif label == "common_name":
            value = common_name
        else:
            value = scientific_names[idx]
        result[label] = value
    return result


def format_grouped_probs(txt_names: list, image_key: str, probs: torch.Tensor, rank_index: int,
                         min_prob: float = 1e-9, k: int = 5) -> list[dict]:  # fmt: skip
    output = collections.defaultdict(float)
    name_to_class_dict = {}
    for i in torch.nonzero(probs > min_prob).squeeze():
        classification_dict = create_classification_dict(txt_names[i], rank_index)
        name = " ".join(classification_dict.values())
        output[name] += probs[i]
        name_to_class_dict[name] = classification_dict
    topk_names = heapq.nlargest(k, output, key=output.get)
    prediction_ary = []
    for name in topk_names:
        item = {"file_name": image_key}
        item.update(name_to_class_dict[name])
        item["score"] = output[name].item()
        prediction_ary.append(item)
    return prediction_ary


# ---- synthetic inputs ----------------------------------------------------------------------------------------------


def make_probs(embeddings: torch.Tensor, n_images: int, logit_scale: float, seed: int) -> torch.Tensor:
    """Images near a random species (signal 0.18-0.30 vs unit noise): top-1 probabilities from ~5% to ~99%."""
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, embeddings.shape[0], (n_images,), generator=generator)
    noise = torch.nn.functional.normalize(torch.randn(n_images, embeddings.shape[1], generator=generator), dim=-1)
    signal = 0.18 + 0.12 * torch.rand(n_images, 1, generator=generator)
    features = torch.nn.functional.normalize(signal * embeddings[targets] + noise, dim=-1)
    return (logit_scale * features @ embeddings.T).softmax(dim=-1)


class PeakRSS:
    """Peak resident (CPU) memory above the level at entry, sampled from /proc every 1 ms."""

    def __enter__(self) -> PeakRSS:
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    def _poll(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    @property
    def extra_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--taxa", type=int, default=450_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rank", default="family", choices=RANKS[:-1])
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--min-prob", type=float, default=1e-9)
    parser.add_argument("--reference-images", type=int, default=16, help="images run through the slow reference")
    parser.add_argument("--device", default="cpu", help="device for our path (the reference is CPU Python)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    taxa = realistic_taxa(args.taxa)
    txt_names = [taxon.to_tol_entry() for taxon in taxa]
    embeddings = torch.nn.functional.normalize(torch.randn(args.taxa, args.dim, generator=torch.Generator().manual_seed(1)), dim=-1)
    probs = make_probs(embeddings, args.images, 100.0, seed=2)
    index = TreeOfLifeIndex(taxa, embeddings)
    print(f"setup {time.perf_counter() - start:.1f}s: {args.taxa:,} taxa x {args.dim}-d, {args.images} images, "
          f"rank {args.rank}; species above min_prob per image: {(probs > args.min_prob).sum(-1).float().mean():,.0f}; "
          f"median top-1 prob {probs.max(-1).values.median():.2f}")  # fmt: skip

    start = time.perf_counter()
    groups = index.groups(args.rank)
    print(f"one-time species->{args.rank} map: {len(groups):,} clades in {time.perf_counter() - start:.2f}s")
    device_probs = probs.to(args.device)
    index.to(args.device)
    if device_probs.is_cuda:
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as ours_mem:  # first (cold) call: memory that was not resident before
        index.top_clades(device_probs, args.rank, args.k, args.min_prob)
    if device_probs.is_cuda:
        gpu_peak_mb = (torch.cuda.max_memory_allocated() - device_probs.numel() * 4) / 2**20
        print(f"ours: peak extra GPU memory {gpu_peak_mb:.1f} MiB")
    times = []
    for _ in range(args.repeats):
        if device_probs.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        ours = index.top_clades(device_probs, args.rank, args.k, args.min_prob)
        if device_probs.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    ours_time = min(times)

    rank_index = RANKS.index(args.rank)
    n_ref = min(args.reference_images, args.images)
    with PeakRSS() as ref_mem:
        t0 = time.perf_counter()
        reference = [format_grouped_probs(txt_names, str(i), probs[i], rank_index, args.min_prob, args.k) for i in range(n_ref)]
        ref_time = time.perf_counter() - t0

    for i, (got, want) in enumerate(zip(ours, reference)):
        want_names = [tuple(item[r] for r in RANKS[: rank_index + 1]) for item in want]
        assert [taxon.lineage(args.rank) for taxon, _ in got] == want_names, f"image {i}: top-{args.k} clades differ"
        np.testing.assert_allclose([s for _, s in got], [item["score"] for item in want], rtol=1e-4, atol=1e-7)
    ours_per_image, ref_per_image = ours_time / args.images, ref_time / n_ref
    print(f"ours      ({args.device}): {ours_time * 1e3:9.1f} ms for {args.images} images = {ours_per_image * 1e3:8.3f} ms/image, "
          f"peak extra memory {ours_mem.extra_mb:7.1f} MiB")  # fmt: skip
    print(f"reference (pybioclip loop): {ref_time * 1e3:9.1f} ms for {n_ref} images = {ref_per_image * 1e3:8.3f} ms/image, "
          f"peak extra memory {ref_mem.extra_mb:7.1f} MiB")  # fmt: skip
    print(f"results identical on {n_ref} images (top-{args.k} clades, scores rtol 1e-4)")
    print(f"speed-up at {args.rank} rank: {ref_per_image / ours_per_image:.1f}x (target >= 20x); "
          f"projected reference time for {args.images} images: {ref_per_image * args.images:.1f}s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
