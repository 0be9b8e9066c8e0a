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

`--model bioclip-2` measures the default path instead: random ViT-L/14 weights of the real shapes as
`imageomics/bioclip-2` with a 867,000-taxa, 768-d TreeOfLife-200M index (bench_fixtures), one process, `predict
--files` at two sizes (default 8 and 40 photos: one and two batches of 32) with the default `--dtype auto` (and any
`--dtypes`), then the breakdown of the peak by `memory_probe.py` (baseline, index, weights, activations, scoring;
`--probe-dtypes auto bfloat16` shows the bf16-weights path even where bf16 is not native; `--probe-images` photos).
Targets (issue 18): peak RSS <= 3.5 GB, and <= 2.5 GB where bf16 is native (bf16 weights).

Run: python benchmarks/bench_batch_memory.py [--sizes 200 1600] [--taxa 450000] [--processes 2] [--repeats 3]
     python benchmarks/bench_batch_memory.py --model bioclip-2 [--sizes 8 40] [--probe-dtypes auto bfloat16]
     [--smoke]   (narrow model, 2,000 taxa, sizes 2 and 4, one process, probe included: checks the script)
"""

from __future__ import annotations

import argparse
import json
import subprocess
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


def probe(photos: list[str], env: dict, dtype: str, model: str) -> dict:
    """`memory_probe.py` in a fresh process: the phases' memory (see its docstring)."""
    command = [sys.executable, str(Path(__file__).with_name("memory_probe.py")), *photos, "--dtype", dtype, "--model", model]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"memory_probe.py failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_breakdown(result: dict) -> None:
    """The phases, then the peak split into baseline, index, weights, activations and scoring."""
    gib = 2**30
    print(f"  breakdown ({result['precision']['dtype']}: weights {result['precision']['weights']}, index scored in "
          f"{result['index_precision']}, {result['taxa']:,} taxa):")  # fmt: skip
    for row in result["phases"]:
        print(f"    {row['phase']:58s} RSS {row['rss'] / gib:5.2f} GiB (+{row['growth'] / gib:5.2f}, peak within "
              f"+{row['peak_growth'] / gib:4.2f}; anon {row['anon'] / gib:4.2f}, file {row['file'] / gib:4.2f}) "
              f"{row['seconds']:6.1f} s")  # fmt: skip
    base, index, model, encode, score, again = result["phases"]
    parts = {"python/torch/transformers": base["rss"], "index (taxa, maps)": index["growth"],
             "weights (loaded + touched)": model["growth"] + encode["growth"],
             "activations (encode peak)": encode["peak_growth"] - encode["growth"],
             "scoring (logits, probs, chunks)": score["peak_growth"]}  # fmt: skip
    peak = max(row["peak"] for row in result["phases"])
    print(f"  peak {peak / gib:.2f} GiB ~ " + " + ".join(f"{name} {size / gib:.2f}" for name, size in parts.items()))


def main_default_model(args: argparse.Namespace) -> int:
    """Peak RSS of the default model's path (bioclip-2 + 867k index), two sizes, and where it goes."""
    from bench_fixtures import write_model as write

    if args.smoke:
        write(args.cache, model_cfg=NARROW, repo_id="imageomics/bioclip-2")
        write_index(args.cache, 2_000, dim=NARROW["embed_dim"], repo="imageomics/TreeOfLife-200M")
    else:
        write(args.cache, "ViT-L-14", repo_id="imageomics/bioclip-2")
        write_index(args.cache, args.taxa or 867_000, dim=768, repo="imageomics/TreeOfLife-200M")
    env = offline_env(args.cache)
    print(f"default model path: bioclip-2 {'(narrow smoke model)' if args.smoke else '(random ViT-L/14)'}, "
          f"one process, sizes {args.sizes}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for dtype in args.dtypes:
            peaks = []
            for size in args.sizes:
                command = mode_commands("files", size, work, 1, args.part_size)
                model = command.index("--model")
                command[model : model + 2] = ["--dtype", dtype]  # the default model
                run = run_measured(command, env, work / "run.log")
                peaks.append(run.peak_gib)
                print(f"  --dtype {dtype:8s} {size:4d} images: {run.wall:6.1f} s, CPU {run.cpu:6.1f} s, peak RSS "
                      f"{run.peak_gib:.2f} GiB ({run.peak_gib * 2**30 / 1e9:.2f} GB)", flush=True)  # fmt: skip
            print(f"--dtype {dtype}: peak RSS {peaks[0]:.2f} -> {peaks[1]:.2f} GiB for {args.sizes[1] - args.sizes[0]} more "
                  f"images ({(peaks[1] - peaks[0]) * 1024:+.0f} MiB)")  # fmt: skip
    for dtype in args.probe_dtypes:
        print_breakdown(probe(bird_photos(args.probe_images), env, dtype, "imageomics/bioclip-2"))
    return 0


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
    parser.add_argument("--cache", type=Path, help="HF_HOME to create (default: a temporary folder per model)")
    parser.add_argument("--model", choices=["narrow", "bioclip-2"], default="narrow",
                        help="narrow: the batch modes above; bioclip-2: the default model's path and its breakdown")  # fmt: skip
    parser.add_argument("--dtypes", nargs="+", default=["auto"], help="bioclip-2: --dtype of the predict runs")
    parser.add_argument("--probe-dtypes", nargs="*", default=["auto", "bfloat16"], help="bioclip-2: breakdown runs")
    parser.add_argument("--probe-images", type=int, default=8, help="bioclip-2: photos in the breakdown's batch")
    parser.add_argument("--smoke", action="store_true", help="with --model bioclip-2: a narrow model, tiny sizes")
    args = parser.parse_args(argv)
    if args.model == "bioclip-2":
        if args.sizes == parser.get_default("sizes"):
            args.sizes = [2, 4] if args.smoke else [8, 40]
        if args.smoke:
            args.probe_images, args.taxa = 2, 2_000
        elif args.taxa == parser.get_default("taxa"):
            args.taxa = 867_000
        args.cache = args.cache or Path(tempfile.gettempdir()) / ("bioclip-bench-hf-smoke2" if args.smoke else "bioclip-bench-hf")
        return main_default_model(args)
    args.cache = args.cache or Path(tempfile.gettempdir()) / "bioclip-bench-hf-narrow"

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
