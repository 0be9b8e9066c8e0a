"""`--dtype auto`: the CPU-capability detection (mocked), the choice per CPU kind and model, bf16 weights, float32
scores, and the classifier's precision record."""

from __future__ import annotations

import pytest
import torch

from bioclip_hf.models import precision as prec
from bioclip_hf.models.precision import CpuCapability, resolve_auto_dtype, resolve_precision, training_precision

AVX2 = CpuCapability(frozenset({"avx", "avx2", "fma"}), "test")
ZEN4 = CpuCapability(frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}), "test")
SAPPHIRE_RAPIDS = CpuCapability(frozenset({"avx2", "avx512f", "amx_bf16", "amx_tile", "amx_int8"}), "test")


@pytest.fixture(autouse=True)
def rule_passed(monkeypatch):
    """The choice as it will be once bf16 passes the agreement rule (`AUTO_BF16`); `test_the_shipped_gate` checks
    the shipped value."""
    monkeypatch.setattr(prec, "AUTO_BF16", True)


@pytest.fixture
def cpu_flags(monkeypatch):
    """Set the flags `cpu_capability()` reports (through the documented env override)."""

    def set_flags(flags: str) -> None:
        monkeypatch.setenv(prec.FLAGS_ENV, flags)
        prec.cpu_capability.cache_clear()

    yield set_flags
    prec.cpu_capability.cache_clear()


def test_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\n")
    flags, source = prec._detect_flags(cpuinfo, system="Linux")
    assert {"avx2", "avx512_bf16"} <= flags and source == str(cpuinfo)
    assert prec._detect_flags(cpuinfo, system="Darwin") == (frozenset(), "unavailable")  # macOS: nothing proven
    assert prec._detect_flags(tmp_path / "absent", system="Linux") == (frozenset(), "unavailable")


def test_env_override_and_capabilities(cpu_flags):
    cpu_flags("avx2, AVX512_BF16")
    capability = prec.cpu_capability()
    assert capability.native_bf16 and capability.source == prec.FLAGS_ENV
    cpu_flags("avx2 fma")
    assert not prec.cpu_capability().native_bf16
    assert SAPPHIRE_RAPIDS.native_bf16 and SAPPHIRE_RAPIDS.vnni and ZEN4.vnni and not AVX2.vnni
    # A bf16 flag counts only where torch's oneDNN runs bf16.
    assert not CpuCapability(ZEN4.flags, "test", onednn_bf16=False).native_bf16


@pytest.mark.parametrize(("device", "capability", "trained", "expected"), [
    ("cpu", AVX2, "pure_bf16", "float32"),  # no native bf16: emulated bf16 would be slower
    ("cpu", ZEN4, "pure_bf16", "bfloat16"),  # AVX512-BF16
    ("cpu", SAPPHIRE_RAPIDS, "amp_fp16", "bfloat16"),  # AMX, mixed-precision model
    ("cpu", ZEN4, "unknown", "bfloat16"),  # folders and unknown models count as mixed precision
    ("cpu", ZEN4, "float32", "float32"),  # a model recorded as float32-only
    ("cpu", CpuCapability(frozenset(), "unavailable"), "pure_bf16", "float32"),  # macOS / unreadable flags
    ("cuda", ZEN4, "pure_bf16", "float32"),  # CUDA keeps today's float32
    ("cuda:1", AVX2, "amp_fp16", "float32"),
    ("mps", ZEN4, "pure_bf16", "float32"),
])  # fmt: skip
def test_auto_dtype_per_cpu_kind(device, capability, trained, expected):
    dtype, reason = resolve_auto_dtype(device, trained, capability)
    assert dtype == expected and reason
    assert resolve_precision("auto", device, trained, capability).dtype == expected


def test_the_shipped_gate_keeps_bf16_opt_in_until_the_rule_passes(monkeypatch):
    """bench_cpu_precision.py: bf16 failed the rule on the trained model, so auto is float32 even where bf16 is native."""
    monkeypatch.setattr(prec, "AUTO_BF16", False)
    for capability in (ZEN4, SAPPHIRE_RAPIDS, AVX2):
        dtype, reason = resolve_auto_dtype("cpu", "pure_bf16", capability)
        assert dtype == "float32"
    assert "agreement rule" in resolve_auto_dtype("cpu", "pure_bf16", ZEN4)[1]
    assert "--dtype bfloat16 opts in" in resolve_auto_dtype("cpu", "pure_bf16", SAPPHIRE_RAPIDS)[1]
    assert resolve_precision("bfloat16", "cpu").dtype == "bfloat16"  # explicit bf16 still runs


def test_auto_dtype_reasons_name_the_cause():
    assert "avx512_bf16" in resolve_auto_dtype("cpu", "pure_bf16", ZEN4)[1]
    assert "amx_bf16" in resolve_auto_dtype("cpu", "pure_bf16", SAPPHIRE_RAPIDS)[1]
    assert "no native bf16" in resolve_auto_dtype("cpu", "pure_bf16", AVX2)[1]
    assert "float32" in resolve_auto_dtype("cpu", "float32", ZEN4)[1]


def test_training_precision_from_registry_and_config(tmp_path):
    assert training_precision("hf-hub:imageomics/bioclip-2") == "pure_bf16"
    assert training_precision("imageomics/bioclip") == "amp_fp16"
    assert training_precision("someone/other-clip") == "unknown"
    assert training_precision(tmp_path) == "unknown"  # a folder: the registry does not apply

    class Config:
        training_precision = "float32"

    assert training_precision("imageomics/bioclip-2", Config()) == "float32"  # recorded in the saved config: wins
    Config.training_precision = "something odd"
    assert training_precision(None, Config()) == "unknown"


def test_explicit_dtypes_weights_and_errors():
    on_cpu = resolve_precision("bfloat16", "cpu")
    assert (on_cpu.dtype, on_cpu.weights, on_cpu.autocast) == ("bfloat16", "bfloat16", torch.bfloat16)
    assert resolve_precision(torch.bfloat16, "cuda").weights == "float32"  # CUDA: autocast over float32 weights
    assert resolve_precision("float16", "cpu").weights == "float32"
    assert resolve_precision("float32", "cpu", capability=ZEN4).autocast is None
    assert resolve_precision(None, "cpu", "pure_bf16", AVX2).requested == "auto"
    int8 = resolve_precision("auto", "cpu", "pure_bf16", ZEN4, quantize="int8")
    assert (int8.dtype, int8.quantize, int8.weights) == ("float32", "int8", "float32")
    with pytest.raises(ValueError, match="float32 activations"):
        resolve_precision("bfloat16", "cpu", quantize="int8")
    with pytest.raises(ValueError, match="CPU only"):
        resolve_precision("auto", "cuda", quantize="int8")
    with pytest.raises(ValueError, match="unsupported dtype"):
        resolve_precision("int4", "cpu")
    with pytest.raises(ValueError, match="unsupported quantize"):
        resolve_precision("auto", "cpu", quantize="int4")
    assert set(resolve_precision("auto", "cpu", capability=AVX2).to_dict()) == {"requested", "dtype", "weights", "quantize", "reason"}


def _fresh_model(tiny_hf_dir):
    from bioclip_hf import BioCLIPModel

    return BioCLIPModel.from_pretrained(tiny_hf_dir).eval()


def test_bf16_weights_give_the_numbers_of_bf16_autocast(tiny_hf_dir):
    reference, model = _fresh_model(tiny_hf_dir), _fresh_model(tiny_hf_dir)
    before = sum(p.numel() * p.element_size() for p in model.parameters())
    prec.apply_precision(model, resolve_precision("bfloat16", "cpu"))
    prec.apply_precision(model, resolve_precision("bfloat16", "cpu"))  # idempotent
    linear = model.vision_model.encoder.layers[0].mlp.fc1
    assert linear.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.text_model.parameters())  # bf16 texts failed the rule
    assert model.vision_model.post_layernorm.weight.dtype == torch.float32
    assert model.visual_projection.weight.dtype == torch.float32
    assert sum(p.numel() * p.element_size() for p in model.parameters()) < before
    with pytest.raises(ValueError, match="load the model again"):
        prec.apply_precision(model, resolve_precision("float32", "cpu"))  # rounded weights cannot be undone
    pixels = torch.randn(2, 3, 30, 30, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([[49406, 320, 1125, 49407] + [0] * 73])
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            want_image = reference.encode_image(pixels)
            got_image = model.encode_image(pixels)  # as the classifier runs it
        alone = model.encode_image(pixels)  # no autocast around it: the image tower brings its own
        want_text, got_text = reference.encode_text(ids), model.encode_text(ids)
    assert torch.equal(got_image, want_image) and torch.equal(got_text, want_text)  # text: float32, untouched
    assert alone.dtype == torch.float32 and got_text.dtype == torch.float32
    # bf16 rounds to 2^-8 relative; the float32 projection adds up D such roundings at most.
    assert torch.allclose(alone, want_image.float(), rtol=0, atol=2.0**-8 * want_image.float().abs().max() * 4)


def test_classifier_auto_on_each_cpu_kind_keeps_float32_scores(tiny_hf_dir, cpu_flags):
    from bioclip_hf.inference.classify import CustomLabelsClassifier

    cpu_flags("avx2")
    plain = CustomLabelsClassifier(["a", "b", "c"], model_name_or_path=str(tiny_hf_dir), device="cpu", num_workers=0)
    assert plain.precision.dtype == "float32" and "no native bf16" in plain.precision.reason
    cpu_flags("avx2 avx512_bf16")
    fast = CustomLabelsClassifier(["a", "b", "c"], model_name_or_path=str(tiny_hf_dir), device="cpu", num_workers=0)
    assert fast.precision.dtype == "bfloat16" and fast.precision.weights == "bfloat16"
    assert fast.model.vision_model.encoder.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    assert fast.model.text_model.encoder.layers[0].self_attn.q_proj.weight.dtype == torch.float32
    assert fast.text_features.dtype == torch.float32
    pixels = torch.randn(3, 3, 30, 30, generator=torch.Generator().manual_seed(1))
    features = fast.encode_pixels(pixels)
    assert features.dtype == torch.float32
    assert torch.allclose(features.norm(dim=-1), torch.ones(3), atol=1e-6)  # normalised in float32
    records = fast.predict_features(["x", "y", "z"], features, k=3)
    assert all(type(r["score"]) is float for r in records)
    assert abs(sum(r["score"] for r in records[:3]) - 1.0) < 1e-6  # float32 softmax
    assert fast.provenance()["precision"]["dtype"] == "bfloat16"
    # bf16 scores stay close to float32 ones (same model, same pixels).
    reference = plain.predict_features(["x", "y", "z"], plain.encode_pixels(pixels), k=3)
    assert [r["label"] for r in reference[::3]] == [r["label"] for r in records[::3]]


def test_a_model_passed_in_is_not_modified(tiny_hf_dir, cpu_flags):
    from bioclip_hf import BioCLIPProcessor
    from bioclip_hf.inference.classifier_base import BaseClassifier

    cpu_flags("avx512_bf16")
    model, processor = _fresh_model(tiny_hf_dir), BioCLIPProcessor.from_pretrained(tiny_hf_dir)
    classifier = BaseClassifier(model, processor)
    assert classifier.precision.dtype == "bfloat16" and classifier.precision.weights == "float32"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    classifier.optimize(dtype="float32")
    assert classifier.autocast_dtype is None and classifier.precision.requested == "float32"
    classifier.optimize(compile=False)  # dtype None keeps the precision
    assert classifier.precision.requested == "float32"


def test_auto_adopts_the_precision_a_passed_in_model_already_runs_in(tiny_hf_dir):
    # The Space applies $BIOCLIP_DTYPE to its one shared model; its classifiers (dtype "auto") must report, score
    # and cache by that precision, not re-resolve their own.
    from bioclip_hf import BioCLIPProcessor
    from bioclip_hf.inference.classifier_base import BaseClassifier

    model, processor = _fresh_model(tiny_hf_dir), BioCLIPProcessor.from_pretrained(tiny_hf_dir)
    prec.apply_precision(model, resolve_precision("bfloat16", "cpu"))
    classifier = BaseClassifier(model, processor)
    assert classifier.precision is model.bioclip_precision and classifier.autocast_dtype == torch.bfloat16
    classifier.optimize(dtype="float32")  # an explicit request is still resolved as asked
    assert classifier.precision.requested == "float32"


def test_autocast_only_precisions_can_be_undone(tiny_hf_dir):
    model = _fresh_model(tiny_hf_dir)
    pixels = torch.randn(1, 3, 30, 30, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model.encode_image(pixels)
        prec.apply_precision(model, resolve_precision("float16", "cpu"))  # autocast over float32 weights
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert not torch.equal(model.encode_image(pixels), want)
        prec.apply_precision(model, resolve_precision("float32", "cpu"))
        assert torch.equal(model.encode_image(pixels), want)


@pytest.mark.parametrize(("flags", "dtype"), [("avx2", "float32"), ("avx2 avx512_bf16", "bfloat16")])
def test_evaluate_runs_in_the_auto_precision(flags, dtype, tiny_hf_dir, tmp_path, capsys, cpu_flags):
    from support.images import make_image_folder

    from bioclip_hf.cli import main

    cpu_flags(flags)
    root = make_image_folder(tmp_path / "photos")
    output = tmp_path / "results.json"
    assert main(["evaluate", "--model", str(tiny_hf_dir), "--data-dir", str(root), "--templates", "single",
                 "--shots", "--device", "cpu", "--output", str(output)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.startswith(f"precision: {dtype} (") and output.is_file()
