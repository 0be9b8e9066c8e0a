"""`bioclip-hf finetune`: every data form from the command line and from Python with LoRA and full fine-tuning, the
run config (YAML + flags), and bad input as one clear line with nothing lost."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from support.finetune import quick_config, save_tiny_base
from support.labelled import make_labelled_folder, write_dataset, write_table, write_taxa

from bioclip_hf import cli
from bioclip_hf.training.finetune import finetune

QUICK_FLAGS = ["--max-steps", "2", "--batch-size", "8", "--report-to", "none", "--progress-bar", "false",
               "--open-clip-copy", "false"]  # fmt: skip


@pytest.fixture
def main():
    """`bioclip_hf.cli.main`, where `finetune` is registered in COMMANDS."""
    return cli.main


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return save_tiny_base(tmp_path_factory.mktemp("finetune_cli_base") / "tiny", size=224)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_labelled_folder(tmp_path_factory.mktemp("finetune_cli_photos"), n_classes=3, per_class=4, from_birds=False)


def _data(form, photos, tmp_path):
    """(DATA argument, extra settings) of `photos` in one of the four forms people hold."""
    if form == "folder":
        return str(photos.root), {}
    if form == "table":
        return str(write_table(photos, tmp_path / "labels.csv", lineage=True)), {}
    if form == "dataset":
        return str(write_dataset(photos, tmp_path / "dataset")), {}
    return str(write_table(photos, tmp_path / "labels.tsv", lineage=False)), {"label_taxa": str(write_taxa(photos, tmp_path / "taxa.csv"))}


def _check_output(out, photos, method, lineage):
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == method and results["data"]["classes"] == photos.labels
    assert results["data"]["lineage_known"] is lineage
    assert results["held_out"]["before"]["num_examples"] == results["held_out"]["after"]["num_examples"] == 3
    assert (out / "label_index" / "embeddings.safetensors").is_file() and (out / "config.json").is_file()
    assert yaml.safe_load((out / "finetune_config.yaml").read_text())["method"] == method
    if lineage:  # per-rank accuracy where the lineage is known
        assert "genus_accuracy" in results["held_out"]["after"]


FORMS = [("folder", "lora"), ("table", "full"), ("dataset", "lora"), ("taxa", "full")]


@pytest.mark.parametrize("form,method", [FORMS[0], *[pytest.param(*f, marks=pytest.mark.heavy) for f in FORMS[1:]]])
def test_each_data_form_fine_tunes_from_the_command_line(main, tiny_base, photos, tmp_path, capsys, form, method):
    data, extra = _data(form, photos, tmp_path)
    out = tmp_path / "out"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in extra.items()]
    assert main(["finetune", data, "--model", str(tiny_base), "--output-dir", str(out), "--method", method,
                 *QUICK_FLAGS, *flags]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "before: held-out top-1" in printed and "after: held-out top-1" in printed and str(out) in printed
    _check_output(out, photos, method, lineage=form in ("table", "taxa"))


SWAPPED = [("table", "lora"), ("folder", "full"), ("dataset", "full"), ("taxa", "lora")]


@pytest.mark.parametrize("form,method", [SWAPPED[0], *[pytest.param(*f, marks=pytest.mark.heavy) for f in SWAPPED[1:]]])
def test_each_data_form_fine_tunes_from_python(tiny_base, photos, tmp_path, form, method):
    data, extra = _data(form, photos, tmp_path)
    result = finetune(quick_config(data, tiny_base, tmp_path / "out", method=method, max_steps=2, **extra))
    _check_output(result.output_dir, photos, method, lineage=form in ("table", "taxa"))


def test_head_method_and_yaml_config_with_flag_overrides(main, tiny_base, photos, tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({"method": "head", "max_steps": 3, "learning_rate": 0.05, "batch_size": 4,
                                   "report_to": "none", "progress_bar": False, "open_clip_copy": False}))  # fmt: skip
    out = tmp_path / "out"
    assert main(["finetune", str(photos.root), "--model", str(tiny_base), "--output-dir", str(out), "--config", str(run),
                 "--max-steps", "2"]) == 0  # fmt: skip
    saved = yaml.safe_load((out / "finetune_config.yaml").read_text())
    assert (saved["method"], saved["max_steps"], saved["learning_rate"]) == ("head", 2, 0.05)
    results = json.loads((out / "results.json").read_text())
    assert results["training"]["trainable_parameters"] == 3 * 16  # the head: 3 classes x 16-d embeddings


def test_singletons_and_unreadable_photos_are_trained_around_and_reported(main, tiny_base, photos, tmp_path, capsys):
    root = tmp_path / "photos"
    shutil.copytree(photos.root, root)
    lonely = root / "lonely"
    lonely.mkdir()
    shutil.copy(root / photos.labels[0] / "1.jpg", lonely / "1.jpg")
    (root / photos.labels[1] / "9.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    assert main(["finetune", str(root), "--model", str(tiny_base), "--output-dir", str(out), *QUICK_FLAGS,
                 "--max-steps", "3", "--batch-size", "16"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "9.jpg" in err and "1 image(s) skipped" in err
    data = json.loads((out / "results.json").read_text())["data"]
    assert data["singleton_classes"] == ["lonely"] and data["skipped_images"] == 1 and "lonely" in data["classes"]
    assert "lonely" in (out / "README.md").read_text()


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert err.startswith("bioclip-hf finetune: error: ") and "\n" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_bad_inputs_fail_in_one_line_before_anything_is_written(main, tiny_base, photos, tmp_path, capsys):
    base = ["--model", str(tiny_base), *QUICK_FLAGS]
    one = tmp_path / "one"
    shutil.copytree(photos.root / photos.labels[0], one / photos.labels[0])
    table = write_table(photos, tmp_path / "t.csv", lineage=False)
    table.write_text(table.read_text() + f"gone/1.jpg,{photos.labels[0]}\n")
    dataset = write_dataset(photos, tmp_path / "ds")
    taxa = write_taxa(photos, tmp_path / "taxa.csv", leave_out=1)
    cases = [
        ([str(one)], ("one class only",)),
        ([str(table)], ("do not exist", "gone/1.jpg")),
        ([str(dataset), "--label-column", "species"], ("no label column 'species'", "image", "label")),
        ([str(photos.root), "--label-taxa", str(taxa)], ("does not cover 1 label", photos.labels[-1])),
        ([str(photos.root), "--method", "adapter"], ("method must be one of lora, full, head",)),
        ([str(photos.root), "--wise-ft", "1.5"], ("wise_ft must be in [0, 1]",)),
        ([str(photos.root), "--forgetting-task", "no-such-task"], ("neither a bundled task",)),
        ([str(tmp_path / "missing")], ("not found",)),
    ]  # fmt: skip
    capsys.readouterr()
    for index, (args, needles) in enumerate(cases):
        out = tmp_path / f"out{index}"
        assert main(["finetune", *args, "--output-dir", str(out), *base]) != 0, args
        _one_line_error(capsys, *needles)
        assert not out.exists() or not any(out.iterdir()), args


def test_a_finished_fine_tune_is_never_overwritten(main, tiny_base, photos, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{}")
    assert main(["finetune", str(photos.root), "--model", str(tiny_base), "--output-dir", str(out), *QUICK_FLAGS]) != 0
    _one_line_error(capsys, "already holds a finished fine-tune")
    assert (out / "results.json").read_text() == "{}" and [p.name for p in out.iterdir()] == ["results.json"]


def test_help_lists_the_flags(main, capsys):
    with pytest.raises(SystemExit) as done:
        main(["finetune", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--method", "--lora-rank", "--lora-alpha", "--lora-text", "--epochs", "--lr", "--batch-size",
                 "--val-fraction", "--seed", "--label-taxa", "--text-type", "--image-column", "--label-column",
                 "--file-column", "--wise-ft", "--forgetting-task", "--save-adapter", "--push-to-hub", "--config",
                 "--resume", "--output-dir", "--gradient-checkpointing", "--mixed-precision"):  # fmt: skip
        assert flag in text, flag
