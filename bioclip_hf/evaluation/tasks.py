"""Benchmark task specs: one YAML file per task under `tasks/` in this package (the repository's evals/tasks; fields: evals/README.md)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
ALL_TEXT_TYPES = ("taxonomic", "scientific", "common", "taxonomic+common", "scientific+common")
# Taxon fields a task may fill from dataset columns; "scientific_name" (a binomial) fills genus + species.
TAXON_FIELDS = ("kingdom", "phylum", "class", "order", "family", "genus", "species", "common_name", "scientific_name")


@dataclass
class TaskSpec:
    """Where a benchmark's images, labels and class names come from.

    Args:
        name: short id (file stem of the YAML spec).
        title: display name for tables and the model card.
        dataset: Hub dataset id or local folder (image folder, optionally with a metadata CSV); None when the task
            must be given a local folder at run time (`data_dir`).
        split: split to score.
        config: Hub dataset config name, if any.
        image_column: column holding the images.
        label_column: column identifying the class (ClassLabel, string or int; may come from `metadata_file`).
        metadata_file: CSV (relative to a local dataset folder) with one row per image, joined to the images by
            relative path (or by file name) through `metadata_path_column`.
        metadata_path_column: the CSV column holding the image paths.
        taxon_columns: Taxon field (kingdom .. species, common_name, scientific_name) -> column giving it; the
            class name of `label_column` is available under that column's name.
        text_types: BioCLIP text types to score zero-shot (those a task cannot fill are skipped).
        support_split: split to draw few-shot support from (then every example of `split` is a query); by default
            the support comes from `split` itself and the rest of it is scored.
        source: where the data comes from (URL).
        paper_task: one of the BioCLIP paper's benchmark tasks.
        data_dir: local folder that replaces `dataset` (set at run time with --data-dir).

    Example:
        >>> spec = load_task("rare_species")
        >>> spec.dataset
        'imageomics/rare-species'
    """

    name: str
    title: str = ""
    dataset: str | None = None
    split: str = "test"
    config: str | None = None
    image_column: str = "image"
    label_column: str = "label"
    metadata_file: str | None = None
    metadata_path_column: str = "file"
    taxon_columns: dict[str, str] = field(default_factory=dict)
    text_types: list[str] = field(default_factory=lambda: list(ALL_TEXT_TYPES))
    support_split: str | None = None
    source: str = ""
    paper_task: bool = False
    data_dir: str | None = None

    def __post_init__(self) -> None:
        self.title = self.title or self.name
        if not self.taxon_columns:
            self.taxon_columns = {"common_name": self.label_column}
        unknown = sorted(set(self.taxon_columns) - set(TAXON_FIELDS))
        if unknown:
            raise ValueError(f"task {self.name}: unknown taxon_columns field(s) {unknown}; use {', '.join(TAXON_FIELDS)}")
        bad_types = [t for t in self.text_types if t not in ALL_TEXT_TYPES]
        if bad_types:
            raise ValueError(f"task {self.name}: unknown text type(s) {bad_types}; use {', '.join(ALL_TEXT_TYPES)}")

    @property
    def location(self) -> str:
        """The local folder or Hub id to read; raises when the task has neither."""
        where = self.data_dir or self.dataset
        if not where:
            raise ValueError(f"task {self.name} has no Hub dataset id: pass a local copy with --data-dir (source: {self.source})")
        return str(where)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def spec_from_mapping(spec_class: type, data: Any, name: str | None = None) -> Any:
    """Build a task-spec dataclass (`TaskSpec`, a suite task) from a parsed YAML mapping, naming unknown keys."""
    if not isinstance(data, dict):
        raise ValueError(f"task spec {name or ''} must be a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(spec_class)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"task spec {name or data.get('name')}: unknown key(s) {unknown}")
    data = {"name": name, **data} if name and "name" not in data else data
    if "name" not in data:
        raise ValueError("task spec has no 'name'")
    return spec_class(**data)


def task_from_dict(data: dict, name: str | None = None) -> TaskSpec:
    """Build a TaskSpec from a parsed YAML mapping, naming unknown keys in the error."""
    return spec_from_mapping(TaskSpec, data, name)


def load_task(name_or_path: str | Path) -> TaskSpec:
    """Load a task spec by name (a file in evals/tasks/) or from a YAML path.

    Example:
        >>> load_task("birds525").title
        'Birds 525'
    """
    import yaml

    path = Path(name_or_path)
    if not path.suffix:
        path = TASKS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no task spec {name_or_path!r} (known tasks: {', '.join(list_tasks())})")
    with path.open() as fh:
        data = yaml.safe_load(fh)
    return task_from_dict(data, name=path.stem)


def list_tasks() -> list[str]:
    """Names of the bundled task specs."""
    return sorted(p.stem for p in TASKS_DIR.glob("*.yaml"))
