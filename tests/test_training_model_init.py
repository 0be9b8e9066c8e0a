"""Starting from OpenAI CLIP in every layout users hold: transformers `CLIPModel` (openai/clip-vit-base-patch16),
open_clip's Hub layout (timm/vit_base_patch16_clip_224.openai), a bare open_clip state dict, OpenAI's TorchScript
archive. The same weights give identical models, and the tokenizer stays open_clip's."""

from __future__ import annotations

import json
import types

import pytest
import torch

from bioclip_hf.models.checkpoints import infer_open_clip_config
from bioclip_hf.training.config import TrainConfig
from bioclip_hf.training.model_init import build_model_and_processor

# Tiny, but with OpenAI's 64-wide attention heads (head counts cannot be read off weights; OpenAI's are width / 64).
ARCH = {"embed_dim": 16, "vision_cfg": {"image_size": 30, "layers": 2, "width": 64, "patch_size": 3, "head_width": 64},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2}}  # fmt: skip
OPENAI_CFG = {**ARCH, "quick_gelu": True}  # OpenAI CLIP uses QuickGELU
NAMES = ["a photo of Corvus corax.", "Ünïcödé  &amp; <b>HTML</b>   Pica pica", "x " * 100]


@pytest.fixture(scope="module")
def openai_layouts(tmp_path_factory):
    """One random OpenAI-style CLIP saved in four layouts; returns (open_clip model, {layout: path})."""
    from open_clip.push_to_hf_hub import save_for_hf
    from safetensors.torch import save_file
    from support.models import import_open_clip
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    from bioclip_hf import BioCLIPConfig, load_tokenizer
    from bioclip_hf.models.bioclip.open_clip_format import open_clip_to_hf_state_dict

    open_clip = import_open_clip()
    root = tmp_path_factory.mktemp("openai")
    torch.manual_seed(7)
    reference = open_clip.model.CLIP(**OPENAI_CFG).eval()
    reference.visual.image_mean, reference.visual.image_std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    paths = {name: root / name for name in ("open_clip", "transformers", "file.safetensors", "file.pt", "jit.pt")}
    save_for_hf(reference, types.SimpleNamespace(save_pretrained=lambda d: None), OPENAI_CFG, str(paths["open_clip"]),
                safe_serialization=True)  # fmt: skip
    # transformers layout, as openai/clip-vit-base-patch16: CLIPModel config.json + weights + CLIP tokenizer/processor
    ours = BioCLIPConfig.from_open_clip(OPENAI_CFG)
    clip_config = CLIPConfig(text_config=ours.text_config.to_dict(), vision_config=ours.vision_config.to_dict(),
                             projection_dim=ours.projection_dim)  # fmt: skip
    clip = CLIPModel(clip_config)
    clip.load_state_dict(open_clip_to_hf_state_dict(reference.state_dict()), strict=False)
    clip.save_pretrained(paths["transformers"])
    bpe = json.loads(load_tokenizer().backend_tokenizer.to_str())["model"]  # CLIP's vocabulary and merges
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in bpe["merges"]]
    vocab = {{"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}.get(k, k): v for k, v in bpe["vocab"].items()}
    CLIPTokenizer(vocab=vocab, merges=merges).save_pretrained(paths["transformers"])  # OpenAI's token names and defaults
    CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30}).save_pretrained(paths["transformers"])
    state = reference.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(paths["file.safetensors"]))
    torch.save(state, paths["file.pt"])
    traced = torch.jit.trace_module(reference, {"encode_image": torch.zeros(1, 3, 30, 30)}, check_trace=False)
    traced.save(str(paths["jit.pt"]))  # TorchScript, like OpenAI's ViT-B-16.pt
    return reference, paths


def _build(path, **overrides):
    return build_model_and_processor(TrainConfig(init_from=str(path), **overrides))


@pytest.mark.float_sensitive
def test_the_same_weights_in_every_layout_give_identical_models(openai_layouts):
    reference, paths = openai_layouts
    assert json.loads((paths["transformers"] / "config.json").read_text())["model_type"] == "clip"
    models = {name: _build(path, allow_pickle=name.endswith(".pt"))[0] for name, path in paths.items()}
    first = models["open_clip"].state_dict()
    for name, model in models.items():
        assert model.config.vision_config.hidden_act == model.config.text_config.hidden_act == "quick_gelu", name
        state = model.state_dict()
        assert state.keys() == first.keys() and all(torch.equal(state[k], first[k]) for k in first), name
    pixels = torch.randn(2, 3, 30, 30, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference.encode_image(pixels)
        for name, model in models.items():
            # Same weights, same ops; the two implementations order a few float32 reductions differently.
            torch.testing.assert_close(model.eval().encode_image(pixels), expected, atol=1e-5, rtol=1e-5, msg=name)


def test_the_tokenizer_stays_open_clips_from_every_layout(openai_layouts):
    from support.models import import_open_clip
    from transformers import CLIPTokenizer

    _, paths = openai_layouts
    expected = import_open_clip().tokenize(NAMES)
    for name, path in paths.items():
        processor = _build(path, allow_pickle=name.endswith(".pt"))[1]
        ids = processor.tokenize(NAMES)["input_ids"]
        assert torch.equal(ids, expected), name  # pad id 0, open_clip's cleaning (HTML, whitespace, case)
        assert processor.image_processor.size == 30 and processor.image_processor.crop_size == 30
    # Not vacuous: the checkpoint's own CLIP tokenizer pads with <|endoftext|> (49407), not 0.
    own = CLIPTokenizer.from_pretrained(paths["transformers"])(NAMES[:1], padding="max_length", max_length=77)["input_ids"]
    assert own[0][-1] == 49407 != expected[0, -1]


def test_architecture_is_read_off_the_weights_and_model_config_overrides(openai_layouts, tmp_path):
    reference, paths = openai_layouts
    inferred = infer_open_clip_config(reference.state_dict())
    assert inferred == {**OPENAI_CFG, "vision_cfg": {**ARCH["vision_cfg"], "mlp_ratio": 4.0}}
    gelu = tmp_path / "gelu.json"
    gelu.write_text(json.dumps(ARCH))  # no quick_gelu: a LAION-style checkpoint
    model, _ = _build(paths["file.safetensors"], model_config=str(gelu))
    assert model.config.vision_config.hidden_act == "gelu"
    with pytest.raises(ValueError, match="pickle"):
        _build(paths["file.pt"])  # pickle and TorchScript files need allow_pickle
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="not a weights file"):
        _build(tmp_path / "notes.txt")
