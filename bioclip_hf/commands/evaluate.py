"""`bioclip-hf evaluate`: zero-shot and few-shot benchmark harness (`bioclip_hf.evaluation`)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bioclip_hf.hub.registry import DEFAULT_MODEL

    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"checkpoint folder or Hub id (default: {DEFAULT_MODEL})")
    parser.add_argument("--task", action="append",
                        help="bundled task name (e.g. rare_species, birds525; an unknown name lists them) or a YAML path; repeatable")  # fmt: skip
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
    from bioclip_hf.evaluation.harness import EvalConfig, resolve_specs
    from bioclip_hf.evaluation.harness import run as run_harness
    from bioclip_hf.evaluation.report import results_table

    if any(k < 1 for k in args.shots) or args.seeds < 1:
        raise ValueError("--shots and --seeds must be >= 1")
    config = EvalConfig(shots=tuple(args.shots), seeds=args.seeds, templates=args.templates, text_types=args.text_types,
                        batch_size=args.batch_size, max_classes=args.max_classes, max_per_class=args.max_per_class,
                        device=args.device)  # fmt: skip
    results = run_harness(args.model, resolve_specs(args.task, args.data_dir, args.split), config, output=args.output)
    print(results_table(results))
    return 0
