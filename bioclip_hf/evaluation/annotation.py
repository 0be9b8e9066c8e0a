"""Read a BioCLIP 2 task's images and annotation rows: a local folder in BioCLIP 2's annotation layout or the Hub.

The annotation layout (github.com/Imageomics/bioclip-2, `data/annotation/*/metadata.csv`): one CSV row per image,
`filepath` relative to the folder (or to a subset's image folder), `class`, and optional lineage columns
`kingdom,phylum,cls,order,family,genus,species,common_name` (`cls` is the taxonomic class: `class` is the label).
A leading unnamed column (pandas' saved index, as in those files) is dropped. Tasks beyond species add the columns
their protocol reads. Hub tasks: `imageomics/rare-species` through `datasets` (columns renamed to the layout), and
`imageomics/IDLE-OO-Camera-Traps`, whose `<subset>-balanced.csv` files are annotation files over `data/test/<subset>/`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bioclip_hf.evaluation.suite import Subset, SuiteTask

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("filepath",)


class TaskDataMissing(FileNotFoundError):
    """A task's data is not there; the message (one line) says where to get it."""


@dataclass
class TaskImages:
    """One scored unit of a task (the task itself, or one of its subsets): images in order and their annotation rows.

    Args:
        name: task name, or "task/subset".
        images: per example, a file path (str) or the encoded image bytes (what `decode_image` reads).
        rows: per example, its annotation row (column -> string; "" where empty).
        root: the folder the rows' filepaths are relative to (None for images held as bytes).
        source: where the data was read from (folder or Hub id), for the results.
    """

    name: str
    images: list[Any]
    rows: list[dict[str, str]]
    root: Path | None
    source: str
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def fingerprint(self) -> str:
        """Hash of what the image features depend on: each image's identity (path, size, mtime; or bytes), in order."""
        digest = hashlib.sha256()
        for image in self.images:
            if isinstance(image, (bytes, bytearray)):
                digest.update(b"b" + hashlib.sha1(image).digest())
            else:
                stat = Path(image).stat()
                digest.update(f"f{image}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()


def _missing(task: SuiteTask, what: str) -> TaskDataMissing:
    where = task.download or "see evals/README.md"
    return TaskDataMissing(f"task {task.name}: {what}; get it from {where}")


def _annotation_rows(task: SuiteTask, table_path: Path) -> list[dict[str, str]]:
    """The rows of an annotation CSV, pandas' saved index column dropped; checks the required columns."""
    import pandas as pd

    table = pd.read_csv(table_path, dtype=str, keep_default_na=False)
    first = str(table.columns[0]) if len(table.columns) else ""
    if first == "" or first.startswith("Unnamed:"):  # pandas' saved index, as in BioCLIP 2's metadata.csv files
        table = table.drop(columns=table.columns[0])
    absent = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if absent:
        raise ValueError(f"{table_path}: missing column(s) {absent} (has {', '.join(map(str, table.columns))})")
    return table.to_dict("records")


def read_annotation(task: SuiteTask, folder: str | Path, metadata: str, images: str = ".", name: str = "") -> TaskImages:
    """Rows of an annotation CSV and the images they list (paths checked to exist).

    A task beyond species whose folder has no annotation CSV is read in its dataset's own layout
    (`bioclip_hf.evaluation.native_layouts`).

    Args:
        task: the task (its name and download hint go into errors).
        folder: the task's data folder.
        metadata: CSV path relative to `folder` (or absolute).
        images: folder the CSV's `filepath`s are relative to, relative to `folder`.
        name: name of this scored unit (default: the task's).

    Example:
        >>> part = read_annotation(load_suite().task("nabirds"), "data/nabirds", "metadata.csv")  # doctest: +SKIP
    """
    from bioclip_hf.evaluation.native_layouts import native_rows

    folder = Path(folder).expanduser()
    table_path = folder / metadata
    if table_path.is_file():
        rows = _annotation_rows(task, table_path)
    else:
        rows = native_rows(task.protocol, folder) if folder.is_dir() else None
        if rows is None:
            raise _missing(task, f"annotation file {table_path} not found")
        table_path = folder  # named in the messages below
    if not rows:
        raise ValueError(f"{table_path}: no rows")
    # filepaths are relative to the image folder; a CSV that names the subset folder too (or the whole path from
    # the task folder) is read as well: the first base holding the first image wins
    bases = list(dict.fromkeys((folder / images, (folder / images).parent, folder)))
    root = next((b for b in bases if (b / rows[0]["filepath"]).is_file()), bases[0]).resolve()
    paths = [str(root / row["filepath"]) for row in rows]
    lost = [p for p in paths if not Path(p).is_file()]
    if lost:
        raise _missing(task, f"{len(lost)} of {len(paths)} image(s) listed in {table_path} are missing (first: {lost[0]})")
    return TaskImages(name or task.name, paths, rows, root, str(folder))


def _hub_dataset_rows(task: SuiteTask) -> TaskImages:
    """A Hub dataset read through `datasets`, its columns renamed to the annotation layout by `hub_columns`."""
    import datasets

    try:
        dataset = datasets.load_dataset(task.hub_dataset, split=task.hub_split)
    except (OSError, ValueError, ConnectionError) as err:  # unreachable Hub, not cached, no such split
        raise _missing(task, f"Hub dataset {task.hub_dataset} could not be read ({str(err).splitlines()[0]})") from None
    image_column = next((n for n, f in dataset.features.items() if isinstance(f, datasets.Image)), None)
    if image_column is None:
        raise ValueError(f"Hub dataset {task.hub_dataset}: no image column (columns: {dataset.column_names})")
    absent = sorted(set(task.hub_columns.values()) - set(dataset.column_names))
    if absent:
        raise ValueError(f"Hub dataset {task.hub_dataset}: missing column(s) {absent} (has {dataset.column_names})")
    refs = dataset.cast_column(image_column, datasets.Image(decode=False))[image_column]
    images = [r["path"] if r.get("path") and Path(r["path"]).is_file() else r["bytes"] for r in refs]
    table = dataset.remove_columns(image_column).to_dict()
    rows = []
    for i, ref in enumerate(refs):
        row = {ours: _text(table[theirs][i]) for ours, theirs in task.hub_columns.items()}
        row.setdefault("filepath", ref.get("path") or str(i))
        rows.append(row)
    return TaskImages(task.name, images, rows, None, task.hub_dataset)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _hub_snapshot(task: SuiteTask) -> Path:
    """Local copy (HF cache) of the files of a Hub dataset repo that the task's subsets read."""
    from huggingface_hub import snapshot_download

    patterns = [p for s in task.subsets for p in (s.metadata, f"{s.images.rstrip('/')}/*")]
    try:
        return Path(snapshot_download(task.hub_dataset, repo_type="dataset", allow_patterns=patterns))
    except (OSError, ValueError) as err:  # huggingface_hub's HTTP / offline errors derive from these
        raise _missing(task, f"Hub dataset {task.hub_dataset} could not be read ({str(err).splitlines()[0]})") from None


def check_local_data(task: SuiteTask) -> None:
    """Raise TaskDataMissing when a task read from a local folder has no folder or no annotation file there
    (cheap: run before loading a model); Hub tasks are checked when read."""
    from bioclip_hf.evaluation.native_layouts import READERS

    if task.uses_hub:
        return
    if task.data_dir is None:
        raise _missing(task, "no local data folder given (--data-dir DIR or --data-root DIR with DIR/" + task.name + ")")
    folder = Path(task.data_dir).expanduser()
    if not folder.is_dir():
        raise _missing(task, f"data folder {folder} not found")
    needed = [s.metadata for s in task.subsets] or [task.metadata]
    native = READERS.get(task.protocol, ("\0",))[0]
    if not all((folder / n).is_file() for n in needed) and not (folder / native).exists():
        raise _missing(task, f"annotation file {folder / needed[0]} not found")


def load_task_images(task: SuiteTask) -> list[TaskImages]:
    """The task's scored units: its subsets (each from its CSV) or the task itself; raises TaskDataMissing.

    Local folders (`task.data_dir`) are read in the annotation layout; Hub tasks from the Hub (or the HF cache).

    Example:
        >>> [part.name for part in load_task_images(load_suite().task("camera_trap"))]  # doctest: +SKIP
        ['camera_trap/desert-lion', 'camera_trap/ENA24', ...]
    """
    if task.uses_hub and not task.subsets:
        return [_hub_dataset_rows(task)]
    check_local_data(task)
    folder = _hub_snapshot(task) if task.uses_hub else Path(task.data_dir).expanduser()
    source = task.hub_dataset if task.uses_hub else str(folder)
    subsets = task.subsets or [Subset(task.name, task.metadata)]
    parts = []
    for subset in subsets:
        unit = f"{task.name}/{subset.name}" if task.subsets else task.name
        part = read_annotation(task, folder, subset.metadata, subset.images, name=unit)
        part.source = source
        parts.append(part)
    logger.info("%s: %s", task.name, ", ".join(f"{p.name} {len(p)} images" for p in parts))
    return parts
