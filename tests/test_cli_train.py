"""`bioclip-hf train` on real webdataset shards: YAML + flags, exact resume of the stream, push to a (local) Hub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.training import TRAIN_CFG, KillingLoader, Preempted, fresh_accelerate_state  # noqa: F401  (autouse fixture)

from bioclip_hf.cli import main


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from support.training_data import make_shards

    out = tmp_path_factory.mktemp("train_shards") / "shards"
    make_shards(out, num_images=20, shard_size=8)  # 3 shards; the builder skips its 3 bad rows
    return out


@pytest.fixture
def run_yaml(shards, tmp_path):
    (tmp_path / "tiny.json").write_text(json.dumps(TRAIN_CFG))
    settings = {"model_config": str(tmp_path / "tiny.json"), "train_data": str(shards), "batch_size": 3,
                "max_steps": 4, "warmup_steps": 1, "learning_rate": 1e-3, "shuffle_buffer": 8, "report_to": "none",
                "progress_bar": False, "output_dir": str(tmp_path / "run"), "text_type": "mixed"}  # fmt: skip
    path = tmp_path / "run.yaml"
    import yaml

    path.write_text(yaml.safe_dump(settings))
    return path


def _weights(model_dir):
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def test_cli_trains_from_yaml_with_flag_overrides(run_yaml, tmp_path, capsys):
    assert main(["train", str(run_yaml), "--max_steps", "2", "--save_steps", "1", "--save_total_limit", "0"]) == 0
    model_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert model_dir == tmp_path / "run" / "model" and (model_dir / "model.safetensors").is_file()
    saved = (tmp_path / "run" / "run_config.yaml").read_text()
    assert "max_steps: 2" in saved and "text_type: mixed" in saved
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["checkpoint-1", "checkpoint-2"]


def test_cli_user_errors_are_one_line(run_yaml, tmp_path, capsys):
    assert main(["train", str(run_yaml), "--mixed_precision", "fp4"]) == 2
    assert capsys.readouterr().err.strip().startswith("bioclip-hf train: error: mixed_precision must be one of")
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "training config not found" in capsys.readouterr().err
    assert main(["train", str(run_yaml), "--train_data", str(tmp_path / "no_shards")]) == 2
    assert "no_shards" in capsys.readouterr().err


def test_resume_restores_the_shard_stream_position(run_yaml, tmp_path, monkeypatch):
    """Straight run == run killed after step 3 + `--resume latest`, through the real StreamingLoader state."""
    import bioclip_hf.training.trainer as train_module
    from bioclip_hf.training.config import parse_config
    from bioclip_hf.training.trainer import train

    straight = train(parse_config([str(run_yaml), "--output_dir", str(tmp_path / "straight"), "--max_steps", "6"]))

    real_data_fn = train_module.default_data_fn

    # The real loader, dying when asked for its 4th batch.
    monkeypatch.setattr(train_module, "default_data_fn", lambda *args: KillingLoader(real_data_fn(*args), after=3))
    args = [str(run_yaml), "--output_dir", str(tmp_path / "resumed"), "--max_steps", "6", "--save_steps", "3"]
    with pytest.raises(Preempted):
        train(parse_config(args))
    monkeypatch.setattr(train_module, "default_data_fn", real_data_fn)
    state = json.loads((tmp_path / "resumed" / "checkpoints" / "checkpoint-3" / "trainer_state_0.json").read_text())
    assert state["data_state"]["stats"]["samples"] == 9  # 3 batches of 3
    resumed = train(parse_config(args + ["--resume", "latest"]))
    straight_w, resumed_w = _weights(straight), _weights(resumed)
    assert all((straight_w[k] == resumed_w[k]).all() for k in straight_w)


def test_push_to_hub_uploads_model_processor_and_card(run_yaml, hub_server, monkeypatch, capsys):
    from huggingface_hub import HfApi, ModelCard

    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    assert main(["train", str(run_yaml), "--max_steps", "1", "--push_to_hub", "tester/trained-tiny"]) == 0
    files = set(HfApi().list_repo_files("tester/trained-tiny"))
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json"} <= files
    card = ModelCard.load("tester/trained-tiny")
    assert card.data.pipeline_tag == "zero-shot-image-classification"
    assert "bioclip-hf train" in card.text


def test_accelerate_launch_two_cpu_processes(run_yaml, tmp_path):
    """The documented multi-process entry point, `accelerate launch --multi_gpu --num_processes 2 -m bioclip_hf.train`.

    On a machine without GPUs, `ACCELERATE_USE_CPU=true` makes the same torchrun-based launch use gloo on CPU
    (`accelerate launch --cpu` alone starts a single process).
    """
    import os
    import subprocess
    import sys

    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "bioclip_hf.train",
               str(run_yaml), "--max_steps", "2", "--save_steps", "2"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = tmp_path / "run" / "checkpoints" / "checkpoint-2"
    # One data-stream position per process, and a model that loads.
    assert sorted(p.name for p in checkpoint.glob("trainer_state_*.json")) == ["trainer_state_0.json", "trainer_state_1.json"]
    from bioclip_hf import BioCLIPModel

    assert BioCLIPModel.from_pretrained(tmp_path / "run" / "model").config.projection_dim == 16


def test_full_hub_round_trip_shards_push_stream_train_push_load(hub_dataset, hub_server, tmp_path, monkeypatch, capsys):
    """build shards -> push dataset -> stream it by repo id -> train -> push model -> load by repo id -> same outputs."""
    import numpy as np
    import torch
    import yaml
    from PIL import Image

    from bioclip_hf import BioCLIPModel, BioCLIPProcessor

    repo_id, _ = hub_dataset
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    (tmp_path / "tiny.json").write_text(json.dumps(TRAIN_CFG))
    settings = {"model_config": str(tmp_path / "tiny.json"), "train_data": repo_id, "batch_size": 3, "max_steps": 3,
                "warmup_steps": 1, "learning_rate": 1e-3, "shuffle_buffer": 4, "report_to": "none",
                "progress_bar": False, "output_dir": str(tmp_path / "run"), "text_type": "mixed"}  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(settings))
    assert main(["train", str(tmp_path / "run.yaml"), "--push_to_hub", "tester/roundtrip-tiny"]) == 0
    local_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    streamed = [p for _, p, status in hub_server.state.requests if repo_id in p and ".tar" in p and status < 300]
    assert streamed, "training must have streamed the shards from the Hub"

    local = BioCLIPModel.from_pretrained(local_dir).eval()
    remote = BioCLIPModel.from_pretrained("tester/roundtrip-tiny").eval()
    processor = BioCLIPProcessor.from_pretrained("tester/roundtrip-tiny")
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 32, 3), dtype=np.uint8))
    inputs = processor(text=["Corvus corax", "Rosa canina"], images=[photo])
    assert inputs["pixel_values"].shape == (1, 3, 24, 24)  # the trained model's own preprocessing travelled too
    with torch.no_grad():  # the same weights and code on the same inputs in this process: exact
        assert torch.equal(local(**inputs).logits_per_image, remote(**inputs).logits_per_image)
