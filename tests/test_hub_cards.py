"""Model card rendering from model_card.md with ModelCardData, model-index from harness results, executed snippet."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from bioclip_hf.hub.cards import CardInfo, build_model_card, eval_results_from_harness

RESULTS = {
    "model": "tiny", "config": {"templates": "openai"},
    "tasks": {
        "rare_species": {"title": "Rare Species", "dataset": "imageomics/rare-species", "split": "train",
                         "num_examples": 12000, "num_classes": 400,
                         "zero_shot": {"taxonomic": {"top1_accuracy": 0.2812}, "common": {"top1_accuracy": 0.301}},
                         "few_shot": {"1": {"top1_accuracy": 0.3, "top1_accuracy_std": 0.01, "seeds": [0, 1, 2, 3, 4]},
                                      "5": {"top1_accuracy": 0.45, "top1_accuracy_std": 0.02, "seeds": [0, 1, 2, 3, 4]}}},
        "birds525": {"title": "Birds 525", "dataset": None, "split": "train", "num_examples": 2625, "num_classes": 525,
                     "zero_shot": {"common": {"top1_accuracy": 0.5}}, "few_shot": {"5": {"skipped": "no queries"}}},
    },
}  # fmt: skip


def test_card_metadata_and_model_index():
    from huggingface_hub import ModelCard

    card = build_model_card(CardInfo("me/bioclip-ft", base_model="imageomics/bioclip"), RESULTS)
    reloaded = ModelCard(str(card))  # what the Hub would parse from README.md
    data = reloaded.data
    assert data.library_name == "transformers" and data.pipeline_tag == "zero-shot-image-classification"
    assert data.base_model == "imageomics/bioclip" and data.datasets == ["imageomics/TreeOfLife-10M"]
    assert data.license == "mit" and data.model_name == "bioclip-ft"
    got = {(r.dataset_type, r.task_type, r.metric_name): r.metric_value for r in data.eval_results}
    assert got == {
        ("imageomics/rare-species", "zero-shot-image-classification", "zero-shot top-1 (taxonomic text)"): 28.12,
        ("imageomics/rare-species", "zero-shot-image-classification", "zero-shot top-1 (common text)"): 30.1,
        ("imageomics/rare-species", "image-classification", "1-shot top-1 (SimpleShot, 5 seeds)"): 30.0,
        ("imageomics/rare-species", "image-classification", "5-shot top-1 (SimpleShot, 5 seeds)"): 45.0,
        ("birds525", "zero-shot-image-classification", "zero-shot top-1 (common text)"): 50.0,  # no Hub id: task name
    }
    assert all(r.dataset_split == "train" and r.metric_type == "accuracy" for r in data.eval_results)
    text = reloaded.text
    assert text.startswith("\n# bioclip-ft") or "# bioclip-ft\n" in text
    assert "| Rare Species | 12000 | 400 | 28.1 | 30.1 | 30.0 ± 1.0 | 45.0 ± 2.0 |" in text
    assert "| Birds 525 | 2625 | 525 | – | 50.0 | – | – |" in text
    assert "the 80 OpenAI templates" in text and "{{ " not in text and "{%" not in text  # all Jinja rendered


def test_card_without_results_has_no_model_index():
    card = build_model_card(CardInfo("me/plain", has_open_clip=False, license="apache-2.0", datasets=[]))
    assert "model-index" not in str(card) and "No evaluation results" in card.text
    assert card.data.license == "apache-2.0" and card.data.datasets is None
    assert "open_clip_model.safetensors" not in card.text


def test_card_input_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model card template not found"):
        build_model_card(CardInfo("me/x"), template_path=tmp_path / "missing.md")
    with pytest.raises(FileNotFoundError, match="eval results file not found"):
        build_model_card(CardInfo("me/x"), tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        build_model_card(CardInfo("me/x"), tmp_path / "bad.json")
    with pytest.raises(ValueError, match="'tasks' mapping"):
        eval_results_from_harness({"model": "x"})


def test_usage_snippet_runs_against_a_local_checkpoint(tiny_hf_dir, tmp_path, monkeypatch, capsys):
    card = build_model_card(CardInfo(str(tiny_hf_dir)))
    snippet = re.findall(r"```python\n(.*?)```", card.text, flags=re.S)[0]
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save("photo.jpg")
    exec(compile(snippet, "model_card.md", "exec"), {})
    probs = eval(capsys.readouterr().out.strip())
    assert len(probs) == 3 and sum(probs.values()) == pytest.approx(1.0, abs=0.01)  # printed to 3 decimals each


def test_harness_results_flow_into_the_card(tiny_model_and_processor, tmp_path):
    from support.images import make_image_folder

    from bioclip_hf.evaluation import harness
    from bioclip_hf.evaluation.tasks import TaskSpec

    root = make_image_folder(tmp_path / "data")
    model, processor = tiny_model_and_processor
    spec = TaskSpec(name="tiny_task", title="Tiny task", dataset=str(root), split="train")
    output = tmp_path / "results.json"
    harness.run("tiny", [spec], harness.EvalConfig(shots=(1,), seeds=2, templates="single"), output=output,
                model=model, processor=processor)  # fmt: skip
    results = json.loads(output.read_text())
    card = build_model_card(CardInfo("me/tiny"), output)
    values = {r.metric_name: r.metric_value for r in card.data.eval_results}
    task = results["tasks"]["tiny_task"]
    assert values["zero-shot top-1 (common text)"] == round(100 * task["zero_shot"]["common"]["top1_accuracy"], 2)
    assert values["1-shot top-1 (SimpleShot, 2 seeds)"] == round(100 * task["few_shot"]["1"]["top1_accuracy"], 2)
    assert 'the template "a photo of {}."' in card.text
