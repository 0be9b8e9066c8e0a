"""Peak memory of `bioclip-hf predict` batch runs at two input sizes: it must not grow with the number of images.

Each mode runs `predict` as fresh processes (offline, HF_HOME from bench_fixtures) on the `--sizes` first
birds525 photos with a `--taxa` index (450k by default: the `[batch, taxa]` probabilities are the big buffer):
  files        one process, photos from `--files list.txt`, CSV output merged from Parquet parts
  files x N    `accelerate launch --num_processes N` (gloo on CPU), same inputs and output
  dataset      `--dataset` a local Parquet image dataset, streamed (no length known), N=1
  dataset x N  the same under `accelerate launch`
A narrow random model (ViT, width 64, 2 layers, 224 px, 512-d embeddings) keeps the runs short; image decoding,
the index, the parts and the merge are the real ones. Printed: peak RSS of the largest process (sampled, DataLoader workers and ranks
included) and the PSS of all processes together (shared pages counted once; split into anonymous memory, mapped
files, which the kernel can reclaim, and shared memory) at each size, and the growth.

Run: python benchmarks/bench_batch_memory.py [--sizes 200 1600] [--taxa 450000] [--processes 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench_fixtures import Measure, bird_photos, offline_env, run_measured, write_index, write_model

NARROW = {"embed_dim": 512, "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
          "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}  # fmt: skip


def write_dataset(photos: list[str], folder: Path) -> Path:
    """The photos as a Parquet image dataset (`image` bytes + `id`) in row groups of 100 rows, as `push_to_hub`
    writes image datasets (a reader holds one row group: one group for the whole file would grow with it)."""
    import datasets

    images = [{"bytes": Path(p).read_bytes(), "path": Path(p).name} for p in photos]
    features = datasets.Features({"id": datasets.Value("int64"), "image": datasets.Image()})
    data = datasets.Dataset.from_dict({"id": list(range(len(photos))), "image": images}, features=features)
    data.to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"), batch_size=100)
    return folder


def mode_commands(mode: str, size: int, work: Path, processes: int, part_size: int = 256) -> list[str]:
    photos = bird_photos(size)
    listing = work / f"list-{size}.txt"
    listing.write_text("".join(f"{p}\n" for p in photos))
    inputs = ["--files", str(listing)]
    if mode.startswith("dataset"):
        folder = work / f"dataset-{size}"
        if not folder.exists():
            write_dataset(photos, folder)
        inputs = ["--dataset", str(folder), "--id-column", "id"]
    output = work / f"{mode.replace(' ', '')}-{size}.csv"
    command = ["-m", "bioclip_hf.cli", "predict", *inputs, "--model", "imageomics/bioclip", "--k", "5", "--no-progress", "--part-size", str(part_size),
               "--output", str(output)]  # fmt: skip
    if " x " in mode:
        return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *command]  # fmt: skip
    return [sys.executable, *command]


def split_text(run: Measure) -> str:
    return ", ".join(f"{kind} {size:.2f}" for kind, size in run.peak_split_gib.items())


def median_run(runs: list[Measure]) -> Measure:
    """The run with the median peak RSS (the upper median for an even count)."""
    return sorted(runs, key=lambda run: run.peak_gib)[len(runs) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=[200, 1600])
    parser.add_argument("--taxa", type=int, default=450_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["files", "files x N", "dataset", "dataset x N"])
    parser.add_argument("--part-size", type=int, default=256,
                        help="images per block; compare sizes that keep every decoding worker busy (>= workers x "
                        "processes blocks: idle workers exit early and hold no memory at the peak)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per size; the run with the median peak is compared (peaks vary by ~0.3 GiB run to run)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "bioclip-bench-hf-narrow")
    args = parser.parse_args(argv)

    write_model(args.cache, model_cfg=NARROW)
    write_index(args.cache, args.taxa, dim=NARROW["embed_dim"])
    env = offline_env(args.cache, ACCELERATE_USE_CPU="true")
    print(f"narrow random model, {args.taxa:,} taxa, sizes {args.sizes}, {args.processes} processes for 'x N' modes")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for mode in args.modes:
            runs = []
            for size in args.sizes:
                repeats = []
                for _ in range(args.repeats):
                    repeats.append(run_measured(mode_commands(mode, size, work, args.processes, args.part_size), env, work / "run.log"))
                    print(f"  {mode.replace('N', str(args.processes)):12s} {size:6d} images: {repeats[-1].wall:6.1f} s, peak RSS "
                          f"{repeats[-1].peak_gib:.2f} GiB (all processes, PSS: {repeats[-1].peak_total_gib:.2f} GiB = "
                          f"{split_text(repeats[-1])})", flush=True)  # fmt: skip
                runs.append(median_run(repeats))
            growth = (runs[1].peak_gib - runs[0].peak_gib) * 1024
            total = (runs[1].peak_total_gib - runs[0].peak_total_gib) * 1024
            print(f"{mode.replace('N', str(args.processes)):12s} peak RSS {runs[0].peak_gib:.2f} -> {runs[1].peak_gib:.2f} "
                  f"GiB: {growth:+.0f} MiB largest process, {total:+.0f} MiB all processes, for "
                  f"{args.sizes[1] - args.sizes[0]:,} more images")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
