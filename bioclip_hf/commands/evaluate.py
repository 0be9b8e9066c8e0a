"""`bioclip-hf evaluate`: zero-shot and few-shot benchmark harness (evals/ in the repository checkout)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The harness options, shared with `python -m evals.harness`."""
    from ..registry import DEFAULT_MODEL

    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"checkpoint folder or Hub id (default: {DEFAULT_MODEL})")
    parser.add_argument("--task", action="append",
                        help="task name (a YAML file in evals/tasks/, e.g. rare_species, birds525) or YAML path; repeatable")  # fmt: skip
    parser.add_argument("--data-dir", help="local image folder replacing the task's dataset (alone: an ad-hoc task, class = folder)")
    parser.add_argument("--split", help="override the task's split")
    parser.add_argument("--shots", type=int, nargs="*", default=[1, 5], help="few-shot k values (default: 1 5; none: zero-shot only)")
    parser.add_argument("--seeds", type=int, default=5, help="few-shot draws to average (default: 5)")
    parser.add_argument("--templates", choices=("openai", "single"), default="openai",
                        help="zero-shot prompts: the 80 OpenAI templates averaged (default) or 'a photo of {}.'")  # fmt: skip
    parser.add_argument("--text-types", nargs="+", help="override the task's text types (taxonomic, scientific, common, ...)")
    parser.add_argument("--max-classes", type=int, help="use only the first N classes of each task")
    parser.add_argument("--max-per-class", type=int, help="use at most N examples per class")
    parser.add_argument("--batch-size", type=int, default=64, help="images/texts per forward pass (default: 64)")
    parser.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    parser.add_argument("--output", "-o", default="eval_results.json", help="results JSON (table: same name with .md)")


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    if not (repo / "evals" / "harness.py").is_file():
        raise FileNotFoundError(f"the evals/ folder of the bioclip-hf repository is needed (not found under {repo})")
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    from evals.harness import run_from_args

    return run_from_args(args)
