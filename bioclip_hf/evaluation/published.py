"""Published numbers of a suite (`suites/<suite>/published.yaml`, each value with its source) beside ours.

`comparison(results)` pairs a suite run's per-task score with the published BioCLIP, BioCLIP 2, BioCAP and
BioCLIP 2.5 numbers (null where none was published) and the difference to one reference model: the published row of
the model evaluated when it is one of them, else BioCLIP 2. `comparison_table` renders it as markdown (the console
output of `bioclip-hf evaluate --suite bioclip-2` and the model card's table).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bioclip_hf.evaluation.suite import SUITES_DIR

DEFAULT_REFERENCE = "bioclip-2"
MEAN_ROWS = {"species": "mean_species", "beyond_species": "mean_beyond_species"}


@dataclass
class PublishedTable:
    """Published per-task numbers (%) of a suite.

    Args:
        models: model key -> {"title", "hub"} (column order of the comparison).
        tasks: task (or mean row) -> model key -> (value, source key), or None when unpublished.
        sources: source key -> {"url", "where"}.
        notes: model key -> remark (e.g. why its numbers are missing).

    Example:
        >>> load_published("bioclip-2").value("nabirds", "bioclip-2")
        74.9
    """

    models: dict[str, dict[str, str]]
    tasks: dict[str, dict[str, tuple[float, str] | None]]
    sources: dict[str, dict[str, str]]
    notes: dict[str, str]

    def value(self, task: str, model: str) -> float | None:
        cell = self.tasks.get(task, {}).get(model)
        return None if cell is None else float(cell[0])

    def source_url(self, task: str, model: str) -> str | None:
        cell = self.tasks.get(task, {}).get(model)
        return None if cell is None else self.sources[cell[1]]["url"]

    def model_for(self, model_id: str) -> str | None:
        """The published model key whose Hub id is `model_id` (an `hf-hub:` prefix is ignored)."""
        model_id = str(model_id).removeprefix("hf-hub:").strip("/")
        return next((key for key, m in self.models.items() if m.get("hub") == model_id), None)


def load_published(suite: str = "bioclip-2", path: str | Path | None = None) -> PublishedTable:
    """Read and check a published table (every non-null cell is `[value, source]` with a known source).

    Example:
        >>> sorted(load_published().models)
        ['biocap', 'bioclip', 'bioclip-2', 'bioclip-2.5']
    """
    import yaml

    path = Path(path) if path else SUITES_DIR / suite / "published.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no published table for suite {suite!r}: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    sources, models = data.get("sources", {}), data.get("models", {})
    tasks: dict[str, dict[str, tuple[float, str] | None]] = {}
    for task, cells in data.get("tasks", {}).items():
        tasks[task] = {}
        for model, cell in cells.items():
            if model not in models:
                raise ValueError(f"{path}: task {task}: unknown model {model!r}")
            if cell is not None and (len(cell) != 2 or cell[1] not in sources):
                raise ValueError(f"{path}: task {task}, {model}: expected [value, source key], got {cell!r}")
            tasks[task][model] = None if cell is None else (float(cell[0]), str(cell[1]))
    return PublishedTable(models, tasks, sources, data.get("notes", {}))


def _group_mean(results: dict[str, Any], names: list[str]) -> float | None:
    scores = [results["tasks"].get(n, {}).get("score") for n in names]
    return None if not names or any(s is None for s in scores) else round(sum(scores) / len(scores), 2)


def comparison(results: dict[str, Any], table: PublishedTable | None = None) -> dict[str, Any]:
    """Per task (then per group mean): our score next to each published model's, and ours minus the reference's.

    Args:
        results: a suite run's results (`bioclip_hf.evaluation.suite_run.run_suite`).
        table: the published table (default: the suite's).

    Returns {"reference": model key, "models": [...], "rows": [{"task", "title", "ours", "published": {model:
    value | None}, "sources": {model: url | None}, "delta": ours - reference | None}], "sources": {...}}.

    Example:
        >>> comparison(results)["rows"][0]["delta"]  # doctest: +SKIP
        -1.3
    """
    table = table or load_published(results.get("suite", "bioclip-2"))
    reference = table.model_for(results.get("model", "")) or DEFAULT_REFERENCE
    selected = results.get("selected") or list(results["tasks"])  # skipped tasks stay in the table, ours "–"
    titles = results.get("titles", {})
    entries = [(n, results["tasks"].get(n, {}).get("title") or titles.get(n, n), results["tasks"].get(n, {}).get("score"))
               for n in selected]  # fmt: skip
    for group, names in results.get("groups", {}).items():
        if group in MEAN_ROWS and any(n in selected for n in names):
            entries.append((MEAN_ROWS[group], f"Mean ({group.replace('_', ' ')})", _group_mean(results, names)))
    rows = []
    for name, title, ours in entries:
        published = {m: table.value(name, m) for m in table.models}
        ref = published.get(reference)
        rows.append({"task": name, "title": title, "ours": ours, "published": published,
                     "sources": {m: table.source_url(name, m) for m in table.models},
                     "delta": None if ours is None or ref is None else round(ours - ref, 2)})  # fmt: skip
    return {"reference": reference, "models": list(table.models), "titles": {k: v["title"] for k, v in table.models.items()},
            "rows": rows, "sources": table.sources, "notes": table.notes}  # fmt: skip


def comparison_table(compared: dict[str, Any]) -> str:
    """Markdown: task | ours | each published model | Δ vs the reference; "–" where a number is unknown.

    Example:
        >>> print(comparison_table(comparison(results)))  # doctest: +SKIP
    """

    def cell(value: float | None, signed: bool = False) -> str:
        return "–" if value is None else (f"{value:+.1f}" if signed else f"{value:.1f}")

    titles = compared["titles"]
    header = ["Task", "Ours"] + [titles[m] for m in compared["models"]] + [f"Δ vs {titles[compared['reference']]}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in compared["rows"]:
        cells = [row["title"], cell(row["ours"])] + [cell(row["published"][m]) for m in compared["models"]]
        lines.append("| " + " | ".join(cells + [cell(row["delta"], signed=True)]) + " |")
    sources = "; ".join(f"{s['url']}" for s in compared["sources"].values())
    return "\n".join(lines) + f"\n\nPublished numbers (%): {sources} (– : not published).\n"
