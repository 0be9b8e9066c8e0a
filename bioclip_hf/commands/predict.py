"""`bioclip-hf predict`: Tree-of-Life taxa, custom labels, binned labels or few-shot classes for photos."""

from __future__ import annotations

import argparse
from pathlib import Path

from bioclip_hf.commands._common import add_model_arguments, quiet_library_skip_warnings, report_errors
from bioclip_hf.commands._runs import add_input_arguments, add_run_arguments
from bioclip_hf.inference.pybioclip_format import RECORD_KEYS
from bioclip_hf.inference.records import FORMATS
from bioclip_hf.treeoflife.taxonomy import RANKS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--rank", type=str.lower, choices=RANKS, help="Tree-of-Life rank to predict (default: species)")
    mode.add_argument("--labels", "--cls", dest="labels",
                      help="custom labels: 'a,b,c' or a file (one label per line, or CSV first column); --cls as in pybioclip")
    mode.add_argument("--bins", help="CSV whose first two columns map labels to bins; predicts bins")
    mode.add_argument("--few-shot", metavar="DIR", help="folder with one sub-folder of example images per label")
    parser.add_argument("--subset", help="restrict Tree-of-Life predictions: CSV of clades or 'Aves,Mammalia'")
    parser.add_argument("--index", help="index folder from build-index, txt_emb_species.npy or Hub dataset id (default: the model's)")
    parser.add_argument("--index-revision", help="branch, tag or commit of the model's released index (default: the registry's, else main)")
    parser.add_argument("--label-embeddings", metavar="FILE", help="cache file for custom-label embeddings (.safetensors)")
    parser.add_argument("--k", type=int, default=5, help="predictions per image (default: 5)")
    parser.add_argument("--min-prob", type=float, default=1e-9, help="ignore species below this probability (default 1e-9)")
    parser.add_argument("--format", choices=(*FORMATS, "parquet"),
                        help="output format (default: from the --output suffix, else csv)")  # fmt: skip
    parser.add_argument("--columns", choices=RECORD_KEYS, default="bioclip-hf",
                        help="column names and order: ours (default) or pybioclip's (file_name, classification, ...)")
    parser.add_argument("--output", "-o", help="output file (.csv, .json, .parquet, ...) or folder/ (Parquet dataset; "
                        "written in resumable parts); default: stdout")  # fmt: skip
    parser.add_argument("--log", metavar="RUN.json", help="write the run's provenance (model/index commits, preprocessing, versions, counts)")
    add_model_arguments(parser)
    add_run_arguments(parser)


def read_labels(value: str) -> list[str]:
    """Labels from 'a,b,c' or a file (one per line, or a CSV's first column when it has commas)."""
    path = Path(value)
    if path.is_file():
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if path.suffix.lower() == ".csv":
            import csv

            lines = [row[0].strip() for row in csv.reader(lines[1:]) if row and row[0].strip()]
        return lines
    return [label.strip() for label in value.split(",") if label.strip()]


def read_bins(path: str) -> dict[str, str]:
    """{label: bin} from a CSV with a header row (first column label, second bin)."""
    import csv

    if not Path(path).is_file():
        raise FileNotFoundError(f"bins file not found: {path}")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if len(rows) < 2 or any(len(row) < 2 for row in rows[1:] if row):
        raise ValueError(f"{path}: expected a header and rows of label,bin")
    return {row[0].strip(): row[1].strip() for row in rows[1:] if row and row[0].strip()}


def run(args: argparse.Namespace) -> int:
    from bioclip_hf.commands._runs import apply_speed_options, open_inputs, report, run_options
    from bioclip_hf.hub.provenance import check_run_log_path, now, run_log, write_run_log
    from bioclip_hf.inference.batch import process_state
    from bioclip_hf.inference.records import stream_records
    from bioclip_hf.inference.runs import BatchResult, plan_predict_output, record_columns

    quiet_library_skip_warnings()
    started = now()
    _check_arguments(args)
    if args.log:
        check_run_log_path(args.log)
    plan = plan_predict_output(args.output, args.format, flags=True)
    state = process_state()
    batch, source = open_inputs(args, plan, state)  # before the model loads
    classifier, options, settings = _classifier(args, state.device(args.device))
    apply_speed_options(classifier, args)
    if batch is not None:
        result = batch.predict(classifier, args.k, run_options=run_options(args), **options)
        report(args, batch, result, f"{result.rows} rows")
    else:
        columns = record_columns(classifier, **options)
        count = stream_records(classifier.iter_predict(source.paths, k=args.k, **options), plan.fmt, None, columns)
        result = BatchResult(count, source.errors + classifier.errors, len(source) + len(source.errors))
        report_errors("predict", result.errors)
    if args.log and state.is_main:
        write_run_log(args.log, run_log(classifier, settings, result.images, result.errors, started,
                                        str(plan.path) if plan.path else None, result.rows))  # fmt: skip
    return result.code


def _check_arguments(args: argparse.Namespace) -> None:
    from bioclip_hf.utils.errors import UsageError

    if args.k < 1:
        raise UsageError(f"--k must be >= 1, got {args.k}")
    tree_of_life = not (args.labels or args.bins or args.few_shot)
    if not tree_of_life and (args.subset or args.index or args.index_revision):
        raise UsageError("--subset, --index and --index-revision apply to Tree-of-Life predictions only "
                       "(not with --labels/--bins/--few-shot)")  # fmt: skip
    if args.index and args.index_revision:
        raise UsageError("--index-revision applies to the model's released index, not to --index")
    if args.few_shot and args.columns == "pybioclip":
        raise UsageError("--columns pybioclip applies to Tree-of-Life, --labels and --bins predictions (pybioclip has no few-shot)")


def _classifier(args: argparse.Namespace, device: str | None):
    """(classifier, predict options, settings for the run log) for the chosen mode."""
    from bioclip_hf.inference.classify import CustomLabelsClassifier, FewShotClassifier, TreeOfLifeClassifier
    from bioclip_hf.treeoflife.files import parse_subset

    common = dict(model_name_or_path=args.model, revision=args.revision, device=device, batch_size=args.batch_size,
                  progress=not args.no_progress, record_keys=args.columns, preprocess=args.preprocess,
                  dtype=args.dtype, quantize=args.quantize)  # precision before custom labels are embedded  # fmt: skip
    settings: dict = {"k": args.k, "columns": args.columns, "batch_size": args.batch_size, "preprocess": args.preprocess,
                      "dtype": args.dtype, "quantize": args.quantize, "compile": args.compile}  # fmt: skip
    options: dict = {}
    if args.labels:
        labels = read_labels(args.labels)
        classifier = CustomLabelsClassifier(labels, label_embeddings=args.label_embeddings, **common)
        settings.update(mode="labels", labels=labels)
    elif args.bins:
        bins = read_bins(args.bins)
        classifier = CustomLabelsClassifier(list(bins), bins=bins, label_embeddings=args.label_embeddings, **common)
        settings.update(mode="bins", bins=bins, bins_file=args.bins)
    elif args.few_shot:
        classifier = FewShotClassifier(args.few_shot, **common)
        report_errors("predict", classifier.support_errors)
        settings.update(mode="few-shot", examples=args.few_shot, classes=list(classifier.classes))
    else:
        options = {"rank": args.rank or "species", "min_prob": args.min_prob}
        classifier = TreeOfLifeClassifier(index=args.index, subset=parse_subset(args.subset),
                                          index_revision=args.index_revision, **common)  # fmt: skip
        settings.update(mode="tree-of-life", rank=options["rank"], min_prob=args.min_prob, subset=args.subset)
    return classifier, options, settings
