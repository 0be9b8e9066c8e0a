"""Hub cards rendered from the template files in `templates/` with huggingface_hub's `ModelCard` / `DatasetCard`.

- `build_model_card`: BioCLIP checkpoints (`model_card.md`, a link to the repository's top-level `model_card.md`).
  Its metadata (library, pipeline tag, base model, datasets, license) and `model-index` come from a
  `ModelCardData`; evaluation results come from a results JSON written by the harness (`bioclip-hf evaluate`).
- `build_results_card`: a batch run's embeddings / predictions published as a dataset (`results_card.md`).
- `build_dataset_card`: TreeOfLife-style WebDataset shards from `dataset_scripts/` (`dataset_card.md`).

The templates ship in the package (package-data `hub/templates/*.md`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).parent / "templates"
TEMPLATE_PATH = TEMPLATES_DIR / "model_card.md"
RESULTS_TEMPLATE_PATH = TEMPLATES_DIR / "results_card.md"
DATASET_TEMPLATE_PATH = TEMPLATES_DIR / "dataset_card.md"
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
    if not template.is_file():  # before reading the results: a wrong template is the first thing to report
        raise FileNotFoundError(f"model card template not found: {template}")
    results = load_eval_results(eval_results)
    from bioclip_hf.hub.eval_results import is_suite_results, suite_card_table, suite_model_index

    suite = is_suite_results(results)  # a suite run (--suite bioclip-2): its own metrics and the published comparison
    eval_entries = (suite_model_index(results) if suite else eval_results_from_harness(results)) if results else None
    card_data = ModelCardData(
        library_name="transformers", pipeline_tag="zero-shot-image-classification", base_model=info.base_model,
        datasets=info.datasets or None, license=info.license, tags=info.tags or None, language=["en"],
        model_name=info.model_name, eval_results=eval_entries or None,
    )  # fmt: skip
    table = eval_table(results) if results and not suite else ""
    templates = results.get("config", {}).get("templates") if results else None
    return render_card(
        ModelCard, card_data, template, repo_id=info.repo_id, model_name=info.model_name, model_summary=info.summary,
        has_open_clip=info.has_open_clip, eval_table=table, index_path=info.index_path,
        eval_templates='the template "a photo of {}."' if templates == "single" else None,
        eval_suite=results.get("suite") if suite else None, eval_suite_table=suite_card_table(results) if suite else "",
    )  # fmt: skip


def render_card(card_class: Any, card_data: Any, template: str | os.PathLike, **fields: Any) -> Any:
    """`card_class.from_template` (ModelCard / DatasetCard): the Jinja `template` filled with `card_data` and `fields`.

    The template's `{{ card_data }}` becomes the YAML header. Jinja drops a template's final newline; the card
    keeps it, so the README ends like its template.
    """
    template = Path(template)
    if not template.is_file():
        raise FileNotFoundError(f"{card_class.repo_type} card template not found: {template}")
    card = card_class.from_template(card_data, template_path=str(template), **fields)
    if template.read_text(encoding="utf-8").endswith("\n") and not card.text.endswith("\n"):
        card.text += "\n"
    return card


def build_results_card(repo_id: str, metadata: Mapping[str, Any], columns: Sequence[str], rows: int, images: int,
                       files: int, errors: int, template_path: str | os.PathLike | None = None) -> Any:  # fmt: skip
    """Dataset card (a `huggingface_hub.DatasetCard`) of a batch run published with `--push-to-hub`.

    Args:
        repo_id: the dataset repo ("owner/name").
        metadata: the run's metadata: `command`, `model`, `revision` or `commit`, `options`.
        columns: columns of the Parquet files; an `embedding` column makes it an embeddings dataset.
        rows, images, files, errors: rows written, images read, Parquet files, unreadable images.
        template_path: Jinja template (default: the bundled `results_card.md`).

    Example:
        >>> str(build_results_card("me/emb", {"model": "imageomics/bioclip"}, ["file", "embedding"], 9, 10, 1, 1))  # doctest: +SKIP
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    embeds = "embedding" in columns
    tags = ["bioclip", "biology", "tree-of-life"] + (["embeddings"] if embeds else ["predictions"])
    data = DatasetCardData(tags=tags, configs=[{"config_name": "default",
                                                "data_files": [{"split": "train", "path": "data/*.parquet"}]}])  # fmt: skip
    model = str(metadata.get("model", ""))
    is_hub_model = "/" in model and not Path(model).exists()
    return render_card(
        DatasetCard, data, Path(template_path) if template_path else RESULTS_TEMPLATE_PATH,
        title=repo_id.split("/")[-1], what="Image embeddings" if embeds else "Predictions", images=images,
        command=str(metadata.get("command", "embed")), model=model,
        model_url=f"https://huggingface.co/{model}" if is_hub_model else model,
        revision=metadata.get("revision") or metadata.get("commit"), rows=rows, files=files, columns=list(columns),
        errors=errors, repo_id=repo_id, options=json.dumps(metadata.get("options", {}), indent=2, default=str),
    )  # fmt: skip


def build_dataset_card(metadata: Mapping[str, Any], name: str, repo_id: str, license: str, num_samples: int,
                       splits: Mapping[str, int], num_shards: int, shard_size: int, num_skipped: int,
                       skipped: Mapping[str, int], template_path: str | os.PathLike | None = None) -> Any:  # fmt: skip
    """Dataset card (a `huggingface_hub.DatasetCard`) of TreeOfLife-style WebDataset shards (`dataset_scripts/`).

    Args:
        metadata: the YAML header (license, task_categories, size_categories, configs, dataset_info, ...).
        name: dataset title.
        repo_id: Hub id shown in the usage snippets.
        license: license id named in the text.
        num_samples, splits: samples in all, per split.
        num_shards, shard_size: number of tar files, most samples in one.
        num_skipped, skipped: catalog rows skipped while building, in all and per reason.
        template_path: Jinja template (default: the bundled `dataset_card.md`).

    Example:
        >>> build_dataset_card(meta, "my-tol", "me/my-tol", "cc0-1.0", 9, {"train": 9}, 1, 9, 0, {}).save("README.md")  # doctest: +SKIP
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    return render_card(
        DatasetCard, DatasetCardData(**metadata), Path(template_path) if template_path else DATASET_TEMPLATE_PATH,
        name=name, repo_id=repo_id, license=license, num_samples=num_samples, splits=dict(sorted(splits.items())),
        num_shards=num_shards, shard_size=shard_size, num_skipped=num_skipped, skipped=dict(skipped),
    )  # fmt: skip


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
