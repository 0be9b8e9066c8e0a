"""Fine-tuning on labelled photos (`bioclip_hf.training.finetune`): it learns on real photos, WiSE-FT endpoints are
exact, LoRA merged equals the adapter on its base, resume is exact, and the output folder predicts its own classes."""

from __future__ import annotations

import json

import pytest
import torch
from support.finetune import Preempted, quick_config, read_weights, save_tiny_base, stop_at
from support.labelled import make_labelled_folder

from bioclip_hf.cli import main
from bioclip_hf.training.finetune import finetune
from bioclip_hf.training.finetune_methods import wise_ft


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return save_tiny_base(tmp_path_factory.mktemp("finetune_base") / "tiny", size=224)


@pytest.fixture(scope="module")
def coloured(tmp_path_factory):
    """4 classes x 5 generated photos (fast to decode), with lineages (folder form: labels only)."""
    return make_labelled_folder(tmp_path_factory.mktemp("finetune_photos"), n_classes=4, per_class=5, from_birds=False)


# -- WiSE-FT ------------------------------------------------------------------------------------------
def test_wise_ft_endpoints_are_the_tensors_themselves_and_the_middle_interpolates():
    base = {"w": torch.randn(3, 4), "b": torch.randn(4, dtype=torch.float16), "ids": torch.arange(5)}
    tuned = {"w": torch.randn(3, 4), "b": torch.randn(4, dtype=torch.float16), "ids": torch.arange(5)}
    start, end = wise_ft(base, tuned, 0.0), wise_ft(base, tuned, 1.0)
    assert all(start[k] is base[k] for k in base) and all(end[k] is tuned[k] for k in tuned)
    middle = wise_ft(base, tuned, 0.25)
    # float32 lerp: one rounding of a + w (b - a), then the cast back to the stored dtype.
    assert torch.allclose(middle["w"], 0.75 * base["w"] + 0.25 * tuned["w"], rtol=0, atol=4 * 2**-24 * 8)
    assert middle["b"].dtype == torch.float16 and torch.equal(middle["ids"], base["ids"])
    with pytest.raises(ValueError, match="alpha must be in"):
        wise_ft(base, tuned, 1.5)
    with pytest.raises(ValueError, match="differ in 1 key"):
        wise_ft(base, {k: v for k, v in tuned.items() if k != "b"}, 0.5)


def test_wise_ft_zero_ships_the_base_weights_bit_identically(tiny_base, coloured, tmp_path):
    result = finetune(quick_config(coloured.root, tiny_base, tmp_path / "out", method="full", max_steps=2,
                                   wise_ft=0.0, learning_rate=1e-2))  # fmt: skip
    shipped, base = read_weights(result.output_dir), read_weights(tiny_base)
    assert shipped.keys() == base.keys() and all(torch.equal(shipped[k], base[k]) for k in base)
    # The un-interpolated fine-tune was scored too, and it differs from what was shipped.
    assert "fine_tuned_before_wise_ft" in result.results["held_out"]
    assert result.results["hyperparameters"]["wise_ft_alpha"] == 0.0


# -- LoRA ---------------------------------------------------------------------------------------------
def test_lora_merged_model_equals_adapter_on_base(tiny_base, coloured, tmp_path):
    from peft import PeftModel

    from bioclip_hf import BioCLIPModel

    out = tmp_path / "lora"
    finetune(quick_config(coloured.root, tiny_base, out, method="lora", lora_rank=4, max_steps=3, learning_rate=3e-2,
                          save_adapter=True))  # fmt: skip
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_base) and adapter["r"] == 4
    merged = BioCLIPModel.from_pretrained(out).eval()
    base = BioCLIPModel.from_pretrained(tiny_base).eval()
    pixels = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = base.encode_image(pixels, normalize=True)
        on_base = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
        adapted = on_base.base_model.model.encode_image(pixels, normalize=True)
        got = merged.encode_image(pixels, normalize=True)
    # Merged: x (W + s B A); adapter: x W + s (x A) B. The two reassociate the float32 sums of each of the
    # 2 layers x 4 adapted projections (width 32): per projection at most 32 ulps (2^-24) of the unit feature scale.
    atol = 2 * 4 * 32 * 2**-24
    assert (adapted - got).abs().max() <= atol
    assert (plain - got).abs().max() > 100 * atol  # the adapter did change the model


# -- resume -------------------------------------------------------------------------------------------
def test_resume_after_a_kill_gives_bit_identical_weights(tiny_base, coloured, tmp_path):
    # dropout draws from torch's RNG every step, and checkpoint 3 lies inside epoch 1 (4 batches per epoch): the
    # resumed run must continue the same data order, crops and random stream mid-epoch
    options = dict(method="lora", max_steps=6, save_steps=3, batch_size=4, learning_rate=1e-2, lora_dropout=0.1,
                   augment="random_resized_crop")  # fmt: skip
    straight = finetune(quick_config(coloured.root, tiny_base, tmp_path / "straight", **options))
    killed = quick_config(coloured.root, tiny_base, tmp_path / "killed", **options)
    with pytest.raises(Preempted):
        finetune(killed, on_step=stop_at(5))  # the kill lands in epoch 2, after checkpoint 3 (mid-epoch 1)
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir()) == ["checkpoint-3"]
    resumed = finetune(quick_config(coloured.root, tiny_base, tmp_path / "killed", resume="latest", **options))
    want, got = read_weights(straight.output_dir), read_weights(resumed.output_dir)
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert resumed.results["training"]["steps"] == 6 and not (tmp_path / "killed" / "checkpoints").exists()


# -- it learns, and the output predicts its own classes ------------------------------------------------
def test_finetune_raises_held_out_accuracy_on_real_photos_and_the_folder_predicts_its_classes(tmp_path, capsys):
    birds = make_labelled_folder(tmp_path, n_classes=6, per_class=5, from_birds=True)
    base = save_tiny_base(tmp_path / "base224", size=224)
    out = tmp_path / "birds-ft"
    result = finetune(quick_config(birds.root, base, out, method="full", val_fraction=0.4, max_steps=20, batch_size=32,
                                   learning_rate=1e-3, open_clip_copy=True))  # fmt: skip
    held_out = result.results["held_out"]
    before, after = held_out["before"]["top1_accuracy"], held_out["after"]["top1_accuracy"]
    assert held_out["after"]["num_examples"] == 12  # 2 of 5 photos per class held out
    assert before <= 3 / 12 and after >= 5 / 12, (before, after)  # chance is 2/12; measured: 2/12 -> 6/12
    card = (out / "README.md").read_text()
    assert f"| top-1 | {100 * before:.1f} | {100 * after:.1f} |" in card
    assert "Forgetting was not measured" in card
    results = json.loads((out / "results.json").read_text())
    assert results["held_out"]["after"] == held_out["after"] and results["data"]["classes"] == birds.labels
    assert {"open_clip_config.json", "open_clip_model.safetensors", "label_index"} <= {p.name for p in out.iterdir()}

    photo = birds.root / birds.labels[0] / "1.jpg"
    capsys.readouterr()
    assert main(["predict", "--model", str(out), str(photo), "--k", "6", "--format", "json", "--no-progress"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert sorted(r["taxon"] for r in records) == birds.labels
    assert abs(sum(r["score"] for r in records) - 1) < 1e-5
