"""One loading path for every command: with an offline HF cache whose `main` is not bioclip-2's pinned commit,
`convert` (both directions), `train --init_from`, `push` and `embed`/`predict` all load the pinned weights; an
explicit `--revision` still overrides the pin; a pinned commit missing from the offline cache is one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support.hub_cache import OTHER_COMMIT
from support.models import write_model_release
from support.training import TRAIN_CFG, fresh_accelerate_state  # noqa: F401  (autouse fixture)

from bioclip_hf.cli import main
from bioclip_hf.hub.registry import get_entry

REPO = "imageomics/bioclip-2"
PINNED = get_entry(REPO).revision
# `main` has another architecture too (24 px images, the pin 30 px): loading its config or processor instead shows.
MAIN_CFG = TRAIN_CFG


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 and a fresh cache under tmp_path holding bioclip-2 at the pin (seed 0, no branch points to
    it) and at `main` (seed 1, a different commit); returns {"cache", "pinned", "main"} (open_clip models)."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # constants are read once, at import
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    pinned = write_model_release(cache, REPO, tmp_path / "work", seed=0, commit=PINNED, ref=None)
    newer = write_model_release(cache, REPO, tmp_path / "work", seed=1, commit=OTHER_COMMIT, model_cfg=MAIN_CFG)
    assert (cache / "models--imageomics--bioclip-2" / "refs" / "main").read_text() == OTHER_COMMIT
    # Not vacuous: the two commits hold different weights of the tensor compared below.
    assert not torch.equal(pinned.visual.proj, newer.visual.proj)
    return {"cache": cache, "pinned": pinned, "main": newer}


def _proj(open_clip_model) -> torch.Tensor:
    """open_clip's image projection `[width, embed]`; ours is its transpose (`visual_projection.weight`)."""
    return open_clip_model.visual.proj.detach()


def _saved(folder: Path, filename: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / filename))


def test_convert_both_directions_loads_the_pinned_commit(offline_cache, tmp_path, capsys):
    pinned, newer = _proj(offline_cache["pinned"]), _proj(offline_cache["main"])
    assert main(["convert", REPO, str(tmp_path / "hf")]) == 0
    assert torch.equal(_saved(tmp_path / "hf", "model.safetensors")["visual_projection.weight"], pinned.T)
    assert json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())["size"] == 30  # the pin's, not 24
    assert main(["convert", f"hf-hub:{REPO}", str(tmp_path / "oc"), "--to", "open_clip"]) == 0
    assert torch.equal(_saved(tmp_path / "oc", "open_clip_model.safetensors")["visual.proj"], pinned)
    # --revision overrides the pin in both directions.
    assert main(["convert", REPO, str(tmp_path / "hf-main"), "--revision", "main"]) == 0
    assert torch.equal(_saved(tmp_path / "hf-main", "model.safetensors")["visual_projection.weight"], newer.T)
    assert main(["convert", REPO, str(tmp_path / "oc-main"), "--to", "open_clip", "--revision", OTHER_COMMIT]) == 0
    assert torch.equal(_saved(tmp_path / "oc-main", "open_clip_model.safetensors")["visual.proj"], newer)


def test_train_init_from_builds_the_pinned_commit(offline_cache):
    from bioclip_hf.training.config import TrainConfig
    from bioclip_hf.training.model_init import build_model_and_processor

    model, processor = build_model_and_processor(TrainConfig(init_from=REPO))
    assert torch.equal(model.visual_projection.weight, _proj(offline_cache["pinned"]).T)
    assert model.bioclip_source == {"id": REPO, "revision": PINNED, "commit": PINNED}
    assert processor.image_processor.size == 30 and next(model.parameters()).device.type == "cpu"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from support.training_data import make_shards

    out = tmp_path_factory.mktemp("pin_shards") / "shards"
    make_shards(out, num_images=8, shard_size=8, bad_rows=False)
    return out


def test_cli_train_init_from_starts_at_the_pinned_commit(offline_cache, shards, tmp_path, capsys):
    lr = 1e-6
    argv = ["train", "--init_from", REPO, "--train_data", str(shards), "--batch_size", "2", "--max_steps", "1",
            "--warmup_steps", "0", "--learning_rate", str(lr), "--shuffle_buffer", "0", "--report_to", "none",
            "--progress_bar", "false", "--output_dir", str(tmp_path / "run"), "--save_total_limit", "0"]  # fmt: skip
    assert main(argv) == 0
    model_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    trained = _saved(model_dir, "model.safetensors")["visual_projection.weight"]
    # One AdamW step moves each weight by at most lr * (|m / (sqrt(v) + eps)| <= 1, plus decay lr * wd * |w| << lr):
    # the run started from the pin, whose weights differ from main's by orders of magnitude more.
    torch.testing.assert_close(trained, _proj(offline_cache["pinned"]).T, atol=2 * lr, rtol=0)
    assert json.loads((model_dir / "preprocessor_config.json").read_text())["size"] == 30


def test_push_stages_the_pinned_commit(offline_cache, tmp_path):
    pinned, newer = _proj(offline_cache["pinned"]), _proj(offline_cache["main"])
    staged = tmp_path / "staged"
    assert main(["push", f"hf-hub:{REPO}", "me/bioclip-2-copy", "--dry-run", str(staged)]) == 0
    assert torch.equal(_saved(staged, "model.safetensors")["visual_projection.weight"], pinned.T)
    assert torch.equal(_saved(staged, "open_clip_model.safetensors")["visual.proj"], pinned)
    staged_main = tmp_path / "staged-main"
    assert main(["push", REPO, "me/bioclip-2-copy", "--dry-run", str(staged_main), "--revision", "main"]) == 0
    assert torch.equal(_saved(staged_main, "model.safetensors")["visual_projection.weight"], newer.T)


def test_embed_and_predict_use_the_pinned_commit(offline_cache, tmp_path, capsys):
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    snapshots = offline_cache["cache"] / "models--imageomics--bioclip-2" / "snapshots"

    def embed(name, *model):
        out = tmp_path / f"{name}.npy"
        assert main(["embed", str(photos), "-o", str(out), "--no-progress", "--device", "cpu", *map(str, model)]) == 0
        return np.load(out)

    default = embed("default")  # --model defaults to imageomics/bioclip-2
    pinned_folder, main_folder = embed("pinned", "--model", snapshots / PINNED), embed("main", "--model", snapshots / OTHER_COMMIT)
    # Same model, same images, same process: only summation order could differ; unit vectors of 16 float32s.
    np.testing.assert_allclose(default, pinned_folder, atol=1e-6, rtol=0)
    assert np.abs(default - main_folder).max() > 1e-2
    capsys.readouterr()
    assert main(["predict", str(photos), "--labels", "corvus,pica", "--format", "json", "--no-progress",
                 "--device", "cpu", "--log", str(tmp_path / "log.json")]) == 0  # fmt: skip
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["model"]["commit"] == PINNED, log


def test_missing_pin_is_one_line_for_convert_train_and_push(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_model_release(cache, REPO, tmp_path / "work", seed=1, commit=OTHER_COMMIT)  # main only
    for command in (["convert", REPO, tmp_path / "out"], ["convert", REPO, tmp_path / "oc", "--to", "open_clip"],
                    ["push", REPO, "me/x", "--dry-run", tmp_path / "staged"],
                    ["train", "--init_from", REPO, "--train_data", tmp_path, "--output_dir", tmp_path / "run"]):  # fmt: skip
        assert main([str(a) for a in command]) == 2, command
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{REPO} at commit {PINNED} is not in the offline Hugging Face cache" in err, err
        assert OTHER_COMMIT in err
