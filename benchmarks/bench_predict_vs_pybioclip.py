"""End-to-end `predict`: `bioclip-hf predict` vs pybioclip's own CLI (`bioclip predict`), same inputs, default settings.

Both tools run as fresh processes, offline (`HF_HUB_OFFLINE=1`) from one HF cache (`HF_HOME`, see bench_fixtures.py)
holding random weights of the real shapes saved with open_clip's writer and a random release-layout index:
  bioclip-2  the default model of both tools: ViT-L/14 as `imageomics/bioclip-2` (at the registry's pinned commit,
             also `main`) with 867,000 taxa, 768-d, as `imageomics/TreeOfLife-200M` (2.7 GB float32 `.npy`);
             neither tool is given `--model` or `--dtype`.
  bioclip    ViT-B/16 as `imageomics/bioclip` with 450,000 taxa, 512-d (`--model imageomics/bioclip`; pybioclip:
             `--model hf-hub:imageomics/bioclip`).
on the same birds525 photos. Runs are interleaved (ours, peer, peer, ours, ...) and the median of `--repeats` is
taken, since the machine may be shared.

Printed: the CPU and its flags (avx2 / avx512f / avx512_bf16 / amx_bf16 / vnni: whether bf16 is native decides
what `--dtype auto` picks), then per model and rank the median wall and CPU seconds (CPU time, children included,
is far less disturbed by other jobs on a shared machine) and peak RSS of each tool, the ratios pybioclip /
bioclip-hf, and how often the two tools agree on the top-1 and top-5 taxa (random weights, different resizing: a
sanity check, not an accuracy). Targets (issue 18), bioclip-2: >= 2.5x at species and >= 4x at family where bf16
is native, >= 1.3x and >= 3x elsewhere. `--startup` adds the start-up run: one photo, default model, warm cache
(target: ours in at most half of pybioclip's time). `--opt-in bfloat16` adds our `--dtype bfloat16` run with its
agreement against our default run.

Run: python benchmarks/bench_predict_vs_pybioclip.py [--models bioclip-2 bioclip] [--images 100]
     [--family-images 40] [--repeats 3] [--startup 3] [--opt-in bfloat16] [--cache /tmp/bioclip-bench-hf]
     [--smoke]   (a narrow random model, 2,000 taxa, 2 photos, the first rank, 1 run: checks the script, not speed)
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench_fixtures import bird_photos, offline_env, run_measured, write_index, write_model

RANK_COLUMNS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni", "avx_vnni")
NARROW = {"embed_dim": 512, "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
          "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}  # fmt: skip


@dataclass
class Setup:
    """One model as both tools are asked to run it."""

    repo: str
    architecture: str | dict
    index_repo: str
    taxa: int
    dim: int
    ours: list[str] = field(default_factory=list)  # extra flags (none: the default model)
    peer: list[str] = field(default_factory=list)


SETUPS = {
    "bioclip-2": Setup("imageomics/bioclip-2", "ViT-L-14", "imageomics/TreeOfLife-200M", 867_000, 768),
    "bioclip": Setup("imageomics/bioclip", "ViT-B-16", "imageomics/TreeOfLife-10M", 450_000, 512,
                     ["--model", "imageomics/bioclip"], ["--model", "hf-hub:imageomics/bioclip"]),
}  # fmt: skip


def cpu_description() -> str:
    """The CPU model and which of the precision-relevant flags it has (from /proc/cpuinfo)."""
    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "unknown CPU":
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    import os

    marks = " ".join(f"{flag}{'+' if flag in flags else '-'}" for flag in FLAGS)
    native = "native bf16" if {"avx512_bf16", "amx_bf16"} & flags else "no native bf16"
    return f"{name}, {os.cpu_count()} cores; {marks} ({native})"


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


def commands(setup: Setup, photos: list[str], rank: str, out: Path, dtype: str | None = None) -> dict[str, list[str]]:
    tag = f"{rank}-{dtype or 'default'}"
    ours = [sys.executable, "-m", "bioclip_hf.cli", "predict", *photos, "--rank", rank, "--k", "5", *setup.ours,
            "--no-progress", "--output", str(out / f"ours-{tag}.csv"), *(["--dtype", dtype] if dtype else [])]  # fmt: skip
    peer = [sys.executable, "-m", "bioclip", "predict", *photos, "--rank", rank, "--k", "5", *setup.peer,
            "--output", str(out / f"peer-{rank}.csv")]  # fmt: skip
    return {"bioclip-hf": ours, "pybioclip": peer}


def measure(runs: dict[str, list[str]], repeats: int, env: dict, out: Path, label: str) -> dict[str, list]:
    """Each command `repeats` times, interleaved (forward, then backward order); the measures per command."""
    measures: dict[str, list] = {name: [] for name in runs}
    for repeat in range(repeats):
        for name in list(runs) if repeat % 2 == 0 else list(reversed(runs)):
            run = run_measured(runs[name], env, out / f"{name.replace(' ', '_')}-{label}.log")
            measures[name].append(run)
            print(f"  [{label}] run {repeat + 1}/{repeats} {name:28s} wall {run.wall:7.1f} s, CPU {run.cpu:7.1f} s, "
                  f"peak RSS {run.peak_gib:.2f} GiB", flush=True)  # fmt: skip
    return measures


def summary(measures: dict[str, list]) -> tuple[dict, dict, dict]:
    wall = {name: statistics.median(m.wall for m in ms) for name, ms in measures.items()}
    cpu = {name: statistics.median(m.cpu for m in ms) for name, ms in measures.items()}
    peak = {name: max(m.peak_gib for m in ms) for name, ms in measures.items()}
    return wall, cpu, peak


def bench_rank(name: str, setup: Setup, rank: str, photos: list[str], repeats: int, env: dict, out: Path,
               opt_in: list[str]) -> None:  # fmt: skip
    runs = commands(setup, photos, rank, out)
    for dtype in opt_in:
        runs[f"bioclip-hf --dtype {dtype}"] = commands(setup, photos, rank, out, dtype)["bioclip-hf"]
    wall, cpu, peak = summary(measure(runs, repeats, env, out, f"{name} {rank}"))
    ours_top = read_top(out / f"ours-{rank}-default.csv", rank, "file")
    top1, top5 = agreement(ours_top, read_top(out / f"peer-{rank}.csv", rank, "file_name"))
    ours, peer = "bioclip-hf", "pybioclip"
    print(f"{name:9s} {rank:8s} {len(photos)} photos, medians: bioclip-hf wall {wall[ours]:.1f} s / CPU {cpu[ours]:.1f} s"
          f" (peak {peak[ours]:.2f} GiB), pybioclip wall {wall[peer]:.1f} s / CPU {cpu[peer]:.1f} s (peak "
          f"{peak[peer]:.2f} GiB) -> ratio pybioclip/bioclip-hf: wall {wall[peer] / wall[ours]:.2f}x, CPU "
          f"{cpu[peer] / cpu[ours]:.2f}x, peak RSS {peak[peer] / peak[ours]:.2f}x "
          f"[tools agree: top-1 {top1:.0%}, top-5 overlap {top5:.0%}]", flush=True)  # fmt: skip
    for dtype in opt_in:
        label = f"bioclip-hf --dtype {dtype}"
        top1, top5 = agreement(ours_top, read_top(out / f"ours-{rank}-{dtype}.csv", rank, "file"))
        print(f"{'':18s} opt-in {label}: wall {wall[label]:.1f} s / CPU {cpu[label]:.1f} s (peak {peak[label]:.2f} "
              f"GiB) -> ratio vs pybioclip: wall {wall[peer] / wall[label]:.2f}x, CPU {cpu[peer] / cpu[label]:.2f}x; "
              f"agreement with our default run: top-1 {top1:.0%}, top-5 overlap {top5:.0%}", flush=True)  # fmt: skip


def bench_startup(name: str, setup: Setup, repeats: int, env: dict, out: Path) -> None:
    """One photo, default settings: the time a user waits for a single answer (warm caches: a first untimed run)."""
    photo = bird_photos(1)
    runs = commands(setup, photo, "species", out)
    measure(runs, 1, env, out, f"{name} start-up warm-up")
    wall, cpu, peak = summary(measure(runs, repeats, env, out, f"{name} start-up"))
    ours, peer = "bioclip-hf", "pybioclip"
    print(f"{name:9s} start-up, 1 photo, medians: bioclip-hf wall {wall[ours]:.1f} s / CPU {cpu[ours]:.1f} s (peak "
          f"{peak[ours]:.2f} GiB), pybioclip wall {wall[peer]:.1f} s / CPU {cpu[peer]:.1f} s (peak {peak[peer]:.2f} GiB)"
          f" -> ours takes {wall[ours] / wall[peer]:.2f} of pybioclip's wall time, {cpu[ours] / cpu[peer]:.2f} of its "
          f"CPU time (target <= 0.50)", flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["bioclip-2", "bioclip"], choices=list(SETUPS))
    parser.add_argument("--images", type=int, default=100, help="photos at species rank")
    parser.add_argument("--family-images", type=int, default=40, help="photos at family rank (pybioclip: ~2 s each)")
    parser.add_argument("--taxa", type=int, help="taxa of every index (default: the release's size per model)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--startup", type=int, default=0, metavar="REPEATS", help="start-up runs (one photo) per tool")
    parser.add_argument("--ranks", nargs="+", default=["species", "family"], choices=RANK_COLUMNS)
    parser.add_argument("--opt-in", nargs="*", default=[], choices=["bfloat16", "float16", "float32"],
                        help="our --dtype runs besides the default")  # fmt: skip
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "bioclip-bench-hf",
                        help="HF_HOME to create (reused when it already holds the models and indexes)")  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="a narrow model, 2,000 taxa, 2 photos, the first rank, "
                        "one run each")  # fmt: skip
    args = parser.parse_args(argv)
    setups = {name: SETUPS[name] for name in args.models}
    if args.smoke:
        vit_b = SETUPS["bioclip"]
        setups = {"smoke": Setup(vit_b.repo, NARROW, vit_b.index_repo, 2_000, 512, list(vit_b.ours), list(vit_b.peer))}
        args.images, args.ranks, args.repeats, args.startup = 2, args.ranks[:1], 1, min(args.startup, 1)
        args.cache = args.cache.with_name(args.cache.name + "-smoke")
    print(f"CPU: {cpu_description()}")
    env = offline_env(args.cache)
    for name, setup in setups.items():
        taxa = args.taxa or setup.taxa
        if isinstance(setup.architecture, dict):
            write_model(args.cache, model_cfg=setup.architecture, repo_id=setup.repo)
        else:
            write_model(args.cache, setup.architecture, repo_id=setup.repo)
        write_index(args.cache, taxa, dim=setup.dim, repo=setup.index_repo)
        print(f"{name}: random {setup.architecture if isinstance(setup.architecture, str) else 'narrow ViT'} as "
              f"{setup.repo}, {taxa:,} taxa as {setup.index_repo}; HF_HOME={args.cache}; {args.repeats} interleaved "
              f"runs per tool, medians", flush=True)  # fmt: skip
        with tempfile.TemporaryDirectory() as out:
            if args.startup:
                bench_startup(name, setup, args.startup, env, Path(out))
            for rank in args.ranks:
                photos = bird_photos(args.images if rank == "species" else args.family_images)
                bench_rank(name, setup, rank, photos, args.repeats, env, Path(out), args.opt_in)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
