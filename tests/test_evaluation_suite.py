"""The BioCLIP 2 suite (`bioclip-hf evaluate --suite bioclip-2`): specs, layouts, the feature cache, the published
comparison; every task runs on miniatures in its exact layout (Hub tasks through the local Hub test server)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from support.eval_suite import CAMERA_SUBSETS, LOCAL_TASKS, push_hub_tasks, write_annotation, write_suite_data

from bioclip_hf.cli import main
from bioclip_hf.evaluation.annotation import TaskDataMissing, load_task_images, read_annotation
from bioclip_hf.evaluation.published import load_published
from bioclip_hf.evaluation.suite import SUITES_DIR, load_suite
from bioclip_hf.evaluation.suite_run import SuiteConfig, run_suite
from bioclip_hf.evaluation.tasks import list_tasks

REPO = Path(__file__).resolve().parents[1]
ALL_TASKS = ["nabirds", "plankton", "insects", "insects2", "camera_trap", "plantnet", "fungi", "plantvillage",
             "medicinal_leaf", "rare_species", "fishnet", "newt", "awa2", "herbarium19", "plantdoc"]  # fmt: skip
# The protocols' defaults (3 runs of 50 epochs, 100 SVM searches) are the original's; miniatures need far less.
FAST = {"fishnet": {"epochs": 3, "eval_every": 1}, "awa2": {"epochs": 3, "eval_every": 1}, "newt": {"n_iter": 2, "n_jobs": 1},
        "herbarium19": {"runs": 2, "class_splits": {"Old": [0, 1], "New": [2, 3]}}, "plantdoc": {"repeats": 2}}  # fmt: skip
FAST_FLAGS = [f for p, opts in FAST.items() for k, v in opts.items() for f in ("--protocol-option", f"{p}.{k}={v}")]


@pytest.fixture(scope="module")
def suite_data(tmp_path_factory):
    return write_suite_data(tmp_path_factory.mktemp("suite") / "data")


# -- specs and published numbers -----------------------------------------------------------------------------------
def test_suite_specs_are_the_papers_tasks():
    suite = load_suite("bioclip-2")
    assert [t.name for t in suite.tasks] == ALL_TASKS
    by_name = {t.name: t for t in suite.tasks}
    assert {n for n, t in by_name.items() if t.text_type == "asis"} == {
        "nabirds", "plankton", "insects", "insects2", "plantnet", "fungi", "plantvillage", "medicinal_leaf"}  # fmt: skip
    assert {n for n, t in by_name.items() if t.text_type == "taxon_com"} == {"rare_species", "camera_trap"}
    assert by_name["rare_species"].hub_dataset == "imageomics/rare-species"
    assert by_name["camera_trap"].hub_dataset == "imageomics/IDLE-OO-Camera-Traps"
    assert [s.name for s in by_name["camera_trap"].subsets] == list(CAMERA_SUBSETS)
    assert {t.protocol for t in suite.tasks if t.group == "beyond_species"} == {"fishnet", "newt", "awa2", "herbarium19", "plantdoc"}
    assert all(t.shots == (1, 5) and t.folds == 5 for t in suite.tasks if t.is_species)
    assert all(t.download for t in suite.tasks)  # every task says where its data comes from
    # the wheel carries the specs: the package folder is the repository's evals/suites (one copy)
    assert SUITES_DIR.resolve() == (REPO / "evals" / "suites").resolve()
    assert len(list_tasks()) == 10 and "birds525" in list_tasks()  # BioCLIP 1's suite is unchanged


def test_published_table_cites_a_source_for_every_number():
    table = load_published("bioclip-2")
    assert set(ALL_TASKS) | {"mean_species", "mean_beyond_species"} == set(table.tasks)
    assert table.value("nabirds", "bioclip-2") == 74.9 and table.value("mean_species", "bioclip-2") == 55.6
    assert table.value("mean_beyond_species", "bioclip-2") == 57.5 and table.value("plantdoc", "bioclip") == 39.5
    assert table.value("camera_trap", "biocap") == 37.4 and table.value("fishnet", "biocap") is None
    assert all(table.value(t, "bioclip-2.5") is None for t in table.tasks)  # no per-task numbers were found
    for task, cells in table.tasks.items():
        for model, cell in cells.items():
            assert cell is None or table.source_url(task, model).startswith("https://imageomics.github.io/")
    # the published species mean is the mean of the published species numbers (to the table's rounding)
    species = load_suite().groups["species"]
    for model in ("bioclip", "bioclip-2", "biocap"):
        mean = np.mean([table.value(t, model) for t in species])
        assert mean == pytest.approx(table.value("mean_species", model), abs=0.051)
    assert table.model_for("hf-hub:imageomics/bioclip") == "bioclip" and table.model_for("./mine") is None


# -- layouts -------------------------------------------------------------------------------------------------------
def test_annotation_layout_and_missing_data_errors(tmp_path):
    task = load_suite().task("nabirds")
    write_annotation(tmp_path, [{"filepath": "a/1.jpg", "class": "Ovenbird"}])
    with pytest.raises(TaskDataMissing, match=r"1 of 1 image\(s\) listed in .* are missing .*dl.allaboutbirds.org"):
        read_annotation(task, tmp_path, "metadata.csv")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "1.jpg").write_bytes(b"x")
    part = read_annotation(task, tmp_path, "metadata.csv")
    assert part.rows == [{"filepath": "a/1.jpg", "class": "Ovenbird"}]  # pandas' index column dropped
    assert part.images == [str((tmp_path / "a" / "1.jpg").resolve())]
    with pytest.raises(TaskDataMissing, match=r"annotation file .*other.csv not found; get it from images from https://dl"):
        read_annotation(task, tmp_path, "other.csv")
    write_annotation(tmp_path, [{"path": "a/1.jpg"}], name="bad.csv")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['filepath'\]"):
        read_annotation(task, tmp_path, "bad.csv")
    with pytest.raises(TaskDataMissing, match="no local data folder given"):
        load_task_images(task)


# -- the whole suite -----------------------------------------------------------------------------------------------
def test_suite_runs_every_task_and_prints_the_published_comparison(hub_server, suite_data, tiny_hf_dir, tmp_path, capsys):
    push_hub_tasks(hub_server.token, tmp_path / "hub")
    output = tmp_path / "suite.json"
    assert main(["evaluate", "--suite", "bioclip-2", "--model", str(tiny_hf_dir), "--data-root", str(suite_data),
                 "--cache-dir", str(tmp_path / "cache"), "-o", str(output), *FAST_FLAGS]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    results = json.loads(output.read_text())
    assert list(results["tasks"]) == ALL_TASKS and results["skipped"] == {}
    assert results["tasks"]["rare_species"]["source"] == "imageomics/rare-species"
    assert results["tasks"]["camera_trap"]["source"] == "imageomics/IDLE-OO-Camera-Traps"
    for name, task in results["tasks"].items():
        assert 0 <= task["score"] <= 100, name
    nabirds = results["tasks"]["nabirds"]
    assert nabirds["num_examples"] == 18 and nabirds["num_classes"] == 3
    assert nabirds["score"] == pytest.approx(100 * nabirds["zero_shot"]["zero_shot_top1"])
    assert {"1_shot_top1", "5_shot_top1"} <= set(nabirds["few_shot"])
    camera = results["tasks"]["camera_trap"]
    assert list(camera["subsets"]) == [f"camera_trap/{s}" for s in CAMERA_SUBSETS]
    assert camera["score"] == pytest.approx(np.mean([u["score"] for u in camera["subsets"].values()]))
    # ours next to the published numbers, with the difference to BioCLIP 2 (the model is not a published one)
    rows = {row["task"]: row for row in results["comparison"]["rows"]}
    assert results["comparison"]["reference"] == "bioclip-2"
    assert rows["nabirds"]["delta"] == pytest.approx(round(nabirds["score"] - 74.9, 2))
    species_mean = np.mean([results["tasks"][t]["score"] for t in load_suite().groups["species"]])
    assert rows["mean_species"]["ours"] == pytest.approx(species_mean, abs=0.005)
    assert "| Task | Ours | BioCLIP | BioCLIP 2 | BioCAP | BioCLIP 2.5 | Δ vs BioCLIP 2 |" in printed
    assert f"| NABirds | {nabirds['score']:.1f} | 58.8 | 74.9 | 67.6 | – | {rows['nabirds']['delta']:+.1f} |" in printed
    assert "| FishNet |" in printed and "| Mean (beyond species) |" in printed and "images/s" in printed
    assert (tmp_path / "suite.md").read_text().count("| Camera Trap |") == 2  # comparison + few-shot tables


def test_feature_cache_second_run_needs_no_image_encoder(suite_data, tiny_model_and_processor, tiny_hf_dir, tmp_path):
    from bioclip_hf.evaluation.features import FeatureCache
    from bioclip_hf.evaluation.harness import image_features

    model, processor = tiny_model_and_processor
    data = tmp_path / "data"
    for task in ("nabirds", "plankton", "plantdoc"):
        shutil.copytree(suite_data / task, data / task)
    calls = []
    original = model.encode_image

    def counting(*args, **kwargs):
        calls.append(len(args[0]))
        return original(*args, **kwargs)

    tasks = load_suite().select(["nabirds", "plankton", "plantdoc"])
    config = SuiteConfig(data_root=str(data), cache_dir=str(tmp_path / "cache"), batch_size=8,
                         protocol_options={"plantdoc": {"repeats": 2}})  # fmt: skip
    model.encode_image = counting
    try:
        first = run_suite(str(tiny_hf_dir), tasks, config, model=model, processor=processor)
        assert sum(calls) == 18 + 18 + 15
        calls.clear()
        second = run_suite(str(tiny_hf_dir), tasks, config, model=model, processor=processor)
        assert calls == []  # re-scoring reads the cached features: zero encoder calls
        for name in first["tasks"]:
            assert {k: v for k, v in second["tasks"][name].items() if k != "features"} == \
                   {k: v for k, v in first["tasks"][name].items() if k != "features"}  # fmt: skip
            assert all(info["cached"] for info in second["tasks"][name]["features"].values())
        # the cache holds the raw projections of exactly these images
        part = load_task_images(dataclasses.replace(load_suite().task("nabirds"), data_dir=str(data / "nabirds")))[0]
        model.encode_image = original
        cached = np.load(first["tasks"]["nabirds"]["features"]["nabirds"]["path"])
        np.testing.assert_array_equal(cached, image_features(model, processor, part.images, 8, normalize=False))
        model.encode_image = counting
        # a changed image changes that task's data fingerprint: only it is encoded again
        (data / "nabirds" / "Ovenbird" / "0.jpg").write_bytes((data / "nabirds" / "Ovenbird" / "1.jpg").read_bytes())
        third = run_suite(str(tiny_hf_dir), tasks, config, model=model, processor=processor)
        assert sum(calls) == 18 and not third["tasks"]["nabirds"]["features"]["nabirds"]["cached"]
        assert third["tasks"]["plankton"]["features"]["plankton"]["cached"]
        calls.clear()
        run_suite(str(tiny_hf_dir), tasks[:1], SuiteConfig(data_root=str(data), use_cache=False), model=model,
                  processor=processor)  # fmt: skip
        assert sum(calls) == 18  # --no-cache: always one pass
    finally:
        model.encode_image = original
    key_a = FeatureCache(str(tiny_hf_dir)).identity()
    assert key_a["content_sha256"] and key_a["path"] == str(Path(tiny_hf_dir).resolve())


def test_single_task_from_its_folder_and_missing_data(suite_data, tiny_hf_dir, tmp_path, capsys, offline_hub_cache):
    output = tmp_path / "nabirds.json"
    assert main(["evaluate", "--task", "nabirds", "--data-dir", str(suite_data / "nabirds"), "--model", str(tiny_hf_dir),
                 "--cache-dir", str(tmp_path / "cache"), "-o", str(output)]) == 0  # fmt: skip
    results = json.loads(output.read_text())
    assert results["suite"] == "bioclip-2" and list(results["tasks"]) == ["nabirds"]
    assert "| NABirds |" in capsys.readouterr().out
    # an explicitly selected task without data is an error naming where to get it
    no_model = str(tmp_path / "no_model")  # the data is checked before a model is loaded
    assert main(["evaluate", "--suite", "bioclip-2", "--task", "fungi", "--model", no_model, "-o", str(output)]) == 2
    assert "task fungi: no local data folder given" in capsys.readouterr().err
    assert main(["evaluate", "--task", "awa2", "--model", no_model, "--data-dir", str(tmp_path), "-o", str(output)]) == 2
    assert f"task awa2: annotation file {tmp_path}/metadata.csv not found; get it from https://cvml.ista.ac.at/AwA2/" in \
        capsys.readouterr().err  # fmt: skip
    # the whole suite skips what is absent (offline: the Hub tasks too), one line each, and still prints the table
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", "--suite", "bioclip-2", "--data-root", str(empty), "--model", str(tiny_hf_dir),
                 "-o", str(output)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    skipped = [line for line in printed.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 15
    assert any("skipped rare_species: task rare_species: Hub dataset imageomics/rare-species could not be read" in s
               for s in skipped)  # fmt: skip
    assert any(s.startswith("skipped herbarium19:") and "kaggle.com/c/herbarium-2019" in s for s in skipped)
    assert "| NABirds | – | 58.8 | 74.9 |" in printed


def test_bioclip1_suite_runs_the_tasks_present(hub_server, tiny_hf_dir, tmp_path, capsys):
    """--suite bioclip: BioCLIP 1's harness over its ten specs; absent ones are skipped with a note."""
    from PIL import Image

    push_hub_tasks(hub_server.token, tmp_path / "hub")  # imageomics/rare-species (BioCLIP 1 reads it too)
    folder = tmp_path / "root" / "plankton"
    rows = []
    for c, name in enumerate(("Emiliania_huxleyi", "Chaetoceros")):
        for i in range(3):
            (folder / "images" / name).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (20, 20), (40 * c, 80, 120 + 10 * i)).save(folder / "images" / name / f"{c}_{i}.png")
            rows.append({"FILE_NAME": f"{c}_{i}.png", "CATEGORY": name})
    write_annotation(folder, rows, name="labels.csv", index_column=False)
    output = tmp_path / "bioclip1.json"
    assert main(["evaluate", "--suite", "bioclip", "--model", str(tiny_hf_dir), "--data-root", str(tmp_path / "root"),
                 "--templates", "single", "--shots", "1", "--seeds", "2", "-o", str(output)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert set(json.loads(output.read_text())["tasks"]) == {"plankton", "rare_species"}
    assert "skipped birds525: no data" in printed and "skipped fungi: no data" in printed


def test_local_task_names_cover_the_suite():
    assert set(LOCAL_TASKS) | {"rare_species", "camera_trap"} == set(ALL_TASKS)


def test_tasks_beyond_species_read_their_download_layouts(suite_data, tmp_path):
    """Without metadata.csv, NeWT / FishNet / AwA2 / Herbarium19 / PlantDoc folders are read as the datasets ship;
    the rows (and so the images and the protocol inputs) equal those of the annotation layout."""
    import csv

    for name in ("newt", "fishnet", "awa2", "herbarium19", "plantdoc"):
        shutil.copytree(suite_data / name, tmp_path / name)
        annotated = load_task_images(dataclasses.replace(load_suite().task(name), data_dir=str(tmp_path / name)))[0]
        (tmp_path / name / "metadata.csv").unlink()
        if name == "newt":  # the download's label file: id, task, label, split, ...
            with (tmp_path / name / "newt2021_labels.csv").open("w", newline="") as fh:
                writer = csv.DictWriter(fh, ["id", "task", "label", "split", "task_cluster", "task_subcluster"],
                                        extrasaction="ignore")  # fmt: skip
                writer.writeheader()
                writer.writerows(annotated.rows)
        if name == "fishnet":  # FishNet's CSVs: the script reads the image (4th) and folder (13th) columns by position
            header = ["c0", "c1", "c2", "image", *[f"c{i}" for i in range(4, 12)], "Folder", "c13", "FeedingPath",
                      "Tropical", "Temperate", "Subtropical", "Boreal", "Polar", "freshwater", "saltwater", "brackish"]  # fmt: skip
            for split in ("train", "test"):
                with (tmp_path / name / f"{split}.csv").open("w", newline="") as fh:
                    writer = csv.DictWriter(fh, header, extrasaction="ignore")
                    writer.writeheader()
                    for row in annotated.rows:
                        if row["split"] == split:
                            folder, image = row["filepath"].split("/")[1:]
                            writer.writerow({**row, "image": f"some/where/{image}", "Folder": folder})
        native = load_task_images(dataclasses.replace(load_suite().task(name), data_dir=str(tmp_path / name)))[0]
        keys = {"newt": ("filepath", "task", "label", "split"), "awa2": ("filepath", "class"),
                "herbarium19": ("filepath", "class", "split"), "plantdoc": ("filepath", "class", "split"),
                "fishnet": ("filepath", "split", "FeedingPath", "Tropical", "Polar", "brackish")}[name]  # fmt: skip
        assert sorted(tuple(r[k] for k in keys) for r in native.rows) == \
            sorted(tuple(r[k] for k in keys) for r in annotated.rows), name  # fmt: skip
        assert sorted(native.images) == sorted(annotated.images), name


def test_feature_cache_key_for_hub_models_is_the_commit(offline_hub_cache):
    """A Hub model keys the cache by the commit its files came from; a model whose commit is unknown is not cached."""
    from support.hub_cache import commit_of, write_hub_cache

    from bioclip_hf.evaluation.features import FeatureCache, model_identity

    write_hub_cache(offline_hub_cache, "someone/bioclip-ft", {"config.json": b"{}"}, commit=commit_of("v1"))
    assert model_identity("hf-hub:someone/bioclip-ft") == {"id": "someone/bioclip-ft", "commit": commit_of("v1")}
    write_hub_cache(offline_hub_cache, "someone/bioclip-ft", {"config.json": b"{}"}, commit=commit_of("v2"))
    assert model_identity("someone/bioclip-ft")["commit"] == commit_of("v2")  # main moved: another key
    assert model_identity("someone/not-cached") is None
    assert FeatureCache("someone/not-cached").key(None, None, None) is None


def test_camera_trap_csv_paths_may_name_the_subset_folder(tmp_path):
    """The balanced CSVs' filepaths are relative to data/test/<subset>/; ones that start with the subset resolve too."""
    from support.eval_suite import camera_trap_folder

    folder = camera_trap_folder(tmp_path / "ct")
    csv_path = folder / "ENA24-balanced.csv"
    csv_path.write_text(csv_path.read_text().replace("\n0,", "\n0,ENA24/", 1))  # first row: "ENA24/<file>"
    task = dataclasses.replace(load_suite().task("camera_trap"), data_dir=str(folder))
    with pytest.raises(TaskDataMissing, match=r"11 of 12 image\(s\) listed in .*ENA24-balanced.csv are missing"):
        load_task_images(task)  # one base per CSV: the rest of that file no longer resolves
    rows = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join([rows[0]] + [r.split(",", 1)[0] + ",ENA24/" + r.split(",", 1)[1].removeprefix("ENA24/")
                                              for r in rows[1:]]) + "\n")  # fmt: skip
    parts = {p.name: p for p in load_task_images(task)}
    assert parts["camera_trap/ENA24"].root == (folder / "data" / "test").resolve()
    assert parts["camera_trap/island"].root == (folder / "data" / "test" / "island").resolve()
