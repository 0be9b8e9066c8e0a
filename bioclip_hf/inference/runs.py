"""Batch runs of `predict` and `embed`: inputs (paths, lists, datasets), output planning, resume, merge, push.

With `--output`, `--dataset` or several processes (`accelerate launch`), a run writes one Parquet part per block of
inputs and the main process merges them into the output (see `bioclip_hf.inference.batch`).
Standard library only at module level: command modules must import fast.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# predict's --output suffix -> format; embed writes .parquet or .npy.
SUFFIX_FORMATS = {".csv": "csv", ".json": "json", ".parquet": "parquet"}
# Arguments that do not change what is written, so a resumed run may change them.
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
    group.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                       help="image encoder precision under autocast (scores stay float32; default: float32)")  # fmt: skip
    group.add_argument("--compile", action="store_true", help="torch.compile the image encoder (long runs)")
    group.add_argument("--part-size", type=int, default=1024, help="images per Parquet part: the unit of work "
                       "and of resume (default: 1024)")  # fmt: skip
    group.add_argument("--keep-parts", action="store_true", help="keep OUTPUT.parts/ after merging into OUTPUT")
    group.add_argument("--push-to-hub", metavar="OWNER/NAME", help="publish the output as a Hub dataset with a card")
    group.add_argument("--private", action="store_true", help="with --push-to-hub: create a private dataset repo")


@dataclass
class OutputPlan:
    """Where a run writes: "stdout", one "file" (merged from `parts`), or a Parquet dataset "folder" (= `parts`)."""

    kind: str
    fmt: str
    path: Path | None = None

    @property
    def parts(self) -> Path | None:
        if self.kind == "folder":
            return self.path
        return Path(f"{self.path}.parts") if self.path is not None else None

    @property
    def errors(self) -> Path | None:
        from bioclip_hf.inference.parquet import RUN_DIR

        if self.kind == "folder":
            return self.path / RUN_DIR / "errors.csv"
        return self.path.with_name(f"{self.path.stem}.errors.csv") if self.path is not None else None


def is_folder_output(output: str) -> bool:
    return output.endswith(("/", os.sep)) or Path(output).is_dir()


def plan_predict_output(output: str | None, fmt: str | None) -> OutputPlan:
    """--output/--format -> plan: the suffix decides (.csv/.json/.parquet, a folder = Parquet dataset); --format
    must agree with it, and chooses for other suffixes (default csv)."""
    from bioclip_hf.utils.errors import UsageError

    if not output or output == "-":
        if fmt == "parquet":
            raise UsageError("--format parquet needs --output (a .parquet file or a folder)")
        return OutputPlan("stdout", fmt or "csv")
    if is_folder_output(output):
        if fmt not in (None, "parquet"):
            raise UsageError(f"--output {output} is a folder (a Parquet dataset) but --format is {fmt}")
        return OutputPlan("folder", "parquet", Path(output))
    implied = SUFFIX_FORMATS.get(Path(output).suffix.lower())
    if fmt and implied and fmt != implied:
        raise UsageError(f"--format {fmt} contradicts --output {output} (a .{implied} file); drop one of them")
    return OutputPlan("file", implied or fmt or "csv", Path(output))


def plan_embed_output(output: str) -> OutputPlan:
    """emb.parquet, emb.npy (+ emb.files.txt) or a folder (Parquet dataset)."""
    from bioclip_hf.utils.errors import UsageError

    if is_folder_output(output):
        return OutputPlan("folder", "parquet", Path(output))
    suffix = Path(output).suffix.lower()
    if suffix not in (".parquet", ".npy"):
        raise UsageError(f"--output must end with .parquet or .npy (or be a folder), got {Path(output).name}")
    return OutputPlan("file", suffix[1:], Path(output))


def wants_batch_run(args: argparse.Namespace, plan: OutputPlan, world_size: int) -> bool:
    """Parts + merge for every written output, datasets and multi-process runs; stdout streams as before."""
    from bioclip_hf.utils.errors import UsageError

    if plan.kind == "stdout":
        if world_size > 1:
            raise UsageError(f"--output is required when {world_size} processes run (each writes its parts there)")
        if args.dataset:
            raise UsageError("--dataset needs --output")
        if args.push_to_hub:
            raise UsageError("--push-to-hub needs --output")
        return False
    if args.push_to_hub and args.push_to_hub.count("/") != 1:
        raise UsageError(f"--push-to-hub needs 'owner/name', got {args.push_to_hub!r}")
    return True


def make_source(args: argparse.Namespace) -> Any:
    """The run's inputs as a `FileSource` or `DatasetSource` (blocks of --part-size images)."""
    from bioclip_hf.inference.sources import DatasetSource, FileSource
    from bioclip_hf.utils.errors import UsageError

    if args.part_size < 1:
        raise UsageError(f"--part-size must be >= 1, got {args.part_size}")
    if args.dataset:
        if args.images or args.files:
            raise UsageError("--dataset cannot be combined with image paths or --files")
        return DatasetSource(args.dataset, args.split, args.image_column, args.id_column, args.dataset_config,
                             block_size=args.part_size)  # fmt: skip
    if not args.images and not args.files:
        raise UsageError("no inputs: give image files or folders, --files LIST or --dataset NAME")
    source = FileSource.from_inputs(args.images, args.files, args.file_column, block_size=args.part_size)
    if not len(source):
        from bioclip_hf.inference.records import report_errors

        report_errors(args.command, source.errors)
        raise UsageError(f"no images found in {' '.join(args.images or [args.files])}")
    return source


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments that shape the output (a resumed run must repeat them)."""
    return {name: value for name, value in sorted(vars(args).items())
            if not name.startswith("_") and name not in NOT_RUN_OPTIONS}  # fmt: skip


def output_metadata(args: argparse.Namespace, classifier: Any) -> dict[str, Any]:
    """Model, revision and options stored in every Parquet file's metadata (and the pushed dataset's card)."""
    from bioclip_hf import __version__

    config = classifier.model.config
    return {"command": args.command, "model": args.model, "revision": getattr(args, "revision", None),
            "commit": getattr(config, "_commit_hash", None), "projection_dim": int(config.projection_dim),
            "bioclip_hf_version": __version__, "options": run_options(args)}  # fmt: skip


def prediction_rows(classifier: Any, k: int, options: dict[str, Any], key_column: str = "file") -> Callable[..., Any]:
    """(keys, features) -> a pyarrow Table of the classifier's records (the "file" column named `key_column`)."""
    import pyarrow as pa

    def to_table(keys: list[Any], features: Any) -> Any:
        records = classifier.predict_features(keys, features, k, **options)
        if not records:
            return None
        table = pa.Table.from_pylist(records)
        return table.rename_columns([key_column_name(name, key_column) for name in table.column_names])

    return to_table


def key_column_name(column: str, key_column: str) -> str:
    """The output name of a record's image column: "file" (or pybioclip's "file_name" for other keys than files)
    becomes the source's key column ("index" or --id-column for datasets)."""
    if column == "file" or (column == "file_name" and key_column != "file"):
        return key_column
    return column


def check_batch_resume(args: argparse.Namespace, plan: OutputPlan, source: Any) -> dict[str, Any]:
    """What identifies this run; refuses early (before the model loads) to mix it with another run's parts."""
    from bioclip_hf.inference.batch import check_resume

    run = {"command": args.command, "options": run_options(args), "inputs": source.fingerprint(),
           "block_size": source.block_size}  # fmt: skip
    check_resume(plan.parts, run)
    return run


def apply_speed_options(classifier: Any, args: argparse.Namespace) -> None:
    """--dtype, --compile and --num-workers, for batch runs and streamed output alike."""
    classifier.optimize(dtype=args.dtype, compile=args.compile)
    classifier.num_workers = args.num_workers


def run_batch(args: argparse.Namespace, plan: OutputPlan, classifier: Any, source: Any, state: Any,
              to_table: Callable[[list[Any], Any], Any], columns: Sequence[str] = (), normalize: bool = True) -> BatchResult:  # fmt: skip
    """Run (or resume) the blocks of this process, then, on the main process, merge, report and push."""
    from bioclip_hf.inference.batch import run_blocks
    from bioclip_hf.inference.records import report_errors

    apply_speed_options(classifier, args)
    metadata = output_metadata(args, classifier)
    run = check_batch_resume(args, plan, source)
    run_blocks(classifier, source, plan.parts, to_table, run, metadata, state, normalize, progress=not args.no_progress)
    if not state.is_main:
        return BatchResult(0, [], 0)
    rows, errors, images = finalize(args, plan, source, metadata, columns)
    skipped = [{"file": str(error["key"]), "error": error["error"]} for error in errors]
    report_errors(args.command, skipped)
    where = plan.path if plan.kind == "file" else f"{plan.path} (Parquet dataset)"
    what = f"{rows} embeddings of dim {metadata['projection_dim']}" if args.command == "embed" else f"{rows} rows"
    # embed reports on stdout (as it always did); predict keeps stdout for records, so its summary goes to stderr.
    print(f"wrote {what} to {where}" + (f"; unreadable images listed in {plan.errors}" if errors else ""),
          file=sys.stdout if args.command == "embed" else sys.stderr)  # fmt: skip
    return BatchResult(rows, skipped, images)


@dataclass
class BatchResult:
    """What a batch run wrote (on the main process; other processes report zeros): rows, skipped images, and
    the images asked for (read + unreadable + missing)."""

    rows: int
    errors: list[dict[str, str]]
    images: int

    @property
    def code(self) -> int:
        """The exit status: 1 when images were given but none could be read."""
        return 0 if self.rows or not self.errors else 1


def finalize(args: argparse.Namespace, plan: OutputPlan, source: Any, metadata: dict[str, Any],
             columns: Sequence[str]) -> tuple[int, list[dict[str, Any]], int]:  # fmt: skip
    """Check every part is there, write the requested output and the error list, push; returns (rows, errors,
    images asked for)."""
    import bioclip_hf.inference.parquet as parts_io
    from bioclip_hf.inference.records import stream_records
    from bioclip_hf.utils.io import atomic_path

    parts = parts_io.list_parts(plan.parts)
    parts_io.check_complete(parts, source.num_blocks)
    part_errors, part_images = parts_io.part_totals(parts)
    errors = [{"key": error["file"], "error": error["error"]} for error in source.errors] + part_errors
    images = len(source.errors) + part_images
    if plan.kind == "folder":
        rows = parts_io.write_manifest(plan.path, parts, {"metadata": metadata, "inputs": source.fingerprint()})
    elif plan.fmt == "parquet":
        rows = parts_io.merge_parquet(parts, plan.path, metadata)
    elif plan.fmt == "npy":
        rows = parts_io.merge_npy(parts, plan.path, key_column=source.key_column)
    else:
        with atomic_path(plan.path) as tmp:
            rows = stream_records(parts_io.iter_records(parts), plan.fmt, str(tmp), columns)
    parts_io.write_errors(plan.errors, errors, source.key_column)
    if args.push_to_hub:
        from bioclip_hf.inference.publish import push_parts

        url = push_parts(parts, args.push_to_hub, metadata, errors, source.key_column, private=args.private)
        print(f"bioclip-hf {args.command}: pushed to {url}")
    if plan.kind == "file" and not args.keep_parts:
        shutil.rmtree(plan.parts, ignore_errors=True)
    return rows, errors, images
