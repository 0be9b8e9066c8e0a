"""A suite run pushed to the (local) Hub carries its results in both formats: the card's `model-index` (with the
published comparison table in the text) and `.eval_results/*.yaml` files pointing at the benchmark datasets."""

from __future__ import annotations

import json

from support.eval_suite import CAMERA_SUBSETS, push_hub_tasks, write_suite_data

from bioclip_hf.cli import main
from bioclip_hf.evaluation.suite import load_suite
from bioclip_hf.evaluation.suite_run import SuiteConfig, run_suite
from bioclip_hf.hub.eval_results import read_eval_results, suite_eval_result_entries, write_eval_results


def run_small_suite(hub_server, tiny_model_and_processor, tiny_hf_dir, tmp_path):
    """A real suite run on miniatures: the two Hub tasks (local Hub server), NABirds and PlantDoc (folders)."""
    push_hub_tasks(hub_server.token, tmp_path / "hub")
    data = write_suite_data(tmp_path / "data", tasks=("nabirds", "plantdoc"))
    model, processor = tiny_model_and_processor
    config = SuiteConfig(data_root=str(data), cache_dir=str(tmp_path / "cache"), protocol_options={"plantdoc": {"repeats": 2}})
    tasks = load_suite().select(["nabirds", "camera_trap", "rare_species", "plantdoc"])
    results = json.loads(json.dumps(run_suite(str(tiny_hf_dir), tasks, config, model=model, processor=processor)))
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(results))
    return results, path


def test_suite_results_in_both_hub_formats(hub_server, tiny_model_and_processor, tiny_hf_dir, tmp_path, monkeypatch, capsys):
    """One suite run; its .eval_results files written locally, then pushed with the card and read back from the Hub."""
    import yaml
    from huggingface_hub import HfApi, ModelCard, hf_hub_download, parse_eval_result_entries

    results, path = run_small_suite(hub_server, tiny_model_and_processor, tiny_hf_dir, tmp_path)
    written = write_eval_results(tmp_path / "staged", results)
    assert sorted(p.name for p in written) == ["camera_trap.yaml", "rare_species.yaml"]  # only Hub benchmarks
    parsed = read_eval_results(tmp_path / "staged")
    camera = {e.task_id: e for e in parsed["camera_trap"]}
    assert {e.dataset_id for e in camera.values()} == {"imageomics/IDLE-OO-Camera-Traps"}
    assert set(camera) == {"zero_shot", "few_shot_1", "few_shot_5"} | {f"zero_shot/{s}" for s in CAMERA_SUBSETS}
    task = results["tasks"]["camera_trap"]
    assert camera["zero_shot"].value == round(task["score"], 2)
    for subset in CAMERA_SUBSETS:
        top1 = task["subsets"][f"camera_trap/{subset}"]["zero_shot"]["zero_shot_top1"]
        assert camera[f"zero_shot/{subset}"].value == round(100 * top1, 2)
    rare = {e.task_id: e for e in parsed["rare_species"]}
    assert rare["few_shot_5"].value == round(100 * results["tasks"]["rare_species"]["few_shot"]["5_shot_top1"], 2)
    assert rare["zero_shot"].date == results["date"] and "taxon_com" in rare["zero_shot"].notes
    assert set(suite_eval_result_entries(results)) == {"camera_trap", "rare_species"}

    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    assert main(["push", str(tiny_hf_dir), "tester/bioclip-suite", "--eval-results", str(path), "--no-open-clip"]) == 0
    capsys.readouterr()
    files = set(HfApi().list_repo_files("tester/bioclip-suite"))
    assert {".eval_results/camera_trap.yaml", ".eval_results/rare_species.yaml", "README.md"} <= files

    # .eval_results/*.yaml read back from the Hub
    local = hf_hub_download("tester/bioclip-suite", ".eval_results/rare_species.yaml")
    with open(local, encoding="utf-8") as fh:
        entries = parse_eval_result_entries(yaml.safe_load(fh))
    zero = next(e for e in entries if e.task_id == "zero_shot")
    assert zero.dataset_id == "imageomics/rare-species" and zero.value == round(results["tasks"]["rare_species"]["score"], 2)

    # the card: model-index entries for every task, and the published comparison in its text
    card = ModelCard.load("tester/bioclip-suite")
    found = {(r.dataset_name, r.metric_name, r.dataset_config): r.metric_value for r in card.data.eval_results}
    nabirds = results["tasks"]["nabirds"]
    assert found[("NABirds", "zero-shot top-1 (asis text, 81 templates)", None)] == round(nabirds["score"], 2)
    assert found[("NABirds", "5-shot top-1 (SimpleShot)", None)] == round(100 * nabirds["few_shot"]["5_shot_top1"], 2)
    assert found[("Camera Trap", "zero-shot top-1 (taxon_com text, 81 templates)", "ENA24")] == round(
        100 * results["tasks"]["camera_trap"]["subsets"]["camera_trap/ENA24"]["zero_shot"]["zero_shot_top1"], 2)
    assert found[("PlantDoc", "plantdoc_1_shot_acc (%)", None)] == round(results["tasks"]["plantdoc"]["score"], 2)
    assert {r.dataset_type for r in card.data.eval_results} >= {"imageomics/rare-species", "imageomics/IDLE-OO-Camera-Traps"}
    assert "| Task | Ours | BioCLIP | BioCLIP 2 | BioCAP | BioCLIP 2.5 | Δ vs BioCLIP 2 |" in card.text
    assert "| Rare Species |" in card.text and "| 37.1 | 76.8 | 44.2 | – |" in card.text
    assert "benchmark suite (`bioclip-hf evaluate --suite bioclip-2`)" in card.text
