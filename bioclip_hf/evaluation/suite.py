"""Benchmark suites as data: `suites/<suite>/suite.yaml` (task order, groups) and `suites/<suite>/tasks/*.yaml`.

The package links `suites/` to the repository's `evals/suites/`, so a wheel carries the specs (package-data).
Two suites exist: `bioclip` (BioCLIP 1's ten tasks: `bioclip_hf.evaluation.tasks`, run by `harness`) and
`bioclip-2` (BioCLIP 2's fifteen tasks: the specs here, run by `bioclip_hf.evaluation.suite_run`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bioclip_hf.evaluation.tasks import spec_from_mapping

SUITES_DIR = Path(__file__).resolve().parent / "suites"
SUITE_NAMES = ("bioclip", "bioclip-2")  # "bioclip" is BioCLIP 1's suite (evaluation/tasks, the harness)
SPECIES_PROTOCOL = "zero_shot+few_shot"
BEYOND_SPECIES_PROTOCOLS = ("fishnet", "newt", "awa2", "herbarium19", "plantdoc")
TEXT_TYPES = ("asis", "sci", "com", "taxon", "sci_com", "taxon_com")  # BioCLIP 2's naming_eval text types


@dataclass
class Subset:
    """One part of a task scored on its own (Camera Trap's five LILA subsets): its annotation file and image folder.

    Args:
        name: subset name (e.g. "ENA24").
        metadata: annotation CSV, relative to the task's data folder.
        images: folder the CSV's filepaths are relative to, relative to the task's data folder.
    """

    name: str
    metadata: str
    images: str = "."


@dataclass
class SuiteTask:
    """One BioCLIP 2 benchmark task: where its data comes from and how it is scored.

    Args:
        name: task id (file stem of the spec).
        title: display name.
        group: "species" (zero-/few-shot) or "beyond_species" (a task protocol).
        protocol: "zero_shot+few_shot" or one of fishnet, newt, awa2, herbarium19, plantdoc.
        text_type: BioCLIP 2 text type of the zero-shot class texts (asis, taxon_com, ...); None for the others.
        hub_dataset: Hub dataset id, when the data is on the Hub; else the task reads a local annotation folder.
        hub_split: split read through `datasets` (tasks whose Hub data is a `datasets` image folder).
        hub_columns: annotation column -> Hub dataset column (renames a Hub dataset into the annotation layout).
        metadata: the annotation CSV in the data folder (`filepath,class` + optional lineage columns).
        subsets: parts scored separately and averaged (each with its own CSV and image folder).
        download: where to get the data (named in the error / skip note when it is missing).
        shots, folds: few-shot k values and SimpleShot folds (BioCLIP 2: k = 1, 5 over 5 folds).
        data_dir: local folder replacing the Hub data (set at run time, `--data-dir` / `--data-root`).

    Example:
        >>> load_suite("bioclip-2").task("nabirds").text_type
        'asis'
    """

    name: str
    title: str = ""
    group: str = "species"
    protocol: str = SPECIES_PROTOCOL
    text_type: str | None = None
    hub_dataset: str | None = None
    hub_split: str = "train"
    hub_columns: dict[str, str] = field(default_factory=dict)
    metadata: str = "metadata.csv"
    subsets: list[Subset] = field(default_factory=list)
    download: str = ""
    shots: tuple[int, ...] = (1, 5)
    folds: int = 5
    data_dir: str | None = None

    def __post_init__(self) -> None:
        self.title = self.title or self.name
        self.subsets = [s if isinstance(s, Subset) else Subset(**s) for s in self.subsets]
        self.shots = tuple(int(k) for k in self.shots)
        if self.protocol not in (SPECIES_PROTOCOL, *BEYOND_SPECIES_PROTOCOLS):
            raise ValueError(f"task {self.name}: unknown protocol {self.protocol!r}; use {SPECIES_PROTOCOL} or "
                             f"{', '.join(BEYOND_SPECIES_PROTOCOLS)}")  # fmt: skip
        if self.protocol == SPECIES_PROTOCOL and self.text_type not in TEXT_TYPES:
            raise ValueError(f"task {self.name}: text_type must be one of {', '.join(TEXT_TYPES)}, got {self.text_type!r}")

    @property
    def is_species(self) -> bool:
        return self.protocol == SPECIES_PROTOCOL

    @property
    def uses_hub(self) -> bool:
        """Read from the Hub (no local folder given and the task has a Hub dataset)."""
        return self.data_dir is None and self.hub_dataset is not None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Suite:
    """A named, ordered list of task specs.

    Example:
        >>> [t.name for t in load_suite("bioclip-2").tasks][:2]
        ['nabirds', 'plankton']
    """

    name: str
    title: str
    tasks: list[SuiteTask]
    groups: dict[str, list[str]]
    folder: Path

    def task(self, name: str) -> SuiteTask:
        for task in self.tasks:
            if task.name == name:
                return task
        raise ValueError(f"suite {self.name} has no task {name!r} (tasks: {', '.join(t.name for t in self.tasks)})")

    def select(self, names: list[str] | None) -> list[SuiteTask]:
        """The tasks named (in the order given), or all of them."""
        return [self.task(n) for n in names] if names else list(self.tasks)


def _read_yaml(path: Path) -> Any:
    import yaml

    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def task_from_dict(data: dict[str, Any], name: str | None = None) -> SuiteTask:
    """A SuiteTask from a parsed YAML mapping; unknown keys are named in the error."""
    return spec_from_mapping(SuiteTask, data, name)


def load_suite(name: str = "bioclip-2") -> Suite:
    """Load a bundled suite (`suites/<name>/`): its tasks in the order of `suite.yaml`.

    Example:
        >>> len(load_suite("bioclip-2").tasks)
        15
    """
    folder = SUITES_DIR / name
    if not (folder / "suite.yaml").is_file():
        available = sorted(p.parent.name for p in SUITES_DIR.glob("*/suite.yaml"))
        raise ValueError(f"no task suite {name!r} (suites with specs: {', '.join(available)}; 'bioclip' is BioCLIP 1's)")
    meta = _read_yaml(folder / "suite.yaml")
    groups = meta.get("groups", {})
    order = [t for names in groups.values() for t in names]
    specs = {p.stem: task_from_dict(_read_yaml(p), name=p.stem) for p in sorted((folder / "tasks").glob("*.yaml"))}
    missing = [t for t in order if t not in specs]
    if missing:
        raise ValueError(f"suite {name}: suite.yaml names tasks without a spec: {missing}")
    tasks = [specs[t] for t in order] + [s for n, s in specs.items() if n not in order]
    return Suite(name=name, title=meta.get("title", name), tasks=tasks, groups=groups, folder=folder)
