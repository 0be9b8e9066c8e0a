"""Batch runs: predict or embed a large set of images into resumable Parquet parts, then merge and publish them.

A run reads files (paths, folders, globs, a file list) or a `datasets` image dataset, cuts them into blocks of
`part_size` images and writes one Parquet part per block (`bioclip_hf.inference.batch`); under
`accelerate launch` the blocks are shared out over the processes. The main process then merges the parts into the
output (CSV, JSON, a table, Parquet, .npy, or a Parquet dataset folder) and can push them as a Hub dataset.
Running the same call again resumes: written parts are skipped, and a run with other settings is refused.

`bioclip-hf predict/embed --output ...` are this API behind command-line flags.

Example:
    >>> from bioclip_hf import TreeOfLifeClassifier
    >>> from bioclip_hf.inference import BatchOptions, predict_batch
    >>> options = BatchOptions(images=["photos/"], output="predictions.parquet", part_size=1024)  # doctest: +SKIP
    >>> result = predict_batch(TreeOfLifeClassifier(), options, rank="family", k=3)  # doctest: +SKIP
    >>> result.rows, result.output  # doctest: +SKIP

Standard library only at module level: the command modules import it and must start fast.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bioclip_hf.utils.errors import UsageError

# predict's output suffix -> format; embed writes .parquet or .npy.
SUFFIX_FORMATS = {".csv": "csv", ".json": "json", ".parquet": "parquet"}
EMBEDDING_DTYPES = ("float32", "float16")
_FLAG = re.compile(r"(?<![\w/.-])--([a-z][a-z-]*)")


def spell(message: str, flags: bool) -> str:
    """Messages are written with command-line flags (`--part-size`); Python callers read the `BatchOptions`
    field names (`part_size`) instead."""
    return message if flags else _FLAG.sub(lambda match: match.group(1).replace("-", "_"), message)


@dataclass
class BatchOptions:
    """What a batch run reads and writes (each field is the `bioclip-hf predict/embed` flag of the same name).

    Args:
        images: image files, folders (searched recursively) and globs ("photos/**/*.jpg").
        files: a file list: .txt (one path per line) or a .csv/.tsv/.parquet column (`file_column`); relative paths
            are read from the list's folder.
        file_column: the column of a `files` table holding the paths (default: file, filepath, path, image, ...).
        dataset: a `datasets` image dataset instead: Hub id or local folder (streamed), or a `save_to_disk` folder.
        split, dataset_config, image_column: which split, configuration and image column of `dataset`.
        id_column: a `dataset` column naming each image in the output (default: "index", its position).
        output: predict: .csv, .json, .parquet (other suffixes: `format`, default csv); embed: .parquet or .npy
            (+ .files.txt); either: a folder (ends with "/" or exists) that becomes a Parquet dataset of the parts.
        format: predict's output format ("csv", "json", "table", "parquet"); must agree with the suffix.
        part_size: images per Parquet part, the unit of work and of resume.
        keep_parts: keep `OUTPUT.parts/` after merging into a file output.
        resume: continue a run whose parts are already there (the default); False refuses to touch earlier parts.
        push_to_hub: "owner/name" of a Hub dataset to publish the parts to, with a card.
        private: create that dataset private.
        progress: show a progress bar (main process).
    """

    images: Sequence[str | os.PathLike] | str | os.PathLike = ()
    files: str | os.PathLike | None = None
    file_column: str | None = None
    dataset: str | os.PathLike | None = None
    split: str = "train"
    dataset_config: str | None = None
    image_column: str = "image"
    id_column: str | None = None
    output: str | os.PathLike | None = None
    format: str | None = None
    part_size: int = 1024
    keep_parts: bool = False
    resume: bool = True
    push_to_hub: str | None = None
    private: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        # One path is a list of one (a str is a Sequence too: never iterate its characters).
        images = [self.images] if isinstance(self.images, (str, os.PathLike)) else list(self.images or ())
        self.images = [str(image) for image in images]


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


@dataclass
class BatchResult:
    """What a batch run wrote (on the main process; other processes report zeros): rows, skipped images
    ({"file", "error"}), the images asked for (read + unreadable + missing), where the output and the list of
    unreadable images went, and the URL of the pushed dataset."""

    rows: int
    errors: list[dict[str, str]]
    images: int
    output: Path | None = None
    errors_file: Path | None = None
    url: str | None = None

    @property
    def code(self) -> int:
        """The exit status: 1 when images were given but none could be read."""
        return 0 if self.rows or not self.errors else 1


class NoImagesError(UsageError):
    """None of the inputs is an image that exists; `errors` lists them ({"file", "error"})."""

    def __init__(self, message: str, errors: Sequence[Mapping[str, str]] = ()):
        super().__init__(message)
        self.errors = list(errors)


def is_folder_output(output: str | os.PathLike) -> bool:
    return str(output).endswith(("/", os.sep)) or Path(output).is_dir()


def plan_predict_output(output: str | os.PathLike | None, fmt: str | None, flags: bool = False) -> OutputPlan:
    """The suffix decides (.csv/.json/.parquet, a folder = Parquet dataset); `fmt` must agree with it, and
    chooses for other suffixes (default csv). No output (or "-"): stdout, which only the CLI streams to."""
    if not output or str(output) == "-":
        if fmt == "parquet":
            raise UsageError(spell("--format parquet needs --output (a .parquet file or a folder)", flags))
        return OutputPlan("stdout", fmt or "csv")
    if is_folder_output(output):
        if fmt not in (None, "parquet"):
            raise UsageError(spell(f"--output {output} is a folder (a Parquet dataset) but --format is {fmt}", flags))
        return OutputPlan("folder", "parquet", Path(output))
    implied = SUFFIX_FORMATS.get(Path(output).suffix.lower())
    if fmt and implied and fmt != implied:
        raise UsageError(spell(f"--format {fmt} contradicts --output {output} (a .{implied} file); drop one of them", flags))
    return OutputPlan("file", implied or fmt or "csv", Path(output))


def plan_embed_output(output: str | os.PathLike | None, flags: bool = False) -> OutputPlan:
    """emb.parquet, emb.npy (+ emb.files.txt) or a folder (Parquet dataset)."""
    if not output:
        raise UsageError(spell("--output is required: emb.parquet, emb.npy or a folder", flags))
    if is_folder_output(output):
        return OutputPlan("folder", "parquet", Path(output))
    suffix = Path(output).suffix.lower()
    if suffix not in (".parquet", ".npy"):
        raise UsageError(spell(f"--output must end with .parquet or .npy (or be a folder), got {Path(output).name}", flags))
    return OutputPlan("file", suffix[1:], Path(output))


def check_embed_output(plan: OutputPlan, predict_rank: str | None, flags: bool = False) -> None:
    if predict_rank and plan.fmt == "npy":
        raise UsageError(spell("--predict-rank adds columns: write a .parquet file or a folder, not .npy", flags))


def open_source(options: BatchOptions, flags: bool = False) -> Any:
    """The run's inputs as a `FileSource` or `DatasetSource` (blocks of `part_size` images).

    Raises:
        NoImagesError: no input is an existing image (its `errors` say why, input by input).
    """
    from bioclip_hf.inference.sources import DatasetSource, FileSource

    if options.part_size < 1:
        raise UsageError(spell(f"--part-size must be >= 1, got {options.part_size}", flags))
    if options.dataset:
        if options.images or options.files:
            raise UsageError(spell("--dataset cannot be combined with image paths or --files", flags))
        return DatasetSource(str(options.dataset), options.split, options.image_column, options.id_column,
                             options.dataset_config, block_size=options.part_size)  # fmt: skip
    if not options.images and not options.files:
        raise UsageError(spell("no inputs: give image files or folders, --files LIST or --dataset NAME", flags))
    source = FileSource.from_inputs(options.images, options.files, options.file_column, block_size=options.part_size)
    if not len(source):
        raise NoImagesError(f"no images found in {' '.join(options.images or [str(options.files)])}", source.errors)
    return source


class BatchRun:
    """One batch run, planned before any model loads (so bad options and a clash with earlier parts fail fast):
    its output plan, its inputs, and this process's place among the processes.

    Args:
        options: inputs and output (see `BatchOptions`).
        command: "predict" or "embed" (decides the output formats allowed and is recorded with the parts).
        state: from `batch.process_state()` (default: read from the launcher's environment).
        plan: an output plan made already (default: from `options.output` and `options.format`).
        flags: name options by their command-line flags in errors (the CLI's spelling).

    Every process of a multi-process run makes the same `BatchRun`; build each process's classifier on
    `run.state.device(None)` (its own GPU).

    Example:
        >>> run = BatchRun(BatchOptions(dataset="owner/photos", id_column="uuid", output="emb/"), "embed")  # doctest: +SKIP
        >>> run.embed(BaseClassifier(device=run.state.device(None)), embedding_dtype="float16")  # doctest: +SKIP
    """

    def __init__(self, options: BatchOptions, command: str = "predict", state: Any = None,
                 plan: OutputPlan | None = None, flags: bool = False):  # fmt: skip
        from bioclip_hf.inference.batch import process_state

        if command not in ("predict", "embed"):
            raise ValueError(f"command must be 'predict' or 'embed', got {command!r}")
        self.options, self.command, self.flags = options, command, flags
        if command == "embed" and options.format is not None:
            raise UsageError(spell("--format applies to predict; embed's format follows --output (.parquet, .npy)", flags))
        if plan is None:
            predicts = command == "predict"
            plan = plan_predict_output(options.output, options.format, flags) if predicts else plan_embed_output(options.output, flags)
        if plan.kind == "stdout":
            raise UsageError(spell("--output is required: a batch run writes its parts beside it", flags))
        if options.push_to_hub is not None and str(options.push_to_hub).count("/") != 1:
            raise UsageError(spell(f"--push-to-hub needs 'owner/name', got {options.push_to_hub!r}", flags))
        self.plan = plan
        self.state = state if state is not None else process_state()
        self.source = open_source(options, flags)

    def check_resume(self, run_options: Mapping[str, Any]) -> dict[str, Any]:
        """What identifies this run (command, `run_options`, inputs, part size); refuses (ValueError naming the
        option) to mix it with another run's parts, or, with `resume=False`, to touch earlier parts at all."""
        from bioclip_hf.inference.batch import check_resume, run_file
        from bioclip_hf.inference.parquet import list_parts

        if not self.options.resume and (run_file(self.plan.parts).is_file() or list_parts(self.plan.parts)):
            raise FileExistsError(f"{self.plan.parts} holds parts of an earlier run and resume is off: "
                                  "remove them or resume")  # fmt: skip
        run = {"command": self.command, "options": dict(run_options), "inputs": self.source.fingerprint(),
               "block_size": self.source.block_size}  # fmt: skip
        check_resume(self.plan.parts, run, flags=self.flags)
        return run

    def predict(self, classifier: Any, k: int | None = 5, run_options: Mapping[str, Any] | None = None,
                **predict_options: Any) -> BatchResult:  # fmt: skip
        """Records of `classifier.predict(images, k=k, **predict_options)` for every input, in input order.

        Args:
            classifier: a `TreeOfLifeClassifier`, `CustomLabelsClassifier` or `FewShotClassifier`.
            k: predictions per image (None: all).
            run_options: what identifies the run for resuming (default: `describe_run`).
            **predict_options: `rank` and `min_prob` for Tree-of-Life predictions.
        """
        k = 2**31 - 1 if k is None else k
        if k < 1:
            raise ValueError(spell(f"--k must be >= 1, got {k}", self.flags))
        options = classifier._check_options(**predict_options)  # rank names (or pybioclip's Rank) -> "species"...
        key_column = self.source.key_column
        columns = [key_column_name(column, key_column) for column in record_columns(classifier, **options)]
        identity = describe_run(classifier, k=k, **options) if run_options is None else run_options
        return self.run(classifier, prediction_rows(classifier, k, options, key_column), identity, columns)

    def embed(self, embedder: Any, normalize: bool = True, embedding_dtype: str = "float32",
              predict_rank: str | None = None, run_options: Mapping[str, Any] | None = None) -> BatchResult:  # fmt: skip
        """An embedding (float32 or float16) per readable input; with `predict_rank` (a `TreeOfLifeClassifier`
        embedder) also each image's top prediction at that rank (lineage, taxon, score columns)."""
        from bioclip_hf.treeoflife.taxonomy import check_rank

        check_embed_output(self.plan, predict_rank, self.flags)
        if embedding_dtype not in EMBEDDING_DTYPES:
            raise ValueError(spell(f"--embedding-dtype must be one of {', '.join(EMBEDDING_DTYPES)}, got {embedding_dtype!r}", self.flags))
        if predict_rank is not None:
            if not hasattr(embedder, "index"):
                raise TypeError(f"predict_rank needs a TreeOfLifeClassifier, got {type(embedder).__name__}")
            predict_rank = check_rank(predict_rank)
        to_table = embedding_rows(embedder, self.source.key_column, embedding_dtype, predict_rank)
        identity = run_options
        if identity is None:
            identity = describe_run(embedder, normalize=normalize, embedding_dtype=embedding_dtype, predict_rank=predict_rank)
        return self.run(embedder, to_table, identity, normalize=normalize)

    def run(self, classifier: Any, to_table: Callable[[list[Any], Any], Any], run_options: Mapping[str, Any],
            columns: Sequence[str] = (), normalize: bool = True) -> BatchResult:  # fmt: skip
        """Run (or resume) this process's blocks, then, on the main process, merge, list errors and push.

        Args:
            to_table: (keys of the readable images, `[b, D]` float32 features) -> a `pyarrow.Table` of rows.
            run_options: what identifies the run (a resumed run must repeat them); stored in the output's metadata.
            columns: the header of CSV/table outputs when no row was written.
        """
        from bioclip_hf.inference.batch import run_blocks

        run = self.check_resume(run_options)
        metadata = output_metadata(self.command, classifier, run["options"])
        run_blocks(classifier, self.source, self.plan.parts, to_table, run, metadata, self.state, normalize,
                   progress=self.options.progress)  # fmt: skip
        if not self.state.is_main:
            return BatchResult(0, [], 0)
        return self._finish(metadata, columns)

    def _finish(self, metadata: Mapping[str, Any], columns: Sequence[str]) -> BatchResult:
        """Check every part is there, write the output and the error list, push; remove merged parts."""
        import bioclip_hf.inference.parquet as parts_io
        from bioclip_hf.inference.records import stream_records
        from bioclip_hf.utils.io import atomic_path

        plan, source = self.plan, self.source
        parts = parts_io.list_parts(plan.parts)
        parts_io.check_complete(parts, source.num_blocks)
        part_errors, part_images = parts_io.part_totals(parts)
        errors = [{"key": error["file"], "error": error["error"]} for error in source.errors] + part_errors
        if plan.kind == "folder":
            rows = parts_io.write_manifest(plan.path, parts, {"metadata": metadata, "inputs": source.fingerprint()})
        elif plan.fmt == "parquet":
            rows = parts_io.merge_parquet(parts, plan.path, metadata)
        elif plan.fmt == "npy":
            rows = parts_io.merge_npy(parts, plan.path, key_column=source.key_column)
        else:
            with atomic_path(plan.path) as tmp:
                rows = stream_records(parts_io.iter_records(parts), plan.fmt, str(tmp), columns)
        errors_file = parts_io.write_errors(plan.errors, errors, source.key_column)
        url = None
        if self.options.push_to_hub:
            from bioclip_hf.inference.publish import push_parts

            url = push_parts(parts, self.options.push_to_hub, metadata, errors, source.key_column,
                             private=self.options.private)  # fmt: skip
        if plan.kind == "file" and not self.options.keep_parts:
            shutil.rmtree(plan.parts, ignore_errors=True)
        skipped = [{"file": str(error["key"]), "error": error["error"]} for error in errors]
        return BatchResult(rows, skipped, len(source.errors) + part_images, plan.path, errors_file, url)


def predict_batch(classifier: Any, options: BatchOptions, k: int | None = 5, **predict_options: Any) -> BatchResult:
    """`BatchRun(options, "predict").predict(classifier, k, **predict_options)`: a resumable prediction run.

    Example:
        >>> predict_batch(TreeOfLifeClassifier(), BatchOptions(["photos/"], output="out.csv"), rank="genus")  # doctest: +SKIP
    """
    return BatchRun(options, "predict").predict(classifier, k, **predict_options)


def embed_batch(embedder: Any, options: BatchOptions, normalize: bool = True, embedding_dtype: str = "float32",
                predict_rank: str | None = None) -> BatchResult:  # fmt: skip
    """`BatchRun(options, "embed").embed(...)`: a resumable embedding run (`embedder`: any classifier).

    Example:
        >>> embed_batch(BaseClassifier(), BatchOptions(["photos/"], output="emb.parquet"))  # doctest: +SKIP
    """
    return BatchRun(options, "embed").embed(embedder, normalize, embedding_dtype, predict_rank)


def describe_run(classifier: Any, **settings: Any) -> dict[str, Any]:
    """What identifies a run's output by default: the classifier's kind, model, revision, record keys, encoder
    precision, labels or classes, index size, and the call's `settings` (a resumed run must match all of them)."""
    dtype = getattr(classifier, "autocast_dtype", None)
    info: dict[str, Any] = {"classifier": type(classifier).__name__, "model": classifier.model_name,
                            "revision": classifier.model_revision, "record_keys": classifier.record_keys,
                            "dtype": str(dtype).removeprefix("torch.") if dtype is not None else "float32"}  # fmt: skip
    quantize = getattr(getattr(classifier, "precision", None), "quantize", None)
    if quantize:  # only when set: runs from before quantization existed still resume
        info["quantize"] = quantize
    for name in ("labels", "bins", "classes"):
        value = getattr(classifier, name, None)
        if value is not None:
            info[name] = dict(value) if isinstance(value, Mapping) else list(value)
    index = getattr(classifier, "index", None)
    if index is not None:  # a subset shows as fewer taxa
        info["index"] = {"taxa": len(index), **{key: index.metadata[key] for key in ("repo_id", "commit")
                                                if key in getattr(index, "metadata", {})}}  # fmt: skip
    return {**info, **settings}


def output_metadata(command: str, classifier: Any, run_options: Mapping[str, Any]) -> dict[str, Any]:
    """Model, revision and options stored in every Parquet file's metadata (and the pushed dataset's card)."""
    from bioclip_hf import __version__

    config = classifier.model.config
    return {"command": command, "model": classifier.model_name, "revision": classifier.model_revision,
            "commit": getattr(config, "_commit_hash", None), "projection_dim": int(config.projection_dim),
            "bioclip_hf_version": __version__, "options": dict(run_options)}  # fmt: skip


def record_columns(classifier: Any, rank: str | None = None, **_options: Any) -> list[str]:
    """The record keys of `classifier`'s predictions, in order (the header of an output without rows)."""
    from bioclip_hf.inference.classify import FewShotClassifier, taxon_record
    from bioclip_hf.inference.pybioclip_format import pybioclip_columns
    from bioclip_hf.treeoflife.taxonomy import Taxon

    pybioclip = classifier.record_keys == "pybioclip"
    if hasattr(classifier, "index"):  # Tree-of-Life
        rank = rank or "species"
        return pybioclip_columns(rank) if pybioclip else list(taxon_record("", rank, Taxon(), 0.0))
    columns = pybioclip_columns(None) if pybioclip else ["file", "label", "score"]
    return columns + ["distance"] if isinstance(classifier, FewShotClassifier) else columns


def prediction_rows(classifier: Any, k: int, options: Mapping[str, Any], key_column: str = "file") -> Callable[..., Any]:
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
    becomes the source's key column ("index" or the dataset's id column)."""
    if column == "file" or (column == "file_name" and key_column != "file"):
        return key_column
    return column


def embedding_rows(embedder: Any, key_column: str, dtype: str = "float32",
                   predict_rank: str | None = None) -> Callable[..., Any]:  # fmt: skip
    """(keys, features) -> a pyarrow Table of (key, embedding) rows, plus the top prediction at `predict_rank`."""
    from bioclip_hf.inference.parquet import embeddings_table

    def to_table(keys: list[Any], features: Any) -> Any:
        table = embeddings_table(keys, key_column, features.cpu().numpy(), dtype)
        return with_top_prediction(table, embedder, features, predict_rank) if predict_rank else table

    return to_table


def with_top_prediction(table: Any, classifier: Any, features: Any, rank: str) -> Any:
    """`table` plus the columns of each image's top-1 prediction at `rank` (its record minus file and rank)."""
    import torch

    unit = torch.nn.functional.normalize(features, dim=-1)  # normalize=False keeps raw features in the table only
    records = {record["file"]: record for record in classifier.predict_features(range(len(unit)), unit, 1, rank=rank)}
    for name in [c for c in next(iter(records.values())) if c not in ("file", "rank")] if records else []:
        table = table.append_column(name, [[records.get(i, {}).get(name) for i in range(len(unit))]])
    return table


__all__ = ["BatchOptions", "BatchResult", "BatchRun", "NoImagesError", "OutputPlan", "embed_batch", "predict_batch"]
