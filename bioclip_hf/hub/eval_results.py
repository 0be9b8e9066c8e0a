"""A benchmark suite run's results in the Hub's two formats: the card's `model-index` and `.eval_results/*.yaml`.

- `suite_model_index(results)`: `huggingface_hub.EvalResult`s for the card metadata (every task: its score; species
  tasks also their few-shot accuracy; Camera Trap each subset as a dataset config).
- `suite_eval_result_entries(results)` / `write_eval_results(folder, results)`: the Hub's per-repo eval results
  files (`.eval_results/<task>.yaml`, `huggingface_hub.EvalResultEntry` format). Each entry points at its benchmark
  dataset on the Hub, so only tasks with a Hub dataset (Rare Species, IDLE-OO Camera Traps) get a file; the others
  live in the `model-index` only.

`results` is what `bioclip_hf.evaluation.suite_run.run_suite` returns (JSON-ready); this module reads it only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

EVAL_RESULTS_DIR = ".eval_results"


def is_suite_results(results: Any) -> bool:
    """Whether `results` come from a suite run (`bioclip-hf evaluate --suite bioclip-2`), not the BioCLIP 1 harness."""
    return isinstance(results, dict) and bool(results.get("suite")) and isinstance(results.get("tasks"), dict)


def _percent(value: Any) -> float:
    return round(100 * float(value), 2)


def few_shot_top1(unit: dict[str, Any]) -> dict[int, float]:
    """k -> SimpleShot top-1 (fraction) of a species unit (keys "<k>_shot_top1" of its few_shot metrics)."""
    few = unit.get("few_shot") or {}
    found = {}
    for key, value in few.items():
        shots, _, rest = key.partition("_shot_")
        if rest == "top1" and shots.isdigit():
            found[int(shots)] = float(value)
    return dict(sorted(found.items()))


def _species_metrics(entry: dict[str, Any]) -> list[tuple[str, str, str, float, str | None]]:
    """(task_type, task_name, metric_name, value, config) rows of a species task: zero-shot top-1, few-shot top-1."""
    text = entry.get("text_type")
    units = entry.get("subsets") or {None: entry}
    rows = []
    for unit_name, unit in units.items():
        config = unit_name.split("/", 1)[1] if unit_name else None
        rows.append(("zero-shot-image-classification", "Zero-shot classification",
                     f"zero-shot top-1 ({text} text, 81 templates)", _percent(unit["zero_shot"]["zero_shot_top1"]), config))  # fmt: skip
        for shots, value in few_shot_top1(unit).items():
            rows.append(("image-classification", f"{shots}-shot classification",
                         f"{shots}-shot top-1 (SimpleShot)", _percent(value), config))  # fmt: skip
    if entry.get("subsets"):
        rows.append(("zero-shot-image-classification", "Zero-shot classification",
                     f"zero-shot top-1, mean of {len(units)} subsets ({text} text)", round(entry["score"], 2), None))  # fmt: skip
    return rows


def suite_model_index(results: dict[str, Any]) -> list[Any]:
    """`huggingface_hub.EvalResult`s (the card's `model-index`) for a suite run.

    Example:
        >>> [r.metric_value for r in suite_model_index(json.load(open("suite.json")))][:1]  # doctest: +SKIP
        [74.9]
    """
    from huggingface_hub import EvalResult

    if not is_suite_results(results):
        raise ValueError("expected suite results (bioclip-hf evaluate --suite ...) with 'suite' and 'tasks'")
    entries = []
    for name, entry in results["tasks"].items():
        common = {"dataset_type": entry.get("benchmark_dataset") or name, "dataset_name": entry.get("title") or name,
                  "metric_type": "accuracy" if entry.get("group") == "species" else "score"}  # fmt: skip
        if entry.get("group") == "species":
            for task_type, task_name, metric, value, config in _species_metrics(entry):
                entries.append(EvalResult(task_type=task_type, task_name=task_name, metric_name=metric,
                                          metric_value=value, dataset_config=config, **common))  # fmt: skip
        else:
            entries.append(EvalResult(task_type="image-classification", task_name=entry.get("protocol", name),
                                      metric_name=entry.get("metric", "score"), metric_value=round(entry["score"], 2),
                                      **common))  # fmt: skip
    return entries


def suite_eval_result_entries(results: dict[str, Any]) -> dict[str, list[Any]]:
    """Per task with a Hub benchmark dataset: its `huggingface_hub.EvalResultEntry`s (values in %).

    task_id: "zero_shot" (Camera Trap: the mean of its subsets; "zero_shot/<subset>" each) and
    "few_shot_<k>" (SimpleShot top-1).
    """
    from huggingface_hub import EvalResultEntry

    if not is_suite_results(results):
        raise ValueError("expected suite results (bioclip-hf evaluate --suite ...) with 'suite' and 'tasks'")
    files: dict[str, list[Any]] = {}
    for name, entry in results["tasks"].items():
        dataset = entry.get("benchmark_dataset")
        if not dataset or entry.get("group") != "species":
            continue
        notes = (f"{results['suite']} suite protocol (bioclip-hf): {entry.get('text_type')} class texts through the "
                 f"81 OpenAI templates; few-shot: SimpleShot; model {results['model']}")  # fmt: skip

        values = {"zero_shot": round(entry["score"], 2)}
        for unit_name, unit in (entry.get("subsets") or {}).items():
            values[f"zero_shot/{unit_name.split('/', 1)[1]}"] = _percent(unit["zero_shot"]["zero_shot_top1"])
        units = list((entry.get("subsets") or {"": entry}).values())
        for shots in few_shot_top1(units[0]):
            values[f"few_shot_{shots}"] = round(sum(_percent(few_shot_top1(u)[shots]) for u in units) / len(units), 2)
        files[name] = [EvalResultEntry(dataset_id=dataset, task_id=task_id, value=value, date=results.get("date"),
                                       notes=notes) for task_id, value in values.items()]  # fmt: skip
    return files


def write_eval_results(folder: str | os.PathLike, results: dict[str, Any]) -> list[Path]:
    """Write `<folder>/.eval_results/<task>.yaml` for each task with a Hub benchmark dataset; returns the paths.

    Example:
        >>> write_eval_results("staged", json.load(open("suite.json")))  # doctest: +SKIP
        [PosixPath('staged/.eval_results/rare_species.yaml')]
    """
    import yaml
    from huggingface_hub import eval_result_entries_to_yaml

    from bioclip_hf.utils.io import atomic_write_bytes

    written = []
    for name, entries in suite_eval_result_entries(results).items():
        path = Path(folder) / EVAL_RESULTS_DIR / f"{name}.yaml"
        text = yaml.safe_dump(eval_result_entries_to_yaml(entries), sort_keys=False, allow_unicode=True)
        atomic_write_bytes(path, text.encode("utf-8"))
        written.append(path)
    return written


def read_eval_results(folder: str | os.PathLike) -> dict[str, list[Any]]:
    """The `.eval_results/*.yaml` files of a local repo folder, parsed: file stem -> `EvalResultEntry`s."""
    import yaml
    from huggingface_hub import parse_eval_result_entries

    found = {}
    for path in sorted((Path(folder) / EVAL_RESULTS_DIR).glob("*.yaml")):
        found[path.stem] = parse_eval_result_entries(yaml.safe_load(path.read_text(encoding="utf-8")) or [])
    return found


def suite_card_table(results: dict[str, Any]) -> str:
    """Markdown for the card: the published comparison (rendered by the run) and the few-shot numbers."""
    lines = [results.get("comparison", {}).get("markdown", "")]
    species = {n: e for n, e in results["tasks"].items() if e.get("group") == "species"}
    shots = sorted({k for e in species.values() for u in (e.get("subsets") or {"": e}).values() for k in few_shot_top1(u)})
    if species and shots:
        lines.append("Few-shot top-1 (%, SimpleShot, mean ± std over folds; Camera Trap: mean of its subsets):\n")
        lines.append("| Task | " + " | ".join(f"{k}-shot" for k in shots) + " |")
        lines.append("|---|" + "---|" * len(shots))
        for entry in species.values():
            units = list((entry.get("subsets") or {"": entry}).values())
            cells = []
            for k in shots:
                found = [(u["few_shot"].get(f"{k}_shot_top1"), u["few_shot"].get(f"{k}_shot_top1_std", 0.0)) for u in units]
                if all(mean is not None for mean, _ in found):
                    cells.append(f"{100 * sum(m for m, _ in found) / len(found):.1f} ± {100 * sum(s for _, s in found) / len(found):.1f}")
                else:
                    cells.append("–")
            lines.append(f"| {entry.get('title')} | " + " | ".join(cells) + " |")
    return "\n".join(lines).strip() + "\n"
