"""The command-line side of batch runs (`predict`, `embed`): their shared flags, flags -> `BatchOptions`, what
identifies a run in terms of its flags, and what is printed when it is done. The runs themselves are
`bioclip_hf.inference.runs`. Standard library only at module level (`bioclip-hf --help` < 1 s).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from bioclip_hf.utils.errors import UsageError

# Flags that do not change what is written, so a resumed run may change them.
NOT_RUN_OPTIONS = frozenset({
    "images", "files", "file_column", "dataset", "split", "dataset_config", "image_column", "id_column",  # inputs
    "output", "format", "batch_size", "device", "num_workers", "compile", "part_size", "keep_parts", "push_to_hub",
    "private", "no_progress", "label_embeddings", "verbose", "debug", "command", "log",
})  # fmt: skip


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """Image paths/folders/globs, plus --files and --dataset (shared by predict and embed)."""
    parser.add_argument("images", nargs="*", help="image files, folders (searched recursively) and globs "
                        "(quote them: 'photos/**/*.jpg')")  # fmt: skip
    group = parser.add_argument_group("more inputs")
    group.add_argument("--files", metavar="LIST", help="file list: .txt (one path per line) or a .csv/.tsv/.parquet "
                       "column (see --file-column); relative paths are read from the list's folder")  # fmt: skip
    group.add_argument("--file-column", metavar="NAME", help="column of --files tables holding the paths "
                       "(default: file, filepath, path, image, ...)")  # fmt: skip
    group.add_argument("--dataset", metavar="NAME", help="a datasets image dataset: Hub id or local folder (streamed)")
    group.add_argument("--split", default="train", help="--dataset split (default: train)")
    group.add_argument("--dataset-config", metavar="NAME", help="--dataset configuration name")
    group.add_argument("--image-column", default="image", help="--dataset column with the images (default: image)")
    group.add_argument("--id-column", metavar="NAME", help="--dataset column identifying each image in the output "
                       "(default: index, the position in the split)")  # fmt: skip


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Speed, partitioning, resume and publishing options (shared by predict and embed)."""
    group = parser.add_argument_group("large runs (parts, resume, speed)")
    workers = min(4, os.cpu_count() or 1)
    group.add_argument("--num-workers", type=int, default=workers,
                       help=f"processes decoding images (default: {workers}; 0: decode in the main process)")  # fmt: skip
    group.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"), default="auto",
                       help="encoder precision (scores stay float32); auto (default): bfloat16 on CPUs with native "
                       "bf16 (AVX512-BF16/AMX) for bf16/mixed-precision models, else float32 (CUDA too); "
                       "float32 with --preprocess pybioclip gives pybioclip's answers")  # fmt: skip
    group.add_argument("--quantize", choices=("int8",), help="dynamic int8 on the image encoder's Linear layers "
                       "(CPU; quantized once per model commit and cached; expect small score differences)")  # fmt: skip
    group.add_argument("--compile", action="store_true", help="torch.compile the image encoder (long runs)")
    group.add_argument("--part-size", type=int, default=1024, help="images per Parquet part: the unit of work "
                       "and of resume (default: 1024)")  # fmt: skip
    group.add_argument("--keep-parts", action="store_true", help="keep OUTPUT.parts/ after merging into OUTPUT")
    group.add_argument("--push-to-hub", metavar="OWNER/NAME", help="publish the output as a Hub dataset with a card")
    group.add_argument("--private", action="store_true", help="with --push-to-hub: create a private dataset repo")


def batch_options(args: argparse.Namespace) -> Any:
    """The flags as `BatchOptions`."""
    from bioclip_hf.inference.runs import BatchOptions

    return BatchOptions(
        images=args.images, files=args.files, file_column=args.file_column, dataset=args.dataset, split=args.split,
        dataset_config=args.dataset_config, image_column=args.image_column, id_column=args.id_column,
        output=args.output, format=getattr(args, "format", None), part_size=args.part_size,
        keep_parts=args.keep_parts, push_to_hub=args.push_to_hub, private=args.private, progress=not args.no_progress,
    )  # fmt: skip


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The flags that shape the output (a resumed run must repeat them; stored with the output)."""
    # An unset --quantize is left out, so runs started before the flag existed still resume; --dtype is stored as
    # the precision in effect, so `auto` resumes a float32 run (and one started before auto existed) where it
    # means float32.
    options = {name: value for name, value in sorted(vars(args).items())
               if not name.startswith("_") and name not in NOT_RUN_OPTIONS
               and not (name == "quantize" and value is None)}  # fmt: skip
    if options.get("dtype") == "auto":
        options["dtype"] = dtype_in_effect(args)
    return options


def dtype_in_effect(args: argparse.Namespace) -> str:
    """What `--dtype auto` resolves to for this model and device, without loading the model."""
    import json
    from types import SimpleNamespace

    from bioclip_hf.models.loading import resolve_device
    from bioclip_hf.models.precision import resolve_precision, training_precision

    config_file = Path(str(args.model)) / "config.json"
    config = SimpleNamespace(**json.loads(config_file.read_text())) if config_file.is_file() else None
    trained = training_precision(args.model, config)
    return resolve_precision("auto", resolve_device(args.device), trained, quantize=getattr(args, "quantize", None)).dtype


def apply_speed_options(classifier: Any, args: argparse.Namespace) -> None:
    """--dtype, --quantize, --compile and --num-workers, for batch runs and streamed output alike."""
    classifier.optimize(dtype=args.dtype, compile=args.compile, quantize=getattr(args, "quantize", None))
    classifier.num_workers = args.num_workers


def open_inputs(args: argparse.Namespace, plan: Any, state: Any) -> tuple[Any, Any]:
    """(the `BatchRun`, or None when records stream to stdout; the inputs). Everything that can fail before the
    model loads fails here: options, missing inputs (listed, then the error) and a resume with other options."""
    from bioclip_hf.commands._common import report_errors
    from bioclip_hf.inference.runs import BatchRun, NoImagesError, open_source

    options = batch_options(args)
    try:
        if plan.kind == "stdout":
            if state.world_size > 1:
                raise UsageError(f"--output is required when {state.world_size} processes run (each writes its parts there)")
            if args.dataset:
                raise UsageError("--dataset needs --output")
            if args.push_to_hub:
                raise UsageError("--push-to-hub needs --output")
            return None, open_source(options, flags=True)
        batch = BatchRun(options, args.command, state, plan, flags=True)
    except NoImagesError as err:
        report_errors(args.command, err.errors)
        raise
    batch.check_resume(run_options(args))
    return batch, batch.source


def report(args: argparse.Namespace, batch: Any, result: Any, what: str) -> None:
    """What the main process prints when a batch run is done: the push, the skipped images, what was written."""
    from bioclip_hf.commands._common import report_errors

    if not batch.state.is_main:
        return
    if result.url:
        print(f"bioclip-hf {args.command}: pushed to {result.url}")
    report_errors(args.command, result.errors)
    plan = batch.plan
    where = plan.path if plan.kind == "file" else f"{plan.path} (Parquet dataset)"
    # embed reports on stdout (as it always did); predict keeps stdout for records, so its summary goes to stderr.
    print(f"wrote {what} to {where}" + (f"; unreadable images listed in {result.errors_file}" if result.errors else ""),
          file=sys.stdout if args.command == "embed" else sys.stderr)  # fmt: skip
