"""End-to-end `predict` wall time: `bioclip-hf predict` vs pybioclip's own CLI (`bioclip predict`), same inputs.

Both tools run as fresh processes, offline (`HF_HUB_OFFLINE=1`) from one HF cache (`HF_HOME`) holding a random
ViT-B-16 saved with open_clip's writer as `imageomics/bioclip` and a random TreeOfLife-10M-layout index of
`--taxa` species (see bench_fixtures.py), on the same birds525 photos, with each tool's default settings
(pybioclip: `--model hf-hub:imageomics/bioclip`, its default batch of 10; ours: defaults, CSV output). Runs are
interleaved (ours, peer, peer, ours, ...) and the median of `--repeats` is taken, since the machine may be shared.

Printed per rank: median wall and CPU seconds of each tool (CPU time, children included, is far less disturbed by
other jobs on a shared machine), the ratios pybioclip / bioclip-hf (targets: >= 1.5x at species, >= 3x at family
with 450k taxa), peak RSS, and how often the two tools agree on the top-1 and top-5 taxa (random
weights, different resizing: a sanity check, not an accuracy). `--opt-in bfloat16` adds our `--dtype bfloat16`
run with its top-5 agreement against our float32 run beside its speed.

Run: python benchmarks/bench_predict_vs_pybioclip.py [--images 100] [--family-images 40] [--taxa 450000]
     [--repeats 3] [--opt-in bfloat16] [--cache /tmp/bioclip-bench-hf]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
from pathlib import Path

from bench_fixtures import bird_photos, offline_env, run_measured, write_index, write_model

RANK_COLUMNS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")


def read_top(path: Path, rank: str, file_column: str) -> dict[str, list[tuple]]:
    """{photo: [clade key of prediction 1..k]} from either tool's CSV (keys: the lineage down to `rank`)."""
    depth = RANK_COLUMNS.index(rank) + 1
    top: dict[str, list[tuple]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            top.setdefault(row[file_column], []).append(tuple(row[c] for c in RANK_COLUMNS[:depth]))
    return top


def agreement(a: dict[str, list[tuple]], b: dict[str, list[tuple]], k: int = 5) -> tuple[float, float]:
    """(share of photos with the same top-1, mean overlap of the top-k sets) over the photos of `a`."""
    same_top1 = sum(bool(a[f] and b.get(f)) and a[f][0] == b[f][0] for f in a) / len(a)
    overlap = statistics.mean(len(set(a[f][:k]) & set(b.get(f, [])[:k])) / max(1, len(a[f][:k])) for f in a)
    return same_top1, overlap


def commands(photos: list[str], rank: str, out: Path, dtype: str = "float32") -> dict[str, list[str]]:
    return {
        "bioclip-hf": [sys.executable, "-m", "bioclip_hf.cli", "predict", *photos, "--rank", rank, "--k", "5",
                       "--model", "imageomics/bioclip",
                       "--no-progress", "--output", str(out / f"ours-{rank}-{dtype}.csv"), "--dtype", dtype],
        "pybioclip": [sys.executable, "-m", "bioclip", "predict", *photos, "--rank", rank, "--k", "5",
                      "--model", "hf-hub:imageomics/bioclip", "--output", str(out / f"peer-{rank}.csv")],
    }  # fmt: skip


def bench_rank(rank: str, photos: list[str], repeats: int, env: dict, out: Path, opt_in: list[str]) -> None:
    runs = commands(photos, rank, out)
    for dtype in opt_in:
        runs[f"bioclip-hf --dtype {dtype}"] = commands(photos, rank, out, dtype)["bioclip-hf"]
    measures: dict[str, list] = {name: [] for name in runs}
    for repeat in range(repeats):
        for name in list(runs) if repeat % 2 == 0 else list(reversed(runs)):
            run = run_measured(runs[name], env, out / f"{name.replace(' ', '_')}-{rank}.log")
            measures[name].append(run)
            print(f"  [{rank}] run {repeat + 1}/{repeats} {name:28s} wall {run.wall:7.1f} s, CPU {run.cpu:7.1f} s, "
                  f"peak RSS {run.peak_gib:.2f} GiB", flush=True)  # fmt: skip
    wall = {name: statistics.median(m.wall for m in ms) for name, ms in measures.items()}
    cpu = {name: statistics.median(m.cpu for m in ms) for name, ms in measures.items()}
    peak = {name: max(m.peak_gib for m in ms) for name, ms in measures.items()}
    ours_top = read_top(out / f"ours-{rank}-float32.csv", rank, "file")
    top1, top5 = agreement(ours_top, read_top(out / f"peer-{rank}.csv", rank, "file_name"))
    ours, peer = "bioclip-hf", "pybioclip"
    print(f"{rank:8s} {len(photos)} photos, medians: bioclip-hf wall {wall[ours]:.1f} s / CPU {cpu[ours]:.1f} s "
          f"(peak {peak[ours]:.2f} GiB), pybioclip wall {wall[peer]:.1f} s / CPU {cpu[peer]:.1f} s (peak "
          f"{peak[peer]:.2f} GiB) -> ratio pybioclip/bioclip-hf: wall {wall[peer] / wall[ours]:.2f}x, CPU "
          f"{cpu[peer] / cpu[ours]:.2f}x [tools agree: top-1 {top1:.0%}, top-5 overlap {top5:.0%}]")  # fmt: skip
    for dtype in opt_in:
        name = f"bioclip-hf --dtype {dtype}"
        top1, top5 = agreement(ours_top, read_top(out / f"ours-{rank}-{dtype}.csv", rank, "file"))
        print(f"{'':8s} opt-in {name}: wall {wall[name]:.1f} s / CPU {cpu[name]:.1f} s -> ratio vs pybioclip: wall "
              f"{wall[peer] / wall[name]:.2f}x, CPU {cpu[peer] / cpu[name]:.2f}x; agreement with our float32: "
              f"top-1 {top1:.0%}, top-5 overlap {top5:.0%}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100, help="photos at species rank")
    parser.add_argument("--family-images", type=int, default=40, help="photos at family rank (pybioclip: ~2 s each)")
    parser.add_argument("--taxa", type=int, default=450_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ranks", nargs="+", default=["species", "family"], choices=RANK_COLUMNS)
    parser.add_argument("--opt-in", nargs="*", default=[], choices=["bfloat16", "float16"], help="our --dtype runs")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "bioclip-bench-hf",
                        help="HF_HOME to create (reused when it already holds the model and index)")  # fmt: skip
    args = parser.parse_args(argv)

    write_model(args.cache)
    write_index(args.cache, args.taxa)
    env = offline_env(args.cache)
    print(f"HF_HOME={args.cache}: random ViT-B-16 as imageomics/bioclip, {args.taxa:,} taxa; "
          f"{args.repeats} interleaved runs per tool, medians")  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        for rank in args.ranks:
            photos = bird_photos(args.images if rank == "species" else args.family_images)
            bench_rank(rank, photos, args.repeats, env, Path(out), args.opt_in)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
