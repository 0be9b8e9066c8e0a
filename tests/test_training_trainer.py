"""Training loop: run config, exact resume, accumulation, mixed precision, checkpointing, 2-process equivalence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support.training import TRAIN_CFG, fresh_accelerate_state  # noqa: F401  (autouse fixture)

from bioclip_hf.training.config import RUN_CONFIG_NAME, TrainConfig, parse_config
from bioclip_hf.training.trainer import TrainerState, list_checkpoints, train


@pytest.fixture(scope="module")
def model_json(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.json"
    path.write_text(json.dumps(TRAIN_CFG))
    return str(path)


class ListData:
    """A deterministic in-memory 'dataset': `num_batches` batches per epoch of random images + distinct captions.

    `rows` selects a slice of every batch (how a rank sees its share of a global batch); `crash_after`
    raises after that many batches, like a pre-empted job.
    """

    def __init__(self, num_batches=5, batch_size=4, rows=slice(None), crash_after=None, image_size=24):
        self.num_batches, self.batch_size, self.rows, self.crash_after = num_batches, batch_size, rows, crash_after
        self.image_size, self.served = image_size, 0

    def __call__(self, processor, config, rank, world_size):
        gen = torch.Generator().manual_seed(1234)
        n = self.num_batches * self.batch_size
        self.pixels = torch.randn(n, 3, self.image_size, self.image_size, generator=gen)
        self.ids = processor(text=[f"a photo of taxon number {i}." for i in range(max(n, 1))])["input_ids"][:n]
        return self

    def __iter__(self):
        for b in range(self.num_batches):
            if self.crash_after is not None and self.served >= self.crash_after:
                raise KeyboardInterrupt("simulated pre-emption")
            self.served += 1
            batch = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield {"pixel_values": self.pixels[batch][self.rows], "input_ids": self.ids[batch][self.rows]}


def _config(model_json, out, **overrides):
    values = dict(model_config=model_json, output_dir=str(out), max_steps=6, batch_size=4, learning_rate=1e-3,
                  warmup_steps=2, save_steps=0, report_to="none", progress_bar=False, seed=0)  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)


def _weights(model_dir):
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def _max_abs_diff(a, b):
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _assert_same_weights(a, b, atol=0.0):
    assert a.keys() == b.keys()
    worst = _max_abs_diff(a, b)
    assert worst <= atol, f"weights differ by up to {worst} (atol {atol})"


def _sgd(model, config):
    """Plain SGD in place of AdamW, for tests whose claim is about gradients (see `_sgd_atol`).

    AdamW normalises each gradient element by its own running RMS: on its first steps a 1e-7 difference on a
    near-zero gradient element flips or rescales a full lr-sized update (the issue's 1.4e-5 differences on AVX2),
    and a wrongly scaled gradient (a missing 1/accumulation or 1/world_size) would go unseen. SGD's update is
    lr x gradient, so weights compare the gradients linearly.
    """
    return torch.optim.SGD(model.parameters(), lr=config.learning_rate)


def _sgd_atol(start, trained, steps):
    """How far two SGD runs whose gradients differ only by float32 summation order may end apart.

    Their per-step updates lr_t x g_t agree to a relative 1e-4: the gradients are float32 reductions (batch, tokens,
    width: K < 2,000 terms here) computed in another order (micro-batches vs one batch, processes, thread count,
    AVX2 vs AVX-512 kernels), whose worst-case relative error K x 2**-24 stays below 1e-4. So the weights may differ
    by 1e-4 x the distance training moved them, plus the rounding of each update (half an ulp, 2**-24 x |w|).
    A gradient off by a factor (2x for a lost 1/accumulation) moves the weights apart by about `moved` instead.
    """
    moved = _max_abs_diff(trained, start)
    largest = max(w.float().abs().max().item() for w in trained.values())
    return 1e-4 * moved + steps * largest * 2**-24


# -- configuration ----------------------------------------------------------------------------------------
def test_config_yaml_round_trip_and_flag_overrides(tmp_path):
    config = TrainConfig(init_from="imageomics/bioclip", train_data="shards/", max_steps=7, mixed_precision="bf16",
                         gradient_checkpointing=True, push_to_hub="me/model")  # fmt: skip
    path = config.save_yaml(tmp_path / "run.yaml")
    assert TrainConfig.from_yaml(path) == config
    parsed = parse_config([str(path), "--max_steps", "9", "--no_gather_with_grad", "--text_type", "taxonomic"])
    assert (parsed.max_steps, parsed.gather_with_grad, parsed.text_type) == (9, False, "taxonomic")
    assert (parsed.mixed_precision, parsed.push_to_hub, parsed.gradient_checkpointing) == ("bf16", "me/model", True)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mixed_precision": "fp8"}, "mixed_precision"),
        ({"text_type": "latin"}, "text_type"),
        ({"max_steps": 0}, "max_steps"),
        ({"init_from": "a", "model_config": "bioclip"}, "not both"),
        ({"bogus": 1}, "unknown training setting"),
    ],
)
def test_config_rejects_bad_values(values, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(values)


def test_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="training config not found"):
        parse_config([str(tmp_path / "missing.yaml")])
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        parse_config([str(tmp_path / "list.yaml")])
    with pytest.raises(ValueError, match="unrecognised training argument"):
        parse_config(["--max_stepz", "3"])


def test_cli_help_lists_settings(capsys):
    from bioclip_hf.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--gradient_accumulation_steps" in out and "--push_to_hub" in out and "--resume" in out


# -- training loop ----------------------------------------------------------------------------------------
@pytest.mark.float_sensitive
def test_resume_after_preemption_is_exact(model_json, tmp_path):
    """6 steps straight == crash inside step 5 + resume from checkpoint-3 (weights bit-identical).

    5 batches per epoch with 2 micro-batches per step: the resumed run must restore optimizer, scheduler,
    RNG and the stream position in the middle of the second epoch.
    """
    common = {"gradient_accumulation_steps": 2, "save_steps": 3, "log_steps": 1}
    straight = train(_config(model_json, tmp_path / "straight", **common), data_fn=ListData())
    run = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train(_config(model_json, run, **common), data_fn=ListData(crash_after=8))
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-3"]
    assert TrainerState.load(run / "checkpoints" / "checkpoint-3", 0).batches_seen == 6
    assert not list(run.joinpath("checkpoints").glob(".*")), "no scratch folder may be left behind"
    resumed = train(_config(model_json, run, resume="latest", **common), data_fn=ListData())
    # Bit-identical, on any CPU: both runs execute the same kernels on the same shapes in this one process (same
    # ISA, same thread count), so an exact resume reproduces every rounding; only a resume bug can differ.
    _assert_same_weights(_weights(straight), _weights(resumed))
    # Step 4 was logged before the crash; after resuming, the metrics log has each step once.
    steps = [json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    # The check can fail: a resume that forgets the data position trains on different batches.
    fresh = train(_config(model_json, tmp_path / "misaligned", max_steps=3, **common), data_fn=ListData())
    wrong = train(_config(model_json, tmp_path / "misaligned", resume=str(Path(fresh).parent / "checkpoints" / "checkpoint-3"),
                          **common), data_fn=_ForgetfulData())  # fmt: skip
    with pytest.raises(AssertionError, match="weights differ"):
        _assert_same_weights(_weights(straight), _weights(wrong))


class _ForgetfulData(ListData):
    """Restarts from the first batch whatever the checkpoint says (replayed batches are not skipped)."""

    def __iter__(self):
        it = super().__iter__()
        yield from ([next(it)] * 6)  # the resume logic skips 6 batches: these are thrown away
        yield from super().__iter__()


def test_training_lowers_the_loss_and_writes_run_artifacts(model_json, tmp_path):
    config = _config(model_json, tmp_path / "run", max_steps=30, log_steps=5, save_steps=10, save_total_limit=2,
                     report_to="tensorboard")  # fmt: skip
    model_dir = train(config, data_fn=ListData(num_batches=2))
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [5, 10, 15, 20, 25, 30]
    # An outcome, not a float comparison: the loss falls to ~1% of its start (0.0109x on AVX-512 and AVX2 alike);
    # rounding differences shift that by ~1e-5 relative, far from the 0.5 bound.
    assert log[-1]["train/loss"] < 0.5 * log[0]["train/loss"], log
    assert log[-1]["train/lr"] == pytest.approx(0.0, abs=1e-9)  # cosine schedule ends at 0
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["checkpoint-20", "checkpoint-30"]
    assert TrainConfig.from_yaml(tmp_path / "run" / RUN_CONFIG_NAME) == config
    assert list((tmp_path / "run").rglob("events.out.tfevents.*")), "tensorboard logs missing"
    from bioclip_hf import BioCLIPModel, BioCLIPProcessor

    assert BioCLIPModel.from_pretrained(model_dir).config.projection_dim == 16
    assert BioCLIPProcessor.from_pretrained(model_dir).image_processor.size == 24
    assert "bioclip-hf train" in (Path(model_dir) / "README.md").read_text()


def _hooked_builder(records):
    """Wrap the model builder to record, per training forward, the dtype and call count of one MLP."""
    import bioclip_hf.training.trainer as train_module

    original = train_module.build_model_and_processor

    def build(config):
        model, processor = original(config)
        # Wrap forward itself: module hooks do not fire when checkpointing recomputes a layer.
        fc1 = model.vision_model.encoder.layers[0].mlp.fc1
        forward = fc1.forward

        def recording_forward(hidden_states):
            output = forward(hidden_states)
            records.append(output.dtype)
            return output

        fc1.forward = recording_forward
        return model, processor

    return build


@pytest.mark.parametrize(("precision", "checkpointing"), [("no", False), ("bf16", False), ("no", True)])
def test_mixed_precision_and_gradient_checkpointing_plumb_through(model_json, tmp_path, monkeypatch, precision,
                                                                   checkpointing):  # fmt: skip
    import bioclip_hf.training.trainer as train_module

    records = []
    monkeypatch.setattr(train_module, "build_model_and_processor", _hooked_builder(records))
    config = _config(model_json, tmp_path, max_steps=2, mixed_precision=precision, gradient_checkpointing=checkpointing)
    train(config, data_fn=ListData())
    expected_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    assert set(records) == {expected_dtype}
    # Gradient checkpointing re-runs each layer's forward during backward.
    assert len(records) == 2 * (2 if checkpointing else 1)


@pytest.mark.float_sensitive
def test_gradient_accumulation_matches_one_large_batch_for_a_per_sample_loss(model_json, tmp_path, monkeypatch):
    """Accumulation plumbing: with the contrastive loss replaced by a per-sample loss, the gradient of 2 x 4
    accumulated micro-batches is that of 1 batch of 8 (compared through SGD updates: see `_sgd`)."""
    import bioclip_hf.training.trainer as train_module

    class PerSampleLoss(torch.nn.Module):
        def forward(self, image, text, scale):
            return -(scale * (image * text).sum(-1)).mean()

    monkeypatch.setattr(train_module, "ClipLoss", lambda **kwargs: PerSampleLoss())
    monkeypatch.setattr(train_module, "build_optimizer", _sgd)
    big = _weights(train(_config(model_json, tmp_path / "big", max_steps=3, batch_size=8), data_fn=ListData(batch_size=8)))
    acc = _weights(train(_config(model_json, tmp_path / "acc", max_steps=3, gradient_accumulation_steps=2),
                         data_fn=ListData(num_batches=10)))  # fmt: skip
    start = _weights(train(_config(model_json, tmp_path / "start", max_steps=1, learning_rate=1e-12), data_fn=ListData()))
    atol = _sgd_atol(start, big, steps=3)
    _assert_same_weights(big, acc, atol=atol)
    # Not vacuous: training moved the weights 1,000x further than the tolerance (a 2x gradient shows).
    assert _max_abs_diff(big, start) > 1000 * atol


@pytest.mark.float_sensitive
def test_init_from_hf_and_open_clip_checkpoints(tiny_hf_dir, tiny_open_clip, tmp_path):
    from bioclip_hf import BioCLIPModel

    for name, source in (("hf", tiny_hf_dir), ("open_clip", tiny_open_clip[1])):
        config = TrainConfig(init_from=str(source), output_dir=str(tmp_path / name), max_steps=1, batch_size=2,
                             learning_rate=1e-6, warmup_steps=0, save_steps=0, report_to="none", progress_bar=False)  # fmt: skip
        trained = _weights(train(config, data_fn=ListData(num_batches=1, batch_size=2, image_size=30)))
        start = BioCLIPModel.from_pretrained(source).state_dict()
        # AdamW's first update is at most lr x (1 + weight_decay x |w|) ~ 1e-6 per weight whatever the gradient
        # (its m/sqrt(v) is +-1 on step 1), so on any CPU the trained weights are the loaded ones within 1e-4;
        # a wrong or missing initialisation differs by the random init's scale (~0.02 and up).
        _assert_same_weights(trained, {k: start[k] for k in trained}, atol=1e-4)


def test_user_errors(model_json, tmp_path):
    with pytest.raises(ValueError, match="init_from .* or model_config"):
        train(TrainConfig(output_dir=str(tmp_path)), data_fn=ListData())
    with pytest.raises(FileNotFoundError, match="checkpoint to resume from not found"):
        train(_config(model_json, tmp_path, resume=str(tmp_path / "nope")), data_fn=ListData())
    with pytest.raises(ValueError, match="yielded no batches"):
        train(_config(model_json, tmp_path), data_fn=ListData(num_batches=0))
    with pytest.raises(FileNotFoundError, match="neither a preset"):
        train(_config(model_json, tmp_path, model_config=str(tmp_path / "nope.json")), data_fn=ListData())
    with pytest.raises(ValueError, match="train_data is not set"):
        train(_config(model_json, tmp_path))


# -- 2 processes (accelerate launch, gloo on CPU) == 1 process with the global batch ------------------
def _two_process_worker(model_json, out):
    """Body of each launched process: its half of every global batch of 8."""
    import os

    import bioclip_hf.training.trainer as train_module

    rank = int(os.environ["RANK"])  # set by the launcher; accelerate's state is first built inside train()
    train_module.build_optimizer = _sgd  # a fresh process: patched for its whole life
    train(_config(model_json, out, max_steps=3), data_fn=ListData(batch_size=8, rows=slice(4 * rank, 4 * (rank + 1))))


@pytest.mark.float_sensitive
def test_two_processes_train_like_one_process_with_the_global_batch(model_json, tmp_path, monkeypatch):
    """The gradient of 2 processes x 4 (features gathered with gradients, DDP-averaged gradients) is that of 1
    process with the global batch of 8 (compared through SGD updates: see `_sgd`)."""
    import os
    import subprocess
    import sys

    import bioclip_hf.training.trainer as train_module

    script = tmp_path / "worker.py"
    script.write_text(
        f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        f"from test_training_trainer import _two_process_worker\n_two_process_worker({model_json!r}, {str(tmp_path / 'ddp')!r})\n"
    )
    # Processes are started fresh (never forked from this one: fork after OpenMP/gloo use can deadlock).
    # Without GPUs, ACCELERATE_USE_CPU makes accelerate's torchrun-based launch run gloo on CPU.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    monkeypatch.setattr(train_module, "build_optimizer", _sgd)
    single = _weights(train(_config(model_json, tmp_path / "single", max_steps=3, batch_size=8), data_fn=ListData(batch_size=8)))
    ddp = _weights(tmp_path / "ddp" / "model")
    start = _weights(train(_config(model_json, tmp_path / "start", max_steps=1, learning_rate=1e-12), data_fn=ListData()))
    atol = _sgd_atol(start, single, steps=3)
    _assert_same_weights(ddp, single, atol=atol)
    # Not vacuous: training moved the weights 1,000x further than the tolerance.
    assert _max_abs_diff(ddp, start) > 1000 * atol
