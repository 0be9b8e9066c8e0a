"""bioclip_hf.evaluation (evals/): local evaluate metrics, task specs, and the zero-/few-shot harness."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.images import CLASSES, PER_CLASS, make_image_folder

from bioclip_hf.cli import main as cli_main
from bioclip_hf.evaluation import harness
from bioclip_hf.evaluation.data import load_task_data
from bioclip_hf.evaluation.tasks import TASKS_DIR, TaskSpec, list_tasks, load_task, task_from_dict

REPO = Path(__file__).resolve().parents[1]

LINEAGE_COLUMNS = {r: r for r in ("kingdom", "phylum", "class", "order", "family", "genus", "species")}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = make_image_folder(tmp_path_factory.mktemp("generated"))
    spec = TaskSpec(name="generated", dataset=str(root), split="train", metadata_file="labels.csv",
                    taxon_columns={**LINEAGE_COLUMNS, "common_name": "common"})  # fmt: skip
    return root, spec


# -- metrics -------------------------------------------------------------------------------------------------------
def test_metrics_load_offline_from_local_paths(monkeypatch):
    import evaluate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    top_k = evaluate.load(str(harness.METRICS_DIR / "top_k_accuracy"))
    result = top_k.compute(predictions=[[2, 0, 1], [0, 1, 2], [1, 2, 0]], references=[0, 2, 1], k=[1, 2, 3])
    assert result == {"top1_accuracy": pytest.approx(1 / 3), "top2_accuracy": pytest.approx(2 / 3), "top3_accuracy": 1.0}
    with pytest.raises(ValueError, match="ranks only 2 classes but k=5"):
        top_k.compute(predictions=[[0, 1]], references=[0], k=[1, 5])

    taxonomic = evaluate.load(str(harness.METRICS_DIR / "taxonomic_accuracy"))
    raven = ["Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "corax"]
    magpie = ["Animalia", "Chordata", "Aves", "Passeriformes", "Corvidae", "Pica", "pica"]
    rose = ["Plantae", "Tracheophyta", "Magnoliopsida", "Rosales", "Rosaceae", "Rosa", "canina"]
    homonym = ["Plantae", "Chordata", "Aves", "Passeriformes", "Corvidae", "Corvus", "corax"]  # wrong kingdom only
    result = taxonomic.compute(predictions=[raven, magpie, rose, homonym], references=[raven, raven, raven, raven])
    assert result["kingdom_accuracy"] == 0.5  # raven, magpie right; rose, homonym wrong
    assert result["family_accuracy"] == 0.5 and result["genus_accuracy"] == 0.25 and result["species_accuracy"] == 0.25
    # the homonym matches below kingdom but is wrong at every rank: the lineage must match from the top
    partial = taxonomic.compute(predictions=[["", "", "", "", "", "Corvus", "corax"]],
                                references=[["", "", "", "", "", "Corvus", "cornix"]])  # fmt: skip
    assert partial == {"genus_accuracy": 1.0, "species_accuracy": 0.0}  # unnamed ranks are not scored


# -- task specs ----------------------------------------------------------------------------------------------------
def test_bundled_task_specs():
    names = list_tasks()
    paper = ["birds525", "plankton", "insects", "insects2", "plantnet", "fungi", "plantvillage", "medicinal_leaf",
             "plantdoc", "rare_species"]  # fmt: skip
    assert sorted(paper) == names
    specs = {name: load_task(name) for name in names}
    assert all(spec.paper_task and spec.source.startswith("https://") for spec in specs.values())
    assert specs["rare_species"].dataset == "imageomics/rare-species"
    assert specs["birds525"].taxon_columns == {"common_name": "common_name", "scientific_name": "scientific_name"}
    with pytest.raises(ValueError, match="no Hub dataset id: pass a local copy with --data-dir"):
        _ = specs["plankton"].location
    # uncertain Hub ids are flagged in the YAML, not invented
    for name in paper[1:9]:
        text = (TASKS_DIR / f"{name}.yaml").read_text()
        assert "UNCERTAIN" in text and specs[name].dataset is None


def test_package_resources_are_the_repository_folders():
    """One source of truth: the package's tasks/, metrics/ and card template are links to evals/ and model_card.md."""
    from bioclip_hf.hub.cards import TEMPLATE_PATH

    assert TASKS_DIR.resolve() == (REPO / "evals" / "tasks").resolve()
    assert harness.METRICS_DIR.resolve() == (REPO / "evals" / "metrics").resolve()
    assert TEMPLATE_PATH.resolve() == (REPO / "model_card.md").resolve()


def test_task_spec_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="known tasks: birds525"):
        load_task("no_such_task")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['labels'\]"):
        task_from_dict({"name": "x", "labels": "y"})
    with pytest.raises(ValueError, match="unknown text type"):
        TaskSpec(name="x", text_types=["latin"])
    with pytest.raises(ValueError, match="unknown taxon_columns field"):
        TaskSpec(name="x", taxon_columns={"tribe": "t"})
    spec = TaskSpec(name="x", dataset=str(tmp_path / "missing_folder"))
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        load_task_data(spec)


# -- data loading --------------------------------------------------------------------------------------------------
def test_load_generated_image_folder_with_metadata_join(generated):
    root, spec = generated
    data = load_task_data(spec)
    assert len(data) == len(CLASSES) * PER_CLASS
    assert data.class_names == sorted(CLASSES)
    for name, taxon in zip(data.class_names, data.taxa):
        lineage, common, _ = CLASSES[name]
        assert taxon.ranks() == lineage and taxon.common_name == common
    assert all(Path(data.images[i]).parent.name == data.class_names[label] for i, label in enumerate(data.labels))
    small = load_task_data(spec, max_classes=2, max_per_class=3)
    assert small.class_names == sorted(CLASSES)[:2] and len(small) == 6

    bad = TaskSpec(name="bad", dataset=str(root), split="train", metadata_file="labels.csv", metadata_path_column="path")
    with pytest.raises(KeyError, match="no column 'path'"):
        load_task_data(bad)


# -- harness -------------------------------------------------------------------------------------------------------
@pytest.mark.float_sensitive
def test_zero_shot_matches_direct_model_scores(generated, tiny_model_and_processor):
    import torch

    model, processor = tiny_model_and_processor
    _, spec = generated
    data = load_task_data(spec)
    features = harness.image_features(model, processor, data.images, batch_size=5)
    results = harness.zero_shot(model, processor, features, data, ["scientific", "common"], templates="single")
    assert set(results) == {"scientific", "common"}
    texts = [f"a photo of {taxon.scientific_name}." for taxon in data.taxa]
    with torch.no_grad():
        inputs = processor(text=texts, images=[Image.open(p) for p in data.images])
        logits = model(**inputs).logits_per_image
    expected = logits.argmax(dim=-1).numpy()
    # The harness embeds in other batches, which changes rounding (~1e-6 on these logits) but no argmax: no image
    # has its top two classes within 1e-4 (so the comparison below holds on any CPU).
    top2 = logits.topk(2, dim=-1).values
    assert (top2[:, 0] - top2[:, 1]).min() > 1e-4
    top1 = float((expected == np.array(data.labels)).mean())
    assert results["scientific"]["top1_accuracy"] == pytest.approx(top1)
    for metrics in results.values():  # per-rank accuracy never rises going down the tree
        ranks = [metrics[f"{r}_accuracy"] for r in ("kingdom", "phylum", "class", "order", "family", "genus", "species")]
        assert ranks == sorted(ranks, reverse=True)
        assert metrics["species_accuracy"] == pytest.approx(metrics["top1_accuracy"])  # one class per species
        assert "top5_accuracy" not in metrics  # only 4 classes: top-5 would be trivially 1


def test_few_shot_simpleshot_protocol(generated, tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    data = load_task_data(generated[1])
    features = harness.image_features(model, processor, data.images)
    one = harness.few_shot(features, data, shots=1, seeds=5)
    assert one["seeds"] == [0, 1, 2, 3, 4] and len(one["per_seed"]) == 5
    # mean/std of the same 5 float64 values (rel=1e-6 is pytest's default; float64 rounding is ~1e-16)
    assert one["top1_accuracy"] == pytest.approx(np.mean([r["top1_accuracy"] for r in one["per_seed"]]))
    assert one["top1_accuracy_std"] == pytest.approx(np.std([r["top1_accuracy"] for r in one["per_seed"]]))
    five = harness.few_shot(features, data, shots=5, seeds=5)
    # colour-coded classes separate even with random weights: SimpleShot must find them
    assert five["top1_accuracy"] >= 0.9 and one["top1_accuracy"] > 1 / len(CLASSES)
    assert harness.few_shot(features, data, shots=PER_CLASS, seeds=2) == {
        "skipped": f"no query examples left: every class has <= {PER_CLASS} examples"}


def test_harness_cli_writes_json_and_table(generated, tiny_hf_dir, tmp_path, capsys):
    root, _ = generated
    output = tmp_path / "out" / "results.json"
    # an ad-hoc task: any local image folder, class = folder name (used as the common name)
    assert cli_main(["evaluate", "--model", str(tiny_hf_dir), "--data-dir", str(root), "--templates", "single",
                     "--shots", "1", "2", "--seeds", "3", "--output", str(output)]) == 0  # fmt: skip
    results = json.loads(output.read_text())
    task = results["tasks"][root.name]
    assert task["num_examples"] == 28 and task["num_classes"] == 4
    assert list(task["zero_shot"]) == ["common"]  # folder names only: the other text types are empty or duplicates
    assert set(task["few_shot"]) == {"1", "2"} and task["few_shot"]["2"]["seeds"] == [0, 1, 2]
    table = output.with_suffix(".md").read_text()
    assert table in capsys.readouterr().out
    zero = 100 * task["zero_shot"]["common"]["top1_accuracy"]
    assert f"| {root.name} | 28 | 4 | {zero:.1f} |" in table
    assert cli_main(["evaluate", "--model", str(tiny_hf_dir)]) == 2
    assert "give a task (one of: " in capsys.readouterr().err


def test_harness_reads_a_hub_dataset(hub_server, generated, tiny_model_and_processor, tmp_path):
    """A task whose `dataset` is a Hub id, served by the local Hub test server through `datasets`."""
    from huggingface_hub import HfApi

    root, _ = generated
    api = HfApi(token=hub_server.token)
    api.create_repo("tester/tiny-birds", repo_type="dataset")
    api.upload_folder(folder_path=str(root / "images"), path_in_repo="test", repo_id="tester/tiny-birds",
                      repo_type="dataset")  # fmt: skip
    spec = TaskSpec(name="hub", dataset="tester/tiny-birds", split="test")
    model, processor = tiny_model_and_processor
    result = harness.evaluate_task(model, processor, spec, harness.EvalConfig(shots=(3,), seeds=2, templates="single"))
    assert result["num_examples"] == 28 and result["num_classes"] == 4 and result["dataset"] == "tester/tiny-birds"
    assert result["few_shot"]["3"]["top1_accuracy"] >= 0.9


def test_harness_on_real_bird_photos(bird_photos, tiny_model_and_processor, tmp_path):
    """Birds 525 spec on ../shared/data/birds525 (10 classes); a random tiny model scores about chance zero-shot."""
    model, processor = tiny_model_and_processor
    spec = load_task("birds525")
    spec.data_dir = str(bird_photos[0].parents[2])
    config = harness.EvalConfig(templates="single", max_classes=10)
    results = harness.run("tiny", [spec], config, output=tmp_path / "birds.json", model=model, processor=processor)
    task = results["tasks"]["birds525"]
    assert task["num_examples"] == 50 and task["num_classes"] == 10
    assert set(task["zero_shot"]) == {"taxonomic", "common", "taxonomic+common"}  # scientific == taxonomic here
    for metrics in task["zero_shot"].values():
        assert 0 <= metrics["top1_accuracy"] <= metrics["top5_accuracy"] <= 1
        assert set(metrics) == {"top1_accuracy", "top5_accuracy", "genus_accuracy", "species_accuracy"}
    assert 0 <= task["few_shot"]["1"]["top1_accuracy"] <= 1
    assert "skipped" in task["few_shot"]["5"]  # 5 photos per class: nothing left to query
    data = load_task_data(spec, max_classes=2)
    assert [t.common_name for t in data.taxa] == ["Abbotts Babbler", "Abbotts Booby"]
    assert data.taxa[1].scientific_name == "Papasula abbotti"


def test_bioclip_hf_evaluate_command(generated, tiny_hf_dir, tmp_path, capsys):
    from bioclip_hf.cli import main

    root, _ = generated
    output = tmp_path / "cli.json"
    assert main(["evaluate", "--model", str(tiny_hf_dir), "--data-dir", str(root), "--templates", "single",
                 "--shots", "--output", str(output)]) == 0  # fmt: skip
    task = json.loads(output.read_text())["tasks"][root.name]
    assert task["few_shot"] == {} and "common" in task["zero_shot"]
    assert main(["evaluate", "--model", str(tmp_path / "no_model"), "--task", "plankton"]) == 2
    assert "task plankton has no Hub dataset id" in capsys.readouterr().err  # checked before loading the model
    assert main(["evaluate", "--task", "nope"]) == 2
    assert "no task spec 'nope' (known tasks: birds525" in capsys.readouterr().err


def test_few_shot_support_from_a_separate_split(tmp_path, tiny_model_and_processor):
    """support_split: the support comes from another split and every example of the scored split is a query."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 3)):
        for name, (_, _, colour) in CLASSES.items():
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(np.array(colour) + rng.normal(0, 12, (40, 48, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    spec = TaskSpec(name="split", dataset=str(tmp_path), split="test", support_split="train")
    model, processor = tiny_model_and_processor
    result = harness.evaluate_task(model, processor, spec, harness.EvalConfig(shots=(5,), seeds=2, templates="single"))
    assert result["num_examples"] == 12 and result["support_split"] == "train"
    five = result["few_shot"]["5"]  # impossible within "test" (3 per class), fine with "train" support
    assert five["support"] == "separate split" and five["top1_accuracy"] >= 0.9
    data = load_task_data(spec)
    features = harness.image_features(model, processor, data.images)
    assert "skipped" in harness.few_shot(features, data, shots=5, seeds=1)


def test_parquet_dataset_with_embedded_image_bytes(tmp_path, tiny_model_and_processor):
    """Hub-style parquet data: images stored as bytes, labels as a ClassLabel, lineage in columns."""
    import datasets

    rng = np.random.default_rng(0)
    names = sorted(CLASSES)
    rows = {"image": [], "label": [], "genus": [], "epithet": []}
    for label, name in enumerate(names):
        lineage, _, colour = CLASSES[name]
        for _ in range(4):
            rows["image"].append(Image.fromarray(np.clip(np.array(colour) + rng.normal(0, 12, (40, 48, 3)), 0, 255).astype(np.uint8)))
            rows["label"].append(label)
            rows["genus"].append(lineage[5])
            rows["epithet"].append(lineage[6])
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names),
                                  "genus": datasets.Value("string"), "epithet": datasets.Value("string")})  # fmt: skip
    (tmp_path / "data").mkdir()
    datasets.Dataset.from_dict(rows, features=features).to_parquet(tmp_path / "data" / "test-00000-of-00001.parquet")
    spec = TaskSpec(name="pq", dataset=str(tmp_path), split="test", taxon_columns={"genus": "genus", "species": "epithet"})
    data = load_task_data(spec)
    assert isinstance(data.images[0], bytes) and data.class_names == names
    assert [t.scientific_name for t in data.taxa] == [f"{CLASSES[n][0][5]} {CLASSES[n][0][6]}" for n in names]
    model, processor = tiny_model_and_processor
    result = harness.evaluate_task(model, processor, spec, harness.EvalConfig(shots=(2,), seeds=2, templates="single"))
    assert result["num_examples"] == 16 and set(result["zero_shot"]) == {"taxonomic"}  # scientific == taxonomic
    assert set(result["zero_shot"]["taxonomic"]) == {"top1_accuracy", "genus_accuracy", "species_accuracy"}
