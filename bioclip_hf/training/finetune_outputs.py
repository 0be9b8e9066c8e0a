"""What a fine-tune leaves behind: a normal bioclip-hf model folder that predicts its own classes.

`output_dir/` holds (written through one scratch folder and moved into place file by file, so a crash never leaves a
half-written file; `checkpoints/` and the TensorBoard `logs/` of the run stay beside them):
- the model and processor (`save_pretrained`; LoRA merged into the weights);
- `label_index/`: the fine-tune's own classes as a `TreeOfLifeIndex` (the convention of `hub.index_files.bundled_index`,
  so `bioclip-hf predict --model OUT` and the Space predict these classes with no extra flags);
- `open_clip_config.json` + `open_clip_model.safetensors` (for open_clip and pybioclip);
- `adapter/` (with `save_adapter`): the PEFT LoRA adapter, whose config names the base model and its commit;
- `results.json` (before/after accuracy, forgetting, data, hyper-parameters), `finetune_config.yaml` and `README.md`,
  the model card rendered from `hub/templates/finetune_card.md` (its `model-index` holds the results).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RESULTS_NAME = "results.json"
ADAPTER_DIR = "adapter"
CARD_NAME = "README.md"
RESULTS_FORMAT = "bioclip-hf-finetune/1"
_METHOD_TEXT = {
    "lora": "LoRA adapters (`peft`) on the attention projections of the {towers}, trained with the FLYP objective "
            "(each photo contrasted against the texts of all classes) and merged into the weights.",
    "full": "Full fine-tuning of every weight with the FLYP objective (each photo contrasted against the texts of all "
            "classes, the class texts re-encoded through the text tower at every step).",
    "head": "A linear classifier head initialised from the class-text embeddings (the zero-shot classifier) and "
            "trained on the frozen model; the trained head is the label index.",
}  # fmt: skip


def label_taxa(data: Any) -> list[Any]:
    """A `Taxon` per class: its lineage where known, else the label in the species slot (shown as the prediction)."""
    from bioclip_hf.treeoflife.taxonomy import Taxon

    return [cls.taxon if cls.taxon is not None else Taxon(species=cls.label) for cls in data.classes]


def build_label_index(data: Any, embeddings: Any, metadata: dict[str, Any]) -> Any:
    """The fine-tune's `TreeOfLifeIndex`: one entry per class, `embeddings` `[C, D]` (class prompts or trained head).

    Example:
        >>> index = build_label_index(data, class_embeddings(model, processor, data.class_texts()), {})  # doctest: +SKIP
    """
    from bioclip_hf.treeoflife.index import TreeOfLifeIndex

    meta = {**metadata, "labels": data.labels, "kind": "bioclip-hf-finetune label index"}
    return TreeOfLifeIndex(label_taxa(data), embeddings.detach().float().cpu(), meta)


def write_output(folder: str | Path, model: Any, processor: Any, index: Any, results: dict[str, Any], config: Any,
                 adapter_dir: Path | None = None) -> Path:  # fmt: skip
    """Write the output model folder (see the module docstring) and return it.

    Args:
        folder: the output folder (may already hold the run's checkpoints and logs).
        model, processor: the final (merged / interpolated) `BioCLIPModel` and its processor.
        index: the label index (`build_label_index`).
        results: the run's results (`results.json`, the card).
        config: the run's `FinetuneConfig` (saved as `finetune_config.yaml`).
        adapter_dir: a saved PEFT adapter to include as `adapter/`.
    """
    from bioclip_hf.hub.index_files import BUNDLED_INDEX_DIR
    from bioclip_hf.models.convert import export_to_open_clip
    from bioclip_hf.training.finetune_config import FINETUNE_CONFIG_NAME
    from bioclip_hf.utils.io import atomic_directory

    folder = Path(folder)
    with atomic_directory(folder) as scratch:
        model.save_pretrained(scratch, safe_serialization=True)
        processor.save_pretrained(scratch)
        index.save(scratch / BUNDLED_INDEX_DIR)
        if config.open_clip_copy:
            export_to_open_clip(model, scratch, processor=processor)
        if adapter_dir is not None:
            shutil.copytree(adapter_dir, scratch / ADAPTER_DIR)
        config.save_yaml(scratch / FINETUNE_CONFIG_NAME)
        card = build_finetune_card(results, config, repo_id=config.push_to_hub or str(folder),
                                   has_open_clip=config.open_clip_copy, has_adapter=adapter_dir is not None)  # fmt: skip
        card.save(str(scratch / CARD_NAME))
        (scratch / RESULTS_NAME).write_text(json.dumps(results, indent=2, default=str) + "\n")
    logger.info("wrote the fine-tuned model to %s", folder)
    return folder


# -- the card -----------------------------------------------------------------------------------------
def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def held_out_table(held_out: dict[str, Any]) -> str:
    """Markdown rows of top-1 / top-5 / per-rank accuracy (%): before, after and the change."""
    before, after = held_out.get("before"), held_out.get("after")
    if not before or not after:
        return ""
    names = [k for k in after if k.endswith("_accuracy")]
    lines = ["| metric | before (base, zero-shot) | after (fine-tuned) | change |", "|---|---|---|---|"]
    for name in names:
        label = name[: -len("_accuracy")].replace("top", "top-")
        change = f"{100 * (after[name] - before[name]):+.1f}" if name in before else "–"
        lines.append(f"| {label} | {_percent(before.get(name))} | {_percent(after[name])} | {change} |")
    return "\n".join(lines) + "\n"


def forgetting_table(forgetting: dict[str, Any]) -> str:
    """Markdown rows of the reference task(s): top-1 (%) before, after and the change; "" when not measured."""
    if not forgetting.get("measured"):
        return ""
    lines = ["| task | before | after | change |", "|---|---|---|---|"]
    detail = forgetting["detail"]
    for task in forgetting["tasks"]:
        scores = [[v for k, v in detail[when][task].items() if k != "num_examples"] for when in ("before", "after")]
        before, after = (sum(s) / len(s) if s else None for s in scores)
        change = f"{100 * (after - before):+.1f}" if before is not None and after is not None else "–"
        lines.append(f"| {task} | {_percent(before)} | {_percent(after)} | {change} |")
    return "\n".join(lines) + "\n"


def _eval_results(results: dict[str, Any]) -> list[Any]:
    """`huggingface_hub.EvalResult`s for the card's `model-index`: held-out top-1/top-5 before and after, forgetting."""
    from huggingface_hub import EvalResult

    entries = []
    dataset = _hub_dataset(results["data"]) or "labelled-photos"
    held_out = results.get("held_out") or {}
    for when, title in (("before", "base model, zero-shot"), ("after", "fine-tuned")):
        for name, value in (held_out.get(when) or {}).items():
            if name in ("top1_accuracy", "top5_accuracy"):
                entries.append(EvalResult(
                    task_type="image-classification", task_name="Classification of the fine-tune's classes",
                    dataset_type=dataset, dataset_name="held-out photos", dataset_split="validation",
                    metric_type="accuracy", metric_name=f"{name[:3]}-{name[3]} accuracy ({title})",
                    metric_value=round(100 * value, 2)))  # fmt: skip
    forgetting = results.get("forgetting") or {}
    if forgetting.get("measured"):
        for when in ("before", "after"):
            entries.append(EvalResult(
                task_type="zero-shot-image-classification", task_name="Forgetting (reference task)",
                dataset_type=",".join(forgetting["tasks"]), dataset_name=",".join(forgetting["tasks"]),
                metric_type="accuracy", metric_name=f"zero-shot top-1 ({when} fine-tuning)",
                metric_value=round(100 * forgetting[when], 2)))  # fmt: skip
    return entries


def _is_hub_id(value: str | None) -> bool:
    from bioclip_hf.hub.access import is_repo_id

    return bool(value) and is_repo_id(str(value))


def _hub_dataset(data: dict[str, Any]) -> str | None:
    """The Hub dataset the fine-tune was trained on (None for local folders and tables)."""
    given = data.get("data")
    return given if data.get("kind") == "dataset" and _is_hub_id(given) else None


def build_finetune_card(results: dict[str, Any], config: Any, repo_id: str, has_open_clip: bool = True,
                        has_adapter: bool = False) -> Any:  # fmt: skip
    """The fine-tune's model card (`huggingface_hub.ModelCard`) from `hub/templates/finetune_card.md`.

    Example:
        >>> build_finetune_card(json.load(open("out/results.json")), config, "me/fish").save("README.md")  # doctest: +SKIP
    """
    from huggingface_hub import ModelCard, ModelCardData

    from bioclip_hf.hub.cards import TEMPLATES_DIR, render_card

    base, data = results["base_model"], results["data"]
    base_id = base.get("id") or ""
    card_data = ModelCardData(
        library_name="transformers", pipeline_tag="zero-shot-image-classification", license=None,
        base_model=base_id if _is_hub_id(base_id) else None, datasets=[_hub_dataset(data)] if _hub_dataset(data) else None,
        tags=["clip", "biology", "bioclip-hf", "fine-tuned", results["method"]], model_name=repo_id.rstrip("/").split("/")[-1],
        eval_results=_eval_results(results) or None,
    )  # fmt: skip
    towers = "vision and text towers" if config.lora_text else "vision tower"
    classes = data.get("classes") or []
    class_list = ", ".join(map(str, classes[:50])) + (f", … ({len(classes) - 50} more)" if len(classes) > 50 else "")
    link = f"[{base_id}](https://huggingface.co/{base_id})" if _is_hub_id(base_id) else f"`{base_id}`"
    return render_card(
        ModelCard, card_data, TEMPLATES_DIR / "finetune_card.md", model_name=card_data.model_name, repo_id=repo_id,
        base_id=base_id, base_link=link, base_commit=base.get("commit"), num_classes=data["num_classes"], data=data,
        class_list=class_list or "–", method_name=results["method"], prompt_template=config.template,
        method_text=_METHOD_TEXT[results["method"]].format(towers=towers), hyperparameters=results["hyperparameters"],
        held_out_table=held_out_table(results.get("held_out") or {}),
        forgetting_table=forgetting_table(results.get("forgetting") or {}), has_open_clip=has_open_clip,
        has_adapter=has_adapter, open_clip_name=f"hf-hub:{repo_id}" if _is_hub_id(repo_id) else f"local-dir:{repo_id}",
    )  # fmt: skip


# -- publishing ---------------------------------------------------------------------------------------
def push_output(folder: str | Path, repo_id: str, private: bool = False) -> str:
    """Upload the output folder (not its checkpoints) to the Hub model repo `repo_id`; returns the commit URL."""
    from bioclip_hf.hub.upload import upload

    folder = Path(folder)
    files = {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*"))
             if p.is_file() and p.relative_to(folder).parts[0] not in ("checkpoints",)
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)}  # fmt: skip
    commit = upload(repo_id, files=files, private=private, commit_message="Upload a fine-tune made with bioclip-hf finetune")
    return str(commit.commit_url)


__all__ = ["ADAPTER_DIR", "RESULTS_NAME", "build_finetune_card", "build_label_index", "forgetting_table",
           "held_out_table", "label_taxa", "push_output", "write_output"]  # fmt: skip
