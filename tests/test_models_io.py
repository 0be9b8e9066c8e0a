"""Loading, saving and Hub-layout behaviour of BioCLIPModel / BioCLIPProcessor."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from support.hub_cache import write_hub_cache
from support.tolerances import FEATURE_ATOL

from bioclip_hf import BioCLIPModel, BioCLIPProcessor
from bioclip_hf.hub.registry import get_entry
from bioclip_hf.models.bioclip.open_clip_format import CheckpointFormatError

REPO_ROOT = Path(__file__).resolve().parents[1]


def _inputs(processor, n_images=3):
    torch.manual_seed(1)
    texts = ["Corvus corax", "Danaus plexippus", "Animalia Chordata Aves"]
    return processor(text=texts)["input_ids"], torch.randn(n_images, 3, 30, 30)


def test_save_load_round_trip_identical_outputs(tiny_model_and_processor, tmp_path):
    model, processor = tiny_model_and_processor
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = BioCLIPModel.from_pretrained(tmp_path).eval()
    reprocessor = BioCLIPProcessor.from_pretrained(tmp_path)
    ids, pixels = _inputs(processor)
    assert torch.equal(reprocessor(text=["Corvus corax"])["input_ids"], processor(text=["Corvus corax"])["input_ids"])
    with torch.no_grad():
        a, b = model(input_ids=ids, pixel_values=pixels), reloaded(input_ids=ids, pixel_values=pixels)
    assert torch.equal(a.logits_per_image, b.logits_per_image)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "bioclip"
    assert config["auto_map"]["AutoModel"] == "modeling_bioclip.BioCLIPModel"
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "modeling_bioclip.py").is_file()


@pytest.mark.float_sensitive
def test_batch_equivalence_and_determinism(tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    ids, pixels = _inputs(processor, n_images=4)
    with torch.no_grad():
        batched = model.encode_image(pixels, normalize=True)
        single = torch.cat([model.encode_image(pixels[i : i + 1], normalize=True) for i in range(4)])
        again = model.encode_image(pixels, normalize=True)
        text_batched = model.encode_text(ids)
        text_single = torch.cat([model.encode_text(ids[i : i + 1]) for i in range(len(ids))])
    # Batch size changes the GEMM blocking (and SIMD tails), i.e. the summation order: the outputs (|x| <= ~2.5)
    # differ by a few float32 ulps (2**-23 x 2.5 = 3e-7 each); measured <= 6e-7 on AVX-512, AVX2 and 1 thread.
    # 1e-5 leaves > 15x for other kernels; a real batching bug (padding, masks) gives O(0.1).
    assert (batched - single).abs().max() <= 1e-5
    assert (text_batched - text_single).abs().max() <= 1e-5
    assert torch.equal(batched, again)  # the same computation twice in one process is bit-identical
    assert torch.allclose(batched.norm(dim=-1), torch.ones(4), atol=1e-5)
    unnormalized = model.encode_image(pixels)
    assert not torch.allclose(unnormalized.norm(dim=-1), torch.ones(4), atol=1e-3)


@pytest.mark.float_sensitive
def test_registered_auto_classes_and_pipeline(tiny_hf_dir):
    from PIL import Image
    from transformers import AutoConfig, AutoModel, AutoModelForZeroShotImageClassification, AutoProcessor, pipeline

    import bioclip_hf

    bioclip_hf.register_auto_classes()
    assert type(AutoConfig.from_pretrained(tiny_hf_dir)).__name__ == "BioCLIPConfig"
    assert isinstance(AutoModel.from_pretrained(tiny_hf_dir), BioCLIPModel)
    assert isinstance(AutoModelForZeroShotImageClassification.from_pretrained(tiny_hf_dir), BioCLIPModel)
    assert isinstance(AutoProcessor.from_pretrained(tiny_hf_dir), BioCLIPProcessor)
    classifier = pipeline("zero-shot-image-classification", model=str(tiny_hf_dir), trust_remote_code=False)
    labels = ["Corvus corax", "Danaus plexippus", "Quercus robur"]
    result = classifier(Image.new("RGB", (48, 40), (120, 30, 200)), candidate_labels=labels)
    assert sorted(r["label"] for r in result) == sorted(labels)
    assert abs(sum(r["score"] for r in result) - 1.0) < 1e-4  # 3 float32 softmax outputs: ~1e-7
    # The pipeline's scores are the model's own softmax over logits_per_image (with its default template).
    model, processor = BioCLIPModel.from_pretrained(tiny_hf_dir).eval(), BioCLIPProcessor.from_pretrained(tiny_hf_dir)
    prompts = [f"This is a photo of {label}." for label in labels]
    with torch.no_grad():
        out = model(**processor(text=prompts, images=Image.new("RGB", (48, 40), (120, 30, 200))))
    expected = dict(zip(labels, out.logits_per_image.softmax(-1)[0].tolist()))
    for r in result:  # the same forward pass on the same inputs, only batched/called differently: ~1e-7
        assert abs(r["score"] - expected[r["label"]]) < 1e-4


def _run_isolated(code: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run Python in a fresh process (env vars such as HF_HUB_OFFLINE are read at import time)."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_trust_remote_code_without_importing_package(tiny_hf_dir, tmp_path):
    model, processor = BioCLIPModel.from_pretrained(tiny_hf_dir).eval(), BioCLIPProcessor.from_pretrained(tiny_hf_dir)
    ids, pixels = _inputs(processor)
    torch.save({"ids": ids, "pixels": pixels}, tmp_path / "inputs.pt")
    with torch.no_grad():
        expected = model(input_ids=ids, pixel_values=pixels).logits_per_image
    out = _run_isolated(f"""
        import sys, torch
        from transformers import AutoModel, AutoProcessor
        model = AutoModel.from_pretrained({str(tiny_hf_dir)!r}, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained({str(tiny_hf_dir)!r}, trust_remote_code=True)
        assert "bioclip_hf" not in sys.modules, "the package must not be needed"
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        ids = processor(text=["Corvus corax", "Danaus plexippus", "Animalia Chordata Aves"])["input_ids"]
        assert torch.equal(ids, inputs["ids"])
        with torch.no_grad():
            logits = model(input_ids=inputs["ids"], pixel_values=inputs["pixels"]).logits_per_image
        torch.save(logits, {str(tmp_path / "logits.pt")!r})
        print(type(model).__module__, type(model).__name__)
    """, env={"HF_MODULES_CACHE": str(tmp_path / "modules")}, cwd=tmp_path)
    assert "BioCLIPModel" in out and "bioclip_hf" not in out.split()[0]
    # Another process (its own thread pool and GEMM blocking): both unit features may move by FEATURE_ATOL, so a
    # logit s * cos by <= 2 s FEATURE_ATOL; a wrong model or preprocessing moves them by O(1).
    atol = 2 * float(model.logit_scale.detach().exp()) * FEATURE_ATOL
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected, rtol=0, atol=atol)


def test_offline_load_by_repo_id_from_hf_cache_open_clip_layout(tiny_open_clip, tmp_path):
    reference, path = tiny_open_clip
    cache = tmp_path / "hub"
    write_hub_cache(cache, "imageomics/bioclip", {
        "open_clip_config.json": path / "open_clip_config.json",
        "open_clip_model.safetensors": path / "open_clip_model.safetensors",
        "open_clip_pytorch_model.bin": path / "open_clip_pytorch_model.bin",
    })
    pixels = torch.randn(2, 3, 30, 30)
    torch.save(pixels, tmp_path / "pixels.pt")
    _run_isolated(f"""
        import torch
        from bioclip_hf import BioCLIPModel, BioCLIPProcessor
        from bioclip_hf.models.loading import load_model_and_processor
        model, processor = load_model_and_processor("imageomics/bioclip", device="cpu")
        assert processor.image_processor.size == 30
        with torch.no_grad():
            torch.save(model.encode_image(torch.load({str(tmp_path / "pixels.pt")!r})), {str(tmp_path / "emb.pt")!r})
    """, env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")})
    with torch.no_grad():
        expected = reference.encode_image(pixels)
    # Ours vs open_clip's implementation (another attention kernel and GEMM order) on |x| <= ~2: measured <= 5e-7.
    assert (torch.load(tmp_path / "emb.pt") - expected).abs().max() <= 1e-5


def test_offline_load_by_repo_id_from_hf_cache_transformers_layout(tiny_hf_dir, tmp_path):
    cache = tmp_path / "hub"
    write_hub_cache(cache, "someone/bioclip-finetune", {p.name: p for p in Path(tiny_hf_dir).iterdir() if p.is_file()})
    _run_isolated("""
        from bioclip_hf import BioCLIPModel, BioCLIPProcessor
        model = BioCLIPModel.from_pretrained("someone/bioclip-finetune")
        processor = BioCLIPProcessor.from_pretrained("someone/bioclip-finetune")
        assert model.config.projection_dim == 16 and processor.image_processor.size == 30
    """, env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")})


def _copy_open_clip(src: Path, dst: Path, names=("open_clip_config.json", "open_clip_model.safetensors")) -> Path:
    dst.mkdir()
    for name in names:
        shutil.copy(src / name, dst / name)
    return dst


@pytest.mark.float_sensitive
def test_pickle_weights_refused_unless_opted_in(tiny_open_clip, tmp_path):
    reference, path = tiny_open_clip
    only_pickle = _copy_open_clip(path, tmp_path / "pkl", ("open_clip_config.json", "open_clip_pytorch_model.bin"))
    with pytest.raises(CheckpointFormatError, match="pickle"):
        BioCLIPModel.from_pretrained(only_pickle)
    model = BioCLIPModel.from_pretrained(only_pickle, allow_pickle=True).eval()
    pixels = torch.randn(1, 3, 30, 30)
    with torch.no_grad():
        # Ours vs open_clip's implementation, as above: a few float32 ulps (measured <= 5e-7), not a tolerance
        # that a wrong weight conversion (O(0.1)) could pass.
        assert (model.encode_image(pixels) - reference.encode_image(pixels)).abs().max() <= 1e-5


def test_open_clip_training_checkpoint_with_ddp_prefix(tiny_open_clip, tmp_path):
    """open_clip's own training checkpoints: {"epoch", "state_dict": {"module.<key>": ...}}."""
    from bioclip_hf.models.bioclip.open_clip_format import load_state_dict_file, open_clip_to_hf_state_dict

    reference, _ = tiny_open_clip
    ckpt = tmp_path / "epoch_3.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, ckpt)
    with pytest.raises(CheckpointFormatError, match="pickle"):
        load_state_dict_file(ckpt)
    converted = open_clip_to_hf_state_dict(load_state_dict_file(ckpt, allow_pickle=True))
    assert torch.equal(converted["visual_projection.weight"], reference.visual.proj.t())


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda cfg: cfg["vision_cfg"].update(width=64), "shape mismatch for vision_model"),
        (lambda cfg: cfg["vision_cfg"].update(timm_model_name="vit_base"), "vision_cfg.timm_model_name"),
        (lambda cfg: cfg.pop("text_cfg"), "text_cfg"),
    ],
)
def test_bad_open_clip_config_gives_clear_error(tiny_open_clip, tmp_path, mutate, message):
    _, path = tiny_open_clip
    bad = _copy_open_clip(path, tmp_path / "bad")
    cfg = json.loads((bad / "open_clip_config.json").read_text())
    mutate(cfg["model_cfg"])
    (bad / "open_clip_config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointFormatError, match=message):
        BioCLIPModel.from_pretrained(bad)


def test_bad_checkpoint_files_give_clear_errors(tiny_open_clip, tmp_path):
    _, path = tiny_open_clip
    corrupt = _copy_open_clip(path, tmp_path / "corrupt")
    (corrupt / "open_clip_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointFormatError, match="open_clip_model.safetensors"):
        BioCLIPModel.from_pretrained(corrupt)
    no_weights = _copy_open_clip(path, tmp_path / "noweights", ("open_clip_config.json",))
    with pytest.raises(CheckpointFormatError, match="no open_clip weights"):
        BioCLIPModel.from_pretrained(no_weights)
    broken_json = _copy_open_clip(path, tmp_path / "badjson")
    (broken_json / "open_clip_config.json").write_text("{not json")
    with pytest.raises(CheckpointFormatError, match="not valid JSON"):
        BioCLIPModel.from_pretrained(broken_json)
    with pytest.raises(CheckpointFormatError, match="not found"):
        BioCLIPModel.from_pretrained(str(tmp_path / "does" / "not" / "exist"))
    with pytest.raises(CheckpointFormatError, match="is a file"):
        BioCLIPModel.from_pretrained(path / "open_clip_model.safetensors")


def test_unexpected_state_dict_key_is_named(tiny_open_clip):
    from bioclip_hf.models.bioclip.open_clip_format import open_clip_to_hf_state_dict

    reference, _ = tiny_open_clip
    state = dict(reference.state_dict())
    state["visual.attn_pool.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointFormatError, match="visual.attn_pool.weight"):
        open_clip_to_hf_state_dict(state)


def test_convert_cli_both_directions_and_errors(tiny_open_clip, tmp_path, capsys):
    from support.models import import_open_clip

    from bioclip_hf.cli import main

    reference, path = tiny_open_clip
    assert main(["convert", str(path), str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "config.json").is_file() and (tmp_path / "hf" / "preprocessor_config.json").is_file()
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "oc"), "--to", "open_clip"]) == 0
    reloaded, _, _ = import_open_clip().create_model_and_transforms(f"local-dir:{tmp_path / 'oc'}")
    for key, value in reference.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not an open_clip checkpoint" in err
    assert main(["convert", str(tmp_path / "missing-dir"), str(tmp_path / "x")]) == 2
    assert "missing-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(path), str(tmp_path / "x"), "--to", "onnx"])
    assert exc.value.code == 2


def test_cli_help_is_fast():
    import resource

    # CPU seconds of the child, not wall time: a loaded machine stretches wall time, not the work done.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-m", "bioclip_hf.cli", "--help"], capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    assert proc.returncode == 0 and "convert" in proc.stdout
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, bioclip_hf.cli as c; c.build_parser(); print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"],
        capture_output=True, text=True,
    )
    assert probe.stdout.strip() == "[]", "building the CLI parser must not import torch/transformers"
    assert cpu < 5, f"--help used {cpu:.1f} s of CPU"  # coarse; the import check above is the real guard


def _preset_names():
    from bioclip_hf.models.bioclip.configuration_bioclip import BIOCLIP_PRESETS

    return sorted(BIOCLIP_PRESETS)


@pytest.mark.parametrize("preset", _preset_names())
def test_every_preset_matches_open_clips_own_model_config(preset):
    from support.models import import_open_clip

    from bioclip_hf import BIOCLIP_PRESETS, BioCLIPConfig
    from bioclip_hf.models.bioclip.configuration_bioclip import PRESET_ARCHITECTURES
    from bioclip_hf.models.bioclip.open_clip_format import check_shapes, open_clip_to_hf_state_dict

    open_clip = import_open_clip()
    open_clip_name = PRESET_ARCHITECTURES[preset]
    # open_clip's model_configs/<name>.json, read by open_clip itself.
    assert BIOCLIP_PRESETS[preset] == open_clip.get_model_config(open_clip_name)
    config = BioCLIPConfig.from_preset(preset)
    assert config.to_open_clip()["vision_cfg"]["head_width"] * config.vision_config.num_attention_heads == \
        config.vision_config.hidden_size  # fmt: skip
    with torch.device("meta"):  # shapes only: no memory, no random init cost
        reference = open_clip.model.CLIP(**open_clip.get_model_config(open_clip_name))
        ours = BioCLIPModel(config)
    check_shapes(open_clip_to_hf_state_dict(reference.state_dict()), ours.state_dict(), preset)
    with pytest.raises(ValueError, match="unknown BioCLIP preset"):
        BioCLIPConfig.from_preset("bioclip-3")


def test_every_registry_model_has_a_matching_preset():
    from bioclip_hf import BIOCLIP_PRESETS
    from bioclip_hf.hub.registry import MODELS
    from bioclip_hf.models.bioclip.configuration_bioclip import PRESET_ARCHITECTURES

    assert set(PRESET_ARCHITECTURES) == set(BIOCLIP_PRESETS)
    for entry in MODELS:
        assert PRESET_ARCHITECTURES[entry.preset] == entry.architecture, entry.repo_id
        assert BIOCLIP_PRESETS[entry.preset]["embed_dim"] == entry.embed_dim, entry.repo_id


def test_open_clip_load_honours_dtype(tiny_open_clip):
    _, path = tiny_open_clip
    model = BioCLIPModel.from_pretrained(path, dtype=torch.bfloat16)
    assert model.visual_projection.weight.dtype == torch.bfloat16


def test_official_repo_pickle_only_loads_through_loader(tiny_open_clip, tmp_path):
    """imageomics/* releases may ship only open_clip_pytorch_model.bin: the shared loader opts in for them."""
    _, path = tiny_open_clip
    cache = tmp_path / "hub"
    files = {name: path / name for name in ("open_clip_config.json", "open_clip_pytorch_model.bin")}
    write_hub_cache(cache, "imageomics/bioclip-2", files, commit=get_entry("imageomics/bioclip-2").revision)
    write_hub_cache(cache, "someone/pickled", files)
    _run_isolated("""
        import pytest
        from bioclip_hf.models.loading import load_model_and_processor
        from bioclip_hf.models.bioclip.open_clip_format import CheckpointFormatError
        model, _ = load_model_and_processor("imageomics/bioclip-2", device="cpu")
        assert model.config.projection_dim == 16
        with pytest.raises(CheckpointFormatError, match="pickle"):
            load_model_and_processor("someone/pickled", device="cpu")
    """, env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")})
