"""Training on the real TreeOfLife layouts: Imageomics' shards, the TreeOfLife-10M repo through the (local) Hub,
per-batch text mixing, epochs -> steps, recipes, validation loss + zero-shot eval + save_best, exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from support.training import TRAIN_CFG, KillingLoader, Preempted, fresh_accelerate_state  # noqa: F401  (autouse fixture)
from support.training_data import make_tol10m_repo, write_official_shards

from bioclip_hf.cli import main
from bioclip_hf.training.config import TrainConfig, list_recipes, parse_config, recipe_path, resolve_schedule
from bioclip_hf.training.trainer import train


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """make_wds.py output: train/ (4 shards of 6) and val/ (1 shard of 6) folders of official-layout shards."""
    root = tmp_path_factory.mktemp("official") / "tol"
    write_official_shards(root / "train", 24, shard_size=6)
    write_official_shards(root / "val", 6, shard_size=6)
    write_official_shards(root / "train_small", 6, shard_size=6)  # must not leak into "train"
    return root


@pytest.fixture(scope="module")
def eval_folder(tmp_path_factory):
    """An image-folder task (one class per sub-folder) for zero-shot top-1 while training."""
    from support.images import make_image

    root = tmp_path_factory.mktemp("eval") / "tiny-task"
    for c, name in enumerate(("common raven", "red fox", "monarch butterfly")):
        (root / name).mkdir(parents=True)
        for i in range(2):
            (root / name / f"{i}.jpg").write_bytes(make_image(700 + 10 * c + i))
    return root


def _settings(tmp_path, **overrides):
    (tmp_path / "tiny.json").write_text(json.dumps(TRAIN_CFG))
    values = {"model_config": str(tmp_path / "tiny.json"), "batch_size": 4, "max_steps": 6, "warmup_steps": 1,
              "learning_rate": 1e-3, "shuffle_buffer": 6, "report_to": "none", "progress_bar": False,
              "output_dir": str(tmp_path / "run"), "seed": 3}  # fmt: skip
    return {**values, **overrides}


def _log(run):
    return [json.loads(line) for line in (Path(run) / "train_log.jsonl").read_text().splitlines()]


def _weights(model_dir):
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def test_cli_trains_on_official_shards_with_validation_and_save_best(official, eval_folder, tmp_path, capsys):
    settings = _settings(tmp_path, train_data=str(official), text_mixing="per_batch", val_split="val", eval_steps=2,
                         eval_data_dir=str(eval_folder), eval_templates="single", save_best=True,
                         report_to="tensorboard")  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(settings))
    assert main(["train", str(tmp_path / "run.yaml")]) == 0
    log = _log(tmp_path / "run")
    val = {entry["step"]: entry["val/loss"] for entry in log if "val/loss" in entry}
    assert sorted(val) == [2, 4, 6] and all(v > 0 for v in val.values())
    assert [entry["step"] for entry in log if "eval/top1" in entry] == [2, 4, 6]
    assert any("eval/tiny-task/common/top1" in entry for entry in log)
    best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    assert best == {"step": min(val, key=val.get), "metric": "val/loss", "value": min(val.values())}
    from bioclip_hf import BioCLIPModel

    assert BioCLIPModel.from_pretrained(tmp_path / "run" / "best").config.projection_dim == 16
    assert "text_mixing: per_batch" in (tmp_path / "run" / "run_config.yaml").read_text()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((tmp_path / "run").rglob("events.out.tfevents.*")).parent)).Reload()
    assert [e.step for e in events.Scalars("val/loss")] == [2, 4, 6]  # the trackers get the validation too
    assert [e.step for e in events.Scalars("eval/top1")] == [2, 4, 6]


def test_validation_does_not_disturb_training_or_its_exact_resume(official, tmp_path, monkeypatch):
    """No validation == validation every 2 steps == the same killed at step 5 and resumed from checkpoint-4."""
    import bioclip_hf.training.trainer as train_module

    base = _settings(tmp_path, train_data=str(official), save_steps=2)
    plain = train(TrainConfig(**{**base, "output_dir": str(tmp_path / "plain")}))
    validated = {**base, "val_split": "val", "eval_steps": 2, "val_batches": 1, "save_best": True}
    straight = train(TrainConfig(**{**validated, "output_dir": str(tmp_path / "straight")}))
    real = train_module.default_data_fn

    monkeypatch.setattr(train_module, "default_data_fn", lambda *args: KillingLoader(real(*args), after=4))
    with pytest.raises(Preempted):
        train(TrainConfig(**{**validated, "output_dir": str(tmp_path / "resumed")}))
    monkeypatch.setattr(train_module, "default_data_fn", real)
    resumed = train(TrainConfig(**{**validated, "output_dir": str(tmp_path / "resumed"), "resume": "latest"}))
    reference = _weights(plain)
    for other in (straight, resumed):
        weights = _weights(other)
        assert all((weights[k] == reference[k]).all() for k in reference)  # bit-identical
    val = [[(e["step"], e["val/loss"]) for e in _log(tmp_path / run) if "val/loss" in e] for run in ("straight", "resumed")]
    assert val[0] == [(s, v) for s, v in val[1]] and [s for s, _ in val[0]] == [2, 4, 6]
    state = json.loads((tmp_path / "resumed" / "checkpoints" / "checkpoint-6" / "trainer_state_0.json").read_text())
    assert state["best_value"] == min(v for _, v in val[0])


def test_epochs_and_global_batch_become_steps(official, tmp_path):
    config = TrainConfig(**_settings(tmp_path, train_data=str(official), num_epochs=1.5, global_batch_size=8))
    with pytest.raises(ValueError, match="num_epochs needs the dataset size"):
        train(config)  # make_wds.py shards state no size (no build_report.json / sizes.json)
    run = train(TrainConfig(**{**config.to_dict(), "dataset_size": 24}))
    saved = TrainConfig.from_yaml(Path(run).parent / "run_config.yaml")
    assert (saved.gradient_accumulation_steps, saved.max_steps) == (2, 5)  # 8 / 4; ceil(1.5 * ceil(24 / 8))
    assert [e["step"] for e in _log(Path(run).parent)][-1] == 5
    with pytest.raises(ValueError, match="global_batch_size 10 is not a multiple of batch_size 4 x 1"):
        resolve_schedule(TrainConfig(global_batch_size=10, batch_size=4), world_size=1)


def test_recipes_hold_the_published_hyper_parameters():
    assert list_recipes() == ["bioclip", "bioclip-2"]
    assert recipe_path("bioclip").resolve().parent.name == "configs"  # the package links to the repository's configs/
    bioclip = parse_config(["--recipe", "bioclip"])
    published = {"init_from": "openai/clip-vit-base-patch16", "num_epochs": 100, "global_batch_size": 32768,
                 "batch_size": 4096, "learning_rate": 1e-4, "adam_beta1": 0.9, "adam_beta2": 0.98, "adam_epsilon": 1e-6,
                 "weight_decay": 0.2, "warmup_steps": 1000, "mixed_precision": "fp16", "local_loss": True,
                 "gather_with_grad": True, "gradient_checkpointing": True, "save_best": True, "best_metric": "val/loss",
                 "text_type": "mixed", "text_mixing": "per_batch", "train_data": "imageomics/TreeOfLife-10M",
                 "train_augment": "random_resized_crop"}  # fmt: skip
    assert {k: getattr(bioclip, k) for k in published} == published
    schedule = resolve_schedule(bioclip, world_size=8, dataset_size=10_400_000)
    assert (schedule.gradient_accumulation_steps, schedule.steps_per_epoch, schedule.max_steps) == (1, 318, 31_800)
    two = parse_config(["--recipe", "bioclip-2", "--train_data", "/data/tol200m", "--batch_size", "1408"])
    assert (two.num_epochs, two.learning_rate, two.warmup_steps, two.global_batch_size) == (30, 1e-4, 1875, 90112)
    assert resolve_schedule(two, world_size=8, dataset_size=214_000_000).gradient_accumulation_steps == 8  # 90112/(1408*8)
    with pytest.raises(FileNotFoundError, match="no training recipe 'clip'.*bioclip, bioclip-2"):
        parse_config(["--recipe", "clip"])


def test_trains_on_treeoflife_10m_from_the_hub(tmp_path, hub_server, eval_folder):
    from huggingface_hub import HfApi

    repo = tmp_path / "TreeOfLife-10M"
    info = make_tol10m_repo(repo, train=16, val=4)
    api = HfApi(token=hub_server.token)
    api.create_repo("imageomics/TreeOfLife-10M", repo_type="dataset")
    api.upload_folder(folder_path=str(repo), repo_id="imageomics/TreeOfLife-10M", repo_type="dataset")
    settings = _settings(tmp_path, train_data="imageomics/TreeOfLife-10M", text_mixing="per_batch", num_epochs=2,
                         val_split="val", save_best=True)  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(settings))
    assert main(["train", str(tmp_path / "run.yaml")]) == 0
    saved = TrainConfig.from_yaml(tmp_path / "run" / "run_config.yaml")
    assert (saved.dataset_size, saved.max_steps) == (len(info["train"]) + 1, 10)  # catalog rows with an image; ceil(17/4)
    assert [e["step"] for e in _log(tmp_path / "run") if "val/loss" in e] == [5, 10]  # once per epoch
    # The val images, scattered over all EOL tars, were gathered once into the run's validation cache.
    assert len(list((tmp_path / "run" / "val_cache" / "val-0-of-1" / "val").glob("*.tar"))) == 1
    fetched = [p for _, p, status in hub_server.state.requests if "/resolve/" in p and p.endswith(".tar.gz") and status < 300]
    assert fetched, "the EOL tars were streamed from the Hub"


def test_train_data_errors_are_one_line(tmp_path, hub_server, capsys):
    from huggingface_hub import HfApi

    (tmp_path / "up" / "dataset" / "EOL").mkdir(parents=True)
    (tmp_path / "up" / "dataset" / "EOL" / "image_set_01.tar.gz").write_bytes(b"\x1f\x8b")
    HfApi(token=hub_server.token).create_repo("tester/eol-only", repo_type="dataset")
    HfApi(token=hub_server.token).upload_folder(folder_path=str(tmp_path / "up"), repo_id="tester/eol-only", repo_type="dataset")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(_settings(tmp_path, train_data="tester/eol-only")))
    assert main(["train", str(tmp_path / "run.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("bioclip-hf train: error: dataset repo tester/eol-only is an incomplete TreeOfLife-10M layout: "
                   "missing metadata/catalog.csv")  # fmt: skip
    assert main(["train", str(tmp_path / "run.yaml"), "--recipe", "nope"]) == 2
    assert "no training recipe 'nope'" in capsys.readouterr().err


def test_dataset_size_is_counted_from_what_the_source_states(official, tmp_path):
    from support.training_data import make_shards

    from bioclip_hf.data.stream import source_num_examples

    make_shards(tmp_path / "ours", num_images=10, shard_size=4)  # build_report.json: 10 good rows of 13
    assert source_num_examples(str(tmp_path / "ours"), "train") == 10
    assert source_num_examples(str(official), "train") is None
    sizes = {"shard-000000.tar": 6, "shard-000001.tar": 6, "shard-000002.tar": 6, "shard-000003.tar": 6, "gone.tar": 9}
    (tmp_path / "sizes.json").write_text(json.dumps(sizes))  # open_clip's convention, beside the split's shards
    import shutil

    shutil.copytree(official / "train", tmp_path / "wds" / "train")
    shutil.copy(tmp_path / "sizes.json", tmp_path / "wds" / "train" / "sizes.json")
    assert source_num_examples(str(tmp_path / "wds"), "train") == 24  # shards that exist only


def test_two_processes_validate_together(official, eval_folder, tmp_path):
    """`accelerate launch` on 2 CPU processes: the validation loss is reduced over both, zero-shot runs on rank 0
    and is shared, the best model is written once."""
    import os
    import subprocess
    import sys

    settings = _settings(tmp_path, train_data=str(official), max_steps=2, val_split="val", eval_steps=1,
                         eval_data_dir=str(eval_folder), eval_templates="single", save_best=True, best_metric="eval/top1")  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(settings))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "bioclip_hf.train",
               str(tmp_path / "run.yaml")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    log = _log(tmp_path / "run")
    assert [e["step"] for e in log if "val/loss" in e] == [1, 2] and [e["step"] for e in log if "eval/top1" in e] == [1, 2]
    best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    assert best["metric"] == "eval/top1" and best["value"] == max(e["eval/top1"] for e in log if "eval/top1" in e)
