"""The BioCLIP 2 suite for one model on one device (the Python half of gpu_eval.sh): per task, images/s of its
image pass (decode + preprocess + encode, batches of --batch-size) and our score next to the published numbers.

Tasks run where their data is present: `--data-root DIR` holds one folder per task (DIR/nabirds/metadata.csv, ...;
see evals/README.md), the Hub tasks (Rare Species, IDLE-OO Camera Traps) come from the Hub or the HF cache. The
feature cache is a fresh temporary folder unless `--cache-dir` is given, so images/s measures the encoder.

`--smoke`: a tiny random model on CPU and the suite's miniatures (tests/support/eval_suite.py: the 13 local tasks in
their layouts, the 2 Hub tasks on a local Hub test server), with short protocol runs: the test suite runs this.

Run: python benchmarks/gpu_eval.py --device cuda --model imageomics/bioclip-2 --data-root /data/bioclip2-suite
     python benchmarks/gpu_eval.py --smoke   (CPU, seconds)
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # miniatures and the Hub test server

SMOKE_OPTIONS = {"fishnet": {"epochs": 2, "eval_every": 1}, "awa2": {"epochs": 2, "eval_every": 1},
                 "newt": {"n_iter": 2, "n_jobs": 1}, "plantdoc": {"repeats": 2},
                 "herbarium19": {"runs": 1, "class_splits": {"Old": [0, 1], "New": [2, 3]}}}  # miniature's 4 classes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="imageomics/bioclip-2", help="checkpoint folder or Hub id")
    parser.add_argument("--data-root", help="folder with one data folder per task (DIR/<task>/)")
    parser.add_argument("--task", action="append", help="run only these tasks (repeatable)")
    parser.add_argument("--device", default="cuda", help="torch device (default: cuda)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default: 256)")
    parser.add_argument("--cache-dir", help="reuse this feature cache (default: a fresh temporary one)")
    parser.add_argument("--smoke", action="store_true", help="tiny random model + miniatures on CPU (test mode)")
    return parser.parse_args(argv)


def tiny_model(folder: Path) -> str:
    """A tiny random BioCLIP saved in transformers format (the tests' TINY_OPEN_CLIP_CFG)."""
    import torch
    from support.models import TINY_OPEN_CLIP_CFG

    from bioclip_hf import BioCLIPConfig, BioCLIPImageProcessor, BioCLIPModel, BioCLIPProcessor, load_tokenizer

    torch.manual_seed(0)
    BioCLIPModel(BioCLIPConfig.from_open_clip(TINY_OPEN_CLIP_CFG)).eval().save_pretrained(folder)
    BioCLIPProcessor(BioCLIPImageProcessor(size=30), load_tokenizer()).save_pretrained(folder)
    return str(folder)


def report(results: dict, seconds: float) -> None:
    from bioclip_hf.evaluation.suite_run import throughput
    from bioclip_hf.hub.eval_results import suite_card_table

    for name, note in results["skipped"].items():
        print(f"skipped {name}: {note}")
    speeds = throughput(results)
    total_images = sum(results["tasks"][n]["num_examples"] for n, s in speeds.items() if s)
    encode_seconds = sum(results["tasks"][n]["num_examples"] / s for n, s in speeds.items() if s)
    for name, speed in speeds.items():
        task = results["tasks"][name]
        rate = f"{speed:.1f} images/s" if speed else "features from the cache"
        print(f"{name}: {task['num_examples']} images, {rate}, score {task['score']:.1f}")
    if encode_seconds:
        print(f"all tasks: {total_images} images, {total_images / encode_seconds:.1f} images/s (image passes); "
              f"suite wall time {seconds:.1f} s")  # fmt: skip
    print(suite_card_table(results))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from bioclip_hf.evaluation.suite import load_suite
    from bioclip_hf.evaluation.suite_run import SuiteConfig, run_suite

    with tempfile.TemporaryDirectory(prefix="gpu-eval-") as scratch, contextlib.ExitStack() as stack:
        scratch = Path(scratch)
        model, data_root, options = args.model, args.data_root, {}
        if args.smoke:
            from support.eval_suite import push_hub_tasks, write_suite_data
            from support.hub_server import HubServer, hub_environment

            server = stack.enter_context(HubServer())
            stack.enter_context(hub_environment(server.url, cache_dir=scratch / "hf"))
            push_hub_tasks("hf_smoke_token", scratch / "hub")
            model, data_root, options = tiny_model(scratch / "model"), str(write_suite_data(scratch / "data")), SMOKE_OPTIONS
            args.device, args.batch_size = "cpu", min(args.batch_size, 16)
        config = SuiteConfig(data_root=data_root, batch_size=args.batch_size, device=args.device,
                             cache_dir=args.cache_dir or str(scratch / "features"), protocol_options=options)  # fmt: skip
        print(f"device={args.device} batch={args.batch_size} model={args.model if not args.smoke else 'tiny (smoke)'}")
        start = time.perf_counter()
        results = run_suite(model, load_suite("bioclip-2").select(args.task), config)
        report(results, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
