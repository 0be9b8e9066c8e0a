"""`--quantize int8`: the image encoder's Linear layers in dynamic int8, saved and reloaded (no pickle), cached per
model weights; and the CLI's `--dtype` / `--quantize` flags with what `predict --log` records."""

from __future__ import annotations

import json

import pytest
import torch

from bioclip_hf.models import precision as prec
from bioclip_hf.models import quantize as quant


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("BIOCLIP_HF_CACHE", str(folder))
    return folder


@pytest.fixture
def cpu_flags(monkeypatch):
    monkeypatch.setattr(prec, "AUTO_BF16", True)  # the choice once bf16 passes the agreement rule

    def set_flags(flags: str) -> None:
        monkeypatch.setenv(prec.FLAGS_ENV, flags)
        prec.cpu_capability.cache_clear()

    yield set_flags
    prec.cpu_capability.cache_clear()


def _model(tiny_hf_dir):
    from bioclip_hf.models.loading import load_model, resolve_model_source

    return load_model(resolve_model_source(str(tiny_hf_dir)), "cpu")


PIXELS = torch.randn(4, 3, 30, 30, generator=torch.Generator().manual_seed(0))


def test_quantized_layers_save_and_reload_exactly(tiny_hf_dir, tmp_path):
    reference, model = _model(tiny_hf_dir), _model(tiny_hf_dir)
    quant.quantize_image_encoder(model, cache=False)
    layers = quant._targets(model)
    assert layers and all(isinstance(layer, quant._quantized_module_type()) for layer in layers.values())
    assert isinstance(model.text_model.encoder.layers[0].mlp.fc1, torch.nn.Linear)  # the text encoder stays float
    with torch.no_grad():
        want, exact = model.encode_image(PIXELS, normalize=True), reference.encode_image(PIXELS, normalize=True)
    assert want.dtype == torch.float32
    # Symmetric per-channel int8 weights (error <= scale/2 = max|w|/254 per weight) plus per-batch uint8
    # activations: features stay close in direction.
    assert torch.nn.functional.cosine_similarity(want, exact).min() > 0.98
    path = quant.save_quantized(model, tmp_path / "image-int8.safetensors")
    assert path.read_bytes()[:8] and not list(tmp_path.glob(".image-int8*"))  # written atomically
    fresh = quant.load_quantized(_model(tiny_hf_dir), path)
    with torch.no_grad():
        assert torch.equal(fresh.encode_image(PIXELS, normalize=True), want)


def test_load_refuses_other_files(tiny_hf_dir, tmp_path):
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(1)}, str(other), metadata={"format": "1", "scheme": "int8"})
    with pytest.raises(ValueError, match="no quantized weights for vision_model"):
        quant.load_quantized(_model(tiny_hf_dir), other)
    save_file({"x": torch.zeros(1)}, str(other))
    with pytest.raises(ValueError, match="not a bioclip-hf int8"):
        quant.load_quantized(_model(tiny_hf_dir), other)
    with pytest.raises(ValueError, match="is not quantized"):
        quant.save_quantized(_model(tiny_hf_dir), tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="unsupported quantization"):
        quant.quantize_image_encoder(_model(tiny_hf_dir), "int4")


def test_the_cache_is_hit_per_model_weights(tiny_hf_dir, cache_dir, monkeypatch, tmp_path):
    from bioclip_hf.inference.classify import CustomLabelsClassifier

    first = CustomLabelsClassifier(["a", "b"], model_name_or_path=str(tiny_hf_dir), device="cpu", quantize="int8",
                                   num_workers=0)  # fmt: skip
    assert first.precision.quantize == "int8" and first.precision.dtype == "float32"
    files = list((cache_dir / "quantized").glob("*.safetensors"))
    assert len(files) == 1
    calls = []
    monkeypatch.setattr(quant, "_quantize_linear", lambda layer: calls.append(layer) or pytest.fail("re-quantized"))
    second = CustomLabelsClassifier(["a", "b"], model_name_or_path=str(tiny_hf_dir), device="cpu", num_workers=0,
                                    quantize="int8")  # fmt: skip
    assert not calls
    assert torch.equal(second.encode_pixels(PIXELS), first.encode_pixels(PIXELS))
    assert second.provenance()["precision"]["quantize"] == "int8"
    # Other weights (a copy of the folder with a changed file) get their own cache entry.
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_hf_dir, copy)
    (copy / "model.safetensors").write_bytes((copy / "model.safetensors").read_bytes())
    assert quant.cache_file(_model(copy)) != quant.cache_file(_model(tiny_hf_dir))


def test_quantize_needs_a_loaded_model_and_float32_activations(tiny_model_and_processor, tiny_hf_dir):
    from bioclip_hf.inference.classifier_base import BaseClassifier

    model, processor = tiny_model_and_processor
    with pytest.raises(ValueError, match="quantize applies to models the classifier loads"):
        BaseClassifier(model, processor, quantize="int8")
    with pytest.raises(ValueError, match="float32 activations"):
        BaseClassifier(model_name_or_path=str(tiny_hf_dir), device="cpu", dtype="bfloat16", quantize="int8")


def _predict(capsys, *argv):
    from bioclip_hf.cli import main

    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("dtype", ["auto", "float32", "bfloat16", "float16"])
def test_cli_dtype_flags_and_the_log(dtype, tiny_hf_dir, bird_photos, tmp_path, capsys, cpu_flags, cache_dir):
    cpu_flags("avx2")  # this machine's kind: auto -> float32
    log = tmp_path / "run.json"
    code, out, err = _predict(capsys, "predict", bird_photos[0], bird_photos[1], "--labels", "duck,goose,crow",
                              "--model", tiny_hf_dir, "--dtype", dtype, "--log", log, "--no-progress",
                              "--num-workers", 0)  # fmt: skip
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1 + 2 * 3  # header + k=3 rows per photo
    record = json.loads(log.read_text())
    expected = "float32" if dtype == "auto" else dtype
    assert record["dtype"] == expected and record["precision"]["requested"] == dtype
    assert record["precision"]["reason"] and record["settings"]["dtype"] == dtype
    if dtype == "auto":
        assert "no native bf16" in record["precision"]["reason"]
    if dtype == "bfloat16":
        assert record["precision"]["weights"] == "bfloat16"


def test_cli_auto_on_a_bf16_cpu_and_int8(tiny_hf_dir, bird_photos, tmp_path, capsys, cpu_flags, cache_dir):
    cpu_flags("avx2 avx512f avx512_bf16")
    log = tmp_path / "auto.json"
    code, _, err = _predict(capsys, "predict", bird_photos[0], "--labels", "duck,goose", "--model", tiny_hf_dir,
                            "--log", log, "--no-progress", "--num-workers", 0)  # fmt: skip
    assert code == 0, err
    precision = json.loads(log.read_text())["precision"]
    assert (precision["dtype"], precision["weights"]) == ("bfloat16", "bfloat16") and "avx512_bf16" in precision["reason"]
    log = tmp_path / "int8.json"
    code, out, err = _predict(capsys, "embed", bird_photos[0], "-o", tmp_path / "emb.npy", "--model", tiny_hf_dir,
                              "--quantize", "int8", "--no-progress", "--num-workers", 0)  # fmt: skip
    assert code == 0, err
    code, out, err = _predict(capsys, "predict", bird_photos[0], "--labels", "duck,goose", "--model", tiny_hf_dir,
                              "--quantize", "int8", "--log", log, "--no-progress", "--num-workers", 0)  # fmt: skip
    assert code == 0, err
    precision = json.loads(log.read_text())["precision"]
    assert (precision["dtype"], precision["quantize"]) == ("float32", "int8")
    assert len(list((cache_dir / "quantized").glob("*.safetensors"))) == 1  # embed quantized, predict reused it
    with pytest.raises(SystemExit):
        _predict(capsys, "predict", bird_photos[0], "--labels", "a,b", "--model", tiny_hf_dir, "--quantize", "int4")
