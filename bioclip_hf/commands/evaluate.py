"""`bioclip-hf evaluate`: benchmark suites. `--suite bioclip-2` (BioCLIP 2's 15 tasks, with the published numbers
beside ours; `bioclip_hf.evaluation.suite_run`) or BioCLIP 1's zero-/few-shot harness (`--suite bioclip`, the
default for its task names; `bioclip_hf.evaluation.harness`)."""

from __future__ import annotations

import argparse
import json

SUITES = ("bioclip", "bioclip-2")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bioclip_hf.hub.registry import DEFAULT_MODEL

    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"checkpoint folder or Hub id (default: {DEFAULT_MODEL})")
    parser.add_argument("--task", action="append",
                        help="bundled task name (e.g. rare_species, birds525; an unknown name lists them) or a YAML path; repeatable")  # fmt: skip
    parser.add_argument("--data-dir", help="local image folder replacing the task's dataset (alone: an ad-hoc task, class = folder)")
    parser.add_argument("--split", help="override the task's split")
    parser.add_argument("--shots", type=int, nargs="*", default=[1, 5], help="few-shot k values (default: 1 5; none: zero-shot only)")
    parser.add_argument("--seeds", type=int, default=5, help="few-shot draws to average (default: 5; bioclip-2: SimpleShot folds)")
    parser.add_argument("--templates", choices=("openai", "single"), default="openai",
                        help="zero-shot prompts: the 80 OpenAI templates averaged (default) or 'a photo of {}.'")  # fmt: skip
    parser.add_argument("--text-types", nargs="+", help="override the task's text types (taxonomic, scientific, common, ...)")
    parser.add_argument("--max-classes", type=int, help="use only the first N classes of each task")
    parser.add_argument("--max-per-class", type=int, help="use at most N examples per class")
    parser.add_argument("--batch-size", type=int, default=64, help="images/texts per forward pass (default: 64)")
    parser.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                        help="encoder precision: auto (default) = bfloat16 on CPUs with native bf16, else float32")  # fmt: skip
    parser.add_argument("--output", "-o", default="eval_results.json", help="results JSON (table: same name with .md)")
    parser.add_argument("--suite", choices=SUITES,
                        help="run a whole suite: 'bioclip-2' (BioCLIP 2's 15 tasks, published numbers beside ours) or "
                             "'bioclip' (BioCLIP 1's 10 tasks); tasks whose data is absent are skipped with a note. "
                             "Default: bioclip, or bioclip-2 for its own task names (e.g. --task nabirds)")  # fmt: skip
    parser.add_argument("--data-root", help="folder with one data folder per task, named as the task (DIR/nabirds/metadata.csv)")
    parser.add_argument("--cache-dir", help="image feature cache of --suite bioclip-2 (default: $BIOCLIP_HF_CACHE/eval-features)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write cached image features")
    parser.add_argument("--protocol-option", action="append", default=[], metavar="PROTOCOL.KEY=VALUE",
                        help="override a default of a protocol beyond species, e.g. fishnet.epochs=10 (repeatable)")  # fmt: skip


def pick_suite(args: argparse.Namespace) -> str | None:
    """The suite to run: --suite, else bioclip-2 when every --task is one of its tasks and not a BioCLIP 1 task."""
    if args.suite:
        return args.suite
    if not args.task:
        return None
    from bioclip_hf.evaluation.suite import load_suite
    from bioclip_hf.evaluation.tasks import list_tasks

    ours = {t.name for t in load_suite("bioclip-2").tasks}
    return "bioclip-2" if all(t in ours and t not in list_tasks() for t in args.task) else None


def protocol_options(items: list[str]) -> dict[str, dict]:
    """{"fishnet": {"epochs": 10}} from ["fishnet.epochs=10"]; values parsed as YAML scalars (numbers, booleans)."""
    import yaml

    from bioclip_hf.evaluation.suite import BEYOND_SPECIES_PROTOCOLS
    from bioclip_hf.utils.errors import UsageError

    options: dict[str, dict] = {}
    for item in items:
        name, _, value = item.partition("=")
        protocol, _, key = name.partition(".")
        if not (value and key) or protocol not in BEYOND_SPECIES_PROTOCOLS:
            raise UsageError(f"--protocol-option {item!r}: expected PROTOCOL.KEY=VALUE with PROTOCOL one of "
                             f"{', '.join(BEYOND_SPECIES_PROTOCOLS)}")  # fmt: skip
        options.setdefault(protocol, {})[key] = yaml.safe_load(value)
    return options


def run_bioclip2(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bioclip_hf.evaluation.annotation import check_local_data
    from bioclip_hf.evaluation.suite import load_suite
    from bioclip_hf.evaluation.suite_run import SuiteConfig, place_data, run_suite, throughput
    from bioclip_hf.hub.eval_results import suite_card_table
    from bioclip_hf.utils.io import atomic_write_bytes

    tasks = load_suite("bioclip-2").select(args.task)
    config = SuiteConfig(data_root=args.data_root, data_dir=args.data_dir, batch_size=args.batch_size,
                         device=args.device, cache_dir=args.cache_dir, shots=tuple(args.shots), folds=args.seeds,
                         strict=bool(args.task), protocol_options=protocol_options(args.protocol_option))  # fmt: skip
    if config.strict:  # selected tasks: missing data is an error, found before any model is loaded
        for task in place_data(tasks, config):
            check_local_data(task)
    loaded = _model_in_precision(args)  # may turn the feature cache off (args.no_cache)
    config.use_cache = not args.no_cache
    results = run_suite(args.model, tasks, config, **loaded)
    table = suite_card_table(results)
    atomic_write_bytes(args.output, (json.dumps(results, indent=2) + "\n").encode())
    atomic_write_bytes(Path(args.output).with_suffix(".md"), f"Model: `{results['model']}`.\n\n{table}".encode())
    for name, note in results["skipped"].items():
        print(f"skipped {name}: {note}")
    for name, speed in throughput(results).items():
        print(f"{name}: {results['tasks'][name]['num_examples']} images, "
              + (f"{speed:.1f} images/s" if speed else "features from the cache"))  # fmt: skip
    print(table)
    return 0


def run_bioclip1(args: argparse.Namespace, suite: str | None) -> int:
    from bioclip_hf.evaluation.harness import EvalConfig, resolve_specs
    from bioclip_hf.evaluation.harness import run as run_harness
    from bioclip_hf.evaluation.report import results_table
    from bioclip_hf.evaluation.tasks import list_tasks

    config = EvalConfig(shots=tuple(args.shots), seeds=args.seeds, templates=args.templates, text_types=args.text_types,
                        batch_size=args.batch_size, max_classes=args.max_classes, max_per_class=args.max_per_class,
                        device=args.device)  # fmt: skip
    if suite == "bioclip" and not args.task and not args.data_dir:  # the whole suite: every task whose data is there
        specs = []
        for spec in resolve_specs(list_tasks(), split=args.split):
            if args.data_root:
                from pathlib import Path

                folder = Path(args.data_root) / spec.name
                spec.data_dir = str(folder) if folder.is_dir() else spec.data_dir
            if spec.data_dir or spec.dataset:
                specs.append(spec)
            else:
                print(f"skipped {spec.name}: no data (--data-root DIR with DIR/{spec.name}); get it from {spec.source}")
    else:
        specs = resolve_specs(args.task, args.data_dir, args.split)
    results = run_harness(args.model, specs, config, output=args.output, **_model_in_precision(args))
    print(results_table(results))
    return 0


def _model_in_precision(args: argparse.Namespace) -> dict:
    """{} for float32 (the harness loads the model), else the model and processor loaded in `--dtype`'s precision
    (bf16 Linear weights on a CPU: the encoders run bf16, features stay float32). The feature cache keys on the
    precision in effect, so these features never mix with float32 ones."""
    from bioclip_hf.models.loading import load_model, load_processor, resolve_device, resolve_model_source
    from bioclip_hf.models.precision import apply_precision, resolve_precision, training_precision

    device = resolve_device(args.device)
    precision = resolve_precision(args.dtype, device, training_precision(args.model))
    print(f"precision: {precision.dtype} ({precision.reason})")
    if precision.autocast is None:
        return {}
    source = resolve_model_source(args.model)
    return {"model": apply_precision(load_model(source, device), precision), "processor": load_processor(source)}


def run(args: argparse.Namespace) -> int:
    if any(k < 1 for k in args.shots) or args.seeds < 1:
        raise ValueError("--shots and --seeds must be >= 1")
    suite = pick_suite(args)
    if suite == "bioclip-2":
        return run_bioclip2(args)
    return run_bioclip1(args, suite)
