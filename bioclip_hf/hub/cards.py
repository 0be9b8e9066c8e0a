"""Model cards for BioCLIP checkpoints: the `model_card.md` template rendered with huggingface_hub.

The template ships in the package (`templates/model_card.md`, a link to the repository's top-level `model_card.md`).
The card's metadata (library, pipeline tag, base model, datasets, license) and its `model-index` come from a
`ModelCardData`; evaluation results come from a results JSON written by the harness (`bioclip-hf evaluate`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TEMPLATE_PATH = Path(__file__).parent / "templates" / "model_card.md"
TEXT_TYPES_IN_CARD = ("taxonomic", "scientific", "common", "taxonomic+common", "scientific+common")


@dataclass
class CardInfo:
    """What the card says about a checkpoint.

    Args:
        repo_id: the Hub repo the card describes (used in the usage snippets).
        model_name: display name (default: the repo name).
        base_model: the checkpoint this one was trained or converted from.
        datasets: Hub dataset ids of the training data.
        license: SPDX-style license id.
        tags: extra Hub tags.
        has_open_clip: the repo also holds an open_clip copy of the weights.
        summary: first paragraph of the card (default: a generic BioCLIP description).
        index_path: Tree-of-Life index to name in the CLI snippet, if any.

    Example:
        >>> CardInfo("me/bioclip-finetune").model_name
        'bioclip-finetune'
    """

    repo_id: str
    model_name: str | None = None
    base_model: str | None = "imageomics/bioclip"
    datasets: list[str] = field(default_factory=lambda: ["imageomics/TreeOfLife-10M"])
    license: str = "mit"
    tags: list[str] = field(default_factory=lambda: ["clip", "biology", "zero-shot-image-classification", "taxonomy"])
    has_open_clip: bool = True
    summary: str | None = None
    index_path: str | None = None

    def __post_init__(self) -> None:
        self.model_name = self.model_name or self.repo_id.rstrip("/").split("/")[-1]


def eval_results_from_harness(results: dict[str, Any]) -> list[Any]:
    """`huggingface_hub.EvalResult`s for a harness results dict: zero-shot top-1 per text type, few-shot top-1.

    Tasks without a Hub dataset id use the task name as `dataset_type`. Skipped few-shot runs are left out.

    Example:
        >>> eval_results_from_harness(json.load(open("eval_results.json")))[0].metric_type  # doctest: +SKIP
        'accuracy'
    """
    from huggingface_hub import EvalResult

    if not isinstance(results, dict) or not isinstance(results.get("tasks"), dict):
        raise ValueError("eval results must be a harness results JSON with a 'tasks' mapping")
    entries = []
    for name, task in results["tasks"].items():
        common = {"dataset_type": task.get("dataset") or name, "dataset_name": task.get("title") or name,
                  "dataset_split": task.get("split"), "metric_type": "accuracy"}  # fmt: skip
        for text_type, metrics in task.get("zero_shot", {}).items():
            if "top1_accuracy" in metrics:
                entries.append(EvalResult(task_type="zero-shot-image-classification", task_name="Zero-shot classification",
                                          metric_name=f"zero-shot top-1 ({text_type} text)",
                                          metric_value=round(100 * metrics["top1_accuracy"], 2), **common))  # fmt: skip
        for shots, metrics in sorted(task.get("few_shot", {}).items(), key=lambda kv: int(kv[0])):
            if "top1_accuracy" in metrics:
                entries.append(EvalResult(task_type="image-classification", task_name=f"{shots}-shot classification",
                                          metric_name=f"{shots}-shot top-1 (SimpleShot, {len(metrics.get('seeds', []))} seeds)",
                                          metric_value=round(100 * metrics["top1_accuracy"], 2), **common))  # fmt: skip
    return entries


def load_eval_results(source: str | os.PathLike | dict | None) -> dict[str, Any] | None:
    """A harness results dict from a dict or a JSON path (None passes through)."""
    if source is None or isinstance(source, dict):
        return source
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"eval results file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def build_model_card(info: CardInfo, eval_results: str | os.PathLike | dict | None = None,
                     template_path: str | os.PathLike | None = None) -> Any:  # fmt: skip
    """Render the model card (a `huggingface_hub.ModelCard`) from the template, metadata and eval results.

    Args:
        info: what to say about the checkpoint.
        eval_results: harness results (dict or JSON path) for the `model-index` and the results table.
        template_path: Jinja template (default: the bundled `model_card.md`).

    Example:
        >>> card = build_model_card(CardInfo("me/bioclip-ft"), "eval_results.json")  # doctest: +SKIP
        >>> card.save("out/README.md")  # doctest: +SKIP
    """
    from huggingface_hub import ModelCard, ModelCardData

    template = Path(template_path) if template_path else TEMPLATE_PATH
    if not template.is_file():
        raise FileNotFoundError(f"model card template not found: {template}")
    results = load_eval_results(eval_results)
    eval_entries = eval_results_from_harness(results) if results else None
    card_data = ModelCardData(
        library_name="transformers", pipeline_tag="zero-shot-image-classification", base_model=info.base_model,
        datasets=info.datasets or None, license=info.license, tags=info.tags or None, language=["en"],
        model_name=info.model_name, eval_results=eval_entries or None,
    )  # fmt: skip
    table = eval_table(results) if results else ""
    templates = results.get("config", {}).get("templates") if results else None
    card = ModelCard.from_template(
        card_data, template_path=str(template), repo_id=info.repo_id, model_name=info.model_name, model_summary=info.summary,
        has_open_clip=info.has_open_clip, eval_table=table, index_path=info.index_path,
        eval_templates='the template "a photo of {}."' if templates == "single" else None,
    )  # fmt: skip
    return card


def eval_table(results: dict[str, Any]) -> str:
    """Markdown table of harness results: a row per task; zero-shot top-1 per text type, few-shot top-1 mean ± std.

    Example:
        >>> print(eval_table(json.load(open("eval_results.json"))))  # doctest: +SKIP
    """
    rows = []
    tasks = results["tasks"]
    text_types = [t for t in TEXT_TYPES_IN_CARD if any(t in task.get("zero_shot", {}) for task in tasks.values())]
    shots = sorted({int(k) for task in tasks.values() for k in task.get("few_shot", {})})
    header = ["Task", "Images", "Classes"] + [f"Zero-shot ({t})" for t in text_types] + [f"{k}-shot" for k in shots]
    rows.append("| " + " | ".join(header) + " |")
    rows.append("|" + "---|" * len(header))
    for name, task in tasks.items():
        cells = [task.get("title") or name, str(task.get("num_examples", "")), str(task.get("num_classes", ""))]
        for t in text_types:
            value = task.get("zero_shot", {}).get(t, {}).get("top1_accuracy")
            cells.append("–" if value is None else f"{100 * value:.1f}")
        for k in shots:
            run = task.get("few_shot", {}).get(str(k), {})
            cells.append(f"{100 * run['top1_accuracy']:.1f} ± {100 * run['top1_accuracy_std']:.1f}"
                         if "top1_accuracy" in run else "–")  # fmt: skip
        rows.append("| " + " | ".join(cells) + " |")
    return "Top-1 accuracy (%).\n\n" + "\n".join(rows) + "\n"
