"""Readers for the checkpoint layouts a BioCLIP model can start from, and the processor each layout implies.

- a transformers checkpoint (folder or Hub repo): a BioCLIP model, or a plain `CLIPModel` such as
  `openai/clip-vit-base-patch16` (`config.json` with model_type "clip"); loaded by `models.loading`;
- an open_clip Hub-layout checkpoint (`open_clip_config.json` + weights), e.g. `timm/vit_base_patch16_clip_224.openai`
  (open_clip's `ViT-B-16`/`openai`) or `imageomics/bioclip`; loaded by `models.loading`;
- a single weights file (`model_from_weights_file`): an open_clip state dict (`.safetensors`, or `.bin`/`.pt` with
  `allow_pickle`) or OpenAI's original TorchScript archive (`ViT-B-16.pt`). Its architecture is `model_config` when
  given, else read off the tensor shapes, with QuickGELU (OpenAI CLIP's activation).

`processor_for` gives open_clip's tokenizer whatever the source (ids padded with 0 after end-of-text, open_clip's
text cleaning): a plain CLIP checkpoint's own tokenizer files (which pad with `<|endoftext|>`) are not used, and its
image size and normalisation are taken over into a `BioCLIPImageProcessor`.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")  # metadata in OpenAI's archives
_BLOCK = re.compile(r"^(visual\.transformer|transformer)\.resblocks\.(\d+)\.")


def infer_open_clip_config(state_dict: dict[str, Any], quick_gelu: bool = True) -> dict[str, Any]:
    """open_clip `model_cfg` of a ViT CLIP state dict, read off its tensor shapes (OpenAI's archives carry none).

    Head counts are not visible in the weights: OpenAI's 64-wide heads are assumed (ViT-B/16: 12, ViT-L/14: 16).

    Example:
        >>> cfg = infer_open_clip_config(torch.load("ViT-B-16.pt"))  # doctest: +SKIP
        >>> cfg["vision_cfg"]["patch_size"], cfg["embed_dim"]  # doctest: +SKIP
        (16, 512)
    """
    try:
        conv = state_dict["visual.conv1.weight"]
        width, patch = int(conv.shape[0]), int(conv.shape[-1])
        grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        text_width = int(state_dict["ln_final.weight"].shape[0])
        layers = {"visual.transformer": set(), "transformer": set()}
        for key in state_dict:
            if match := _BLOCK.match(key):
                layers[match.group(1)].add(int(match.group(2)))
        mlp = state_dict["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width
        return {
            "embed_dim": int(state_dict["text_projection"].shape[1]),
            "quick_gelu": quick_gelu,
            "vision_cfg": {"image_size": patch * grid, "layers": len(layers["visual.transformer"]), "width": width,
                           "patch_size": patch, "head_width": min(64, width), "mlp_ratio": mlp},
            "text_cfg": {"context_length": int(state_dict["positional_embedding"].shape[0]),
                         "vocab_size": int(state_dict["token_embedding.weight"].shape[0]), "width": text_width,
                         "heads": max(text_width // 64, 1), "layers": len(layers["transformer"])},
        }  # fmt: skip
    except KeyError as err:
        raise ValueError(f"not a ViT CLIP state dict in open_clip/OpenAI naming (no {err})") from None


def read_weights_file(path: Path, allow_pickle: bool) -> dict[str, Any]:
    """An open_clip/OpenAI state dict from one file (safetensors, torch pickle, or a TorchScript archive)."""
    import torch

    from bioclip_hf.models.bioclip.open_clip_format import CheckpointFormatError, load_state_dict_file

    if path.suffix != ".safetensors" and _is_torchscript(path):
        if not allow_pickle:
            raise CheckpointFormatError(f"{path} is a TorchScript archive; pass allow_pickle=True (--allow_pickle) to load it")
        # OpenAI's original ViT-B-16.pt is a TorchScript archive, not a pickled state dict.
        state = torch.jit.load(str(path), map_location="cpu").state_dict()
    else:
        state = load_state_dict_file(path, allow_pickle=allow_pickle)
    return {k: v for k, v in state.items() if k not in _OPENAI_EXTRA_KEYS}


def _is_torchscript(path: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/code/__torch__.py") or "/code/" in name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def model_from_weights_file(path: Path, model_config: str | None, allow_pickle: bool) -> Any:
    """A `BioCLIPModel` holding the weights of one open_clip/OpenAI file (architecture: `model_config` or inferred)."""
    import torch

    from bioclip_hf.models.bioclip.configuration_bioclip import BioCLIPConfig
    from bioclip_hf.models.bioclip.modeling_bioclip import BioCLIPModel
    from bioclip_hf.models.bioclip.open_clip_format import check_shapes, open_clip_to_hf_state_dict

    path = Path(path)
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ValueError(f"{path} is a file but not a weights file ({', '.join(WEIGHT_SUFFIXES)})")
    raw = read_weights_file(path, allow_pickle)
    config = config_from_model_config(model_config) if model_config else BioCLIPConfig.from_open_clip(infer_open_clip_config(raw))
    state_dict = open_clip_to_hf_state_dict(raw)
    with torch.device("meta"):
        reference = BioCLIPModel(config)
    check_shapes(state_dict, reference.state_dict(), str(path))
    return BioCLIPModel.from_pretrained(None, config=config, state_dict=state_dict)


def config_from_model_config(model_config: str) -> Any:
    """A `BioCLIPConfig` from a preset name or a JSON file (open_clip `model_cfg` / `open_clip_config.json` / HF config)."""
    from bioclip_hf.models.bioclip.configuration_bioclip import BIOCLIP_PRESETS, BioCLIPConfig

    if model_config in BIOCLIP_PRESETS:
        return BioCLIPConfig.from_preset(model_config)
    path = Path(model_config)
    if not path.is_file():
        raise FileNotFoundError(f"model_config {model_config!r} is neither a preset ({', '.join(BIOCLIP_PRESETS)}) nor a file")
    values = json.loads(path.read_text())
    values = values.get("model_cfg", values)  # open_clip_config.json nests the architecture
    return BioCLIPConfig.from_open_clip(values) if "vision_cfg" in values else BioCLIPConfig(**values)


def checkpoint_json(source: str, filename: str, **hub: Any) -> dict[str, Any] | None:
    """A JSON file of a local folder or Hub repo (through the cache; `hub`: revision, local_files_only), or None."""
    path = Path(source)
    if path.is_dir():
        file = path / filename
    else:
        from transformers.utils import cached_file

        found = cached_file(source, filename, _raise_exceptions_for_missing_entries=False,
                            _raise_exceptions_for_connection_errors=False, **hub)  # fmt: skip
        file = Path(found) if found else None
    if file is None or not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError:
        return None


def processor_for(source: str | None, model: Any, **hub: Any) -> Any:
    """The processor to train with: the source's own when it is a BioCLIP/open_clip checkpoint, else one built
    for the model with open_clip's tokenizer (a plain CLIP checkpoint's tokenizer pads with the wrong id).

    Args:
        source: the folder or Hub repo id the model came from; None or a weights file: a fresh processor.
        model: the loaded model (its image size and context length size a fresh processor).
        hub: download kwargs of the source (`ModelSource.hub`: the pinned revision, `local_files_only`).
    """
    from bioclip_hf.models.bioclip.modeling_bioclip import resolve_open_clip_files
    from bioclip_hf.models.bioclip.processing_bioclip import BioCLIPImageProcessor, BioCLIPProcessor, load_tokenizer

    folder_or_repo = bool(source) and not Path(source).is_file()
    if folder_or_repo:
        saved = checkpoint_json(source, "processor_config.json", **hub) or {}
        if saved.get("processor_class") == "BioCLIPProcessor" or resolve_open_clip_files(source, allow_pickle=True, **hub):
            return BioCLIPProcessor.from_pretrained(source, **hub)
    options: dict[str, Any] = {"size": model.config.vision_config.image_size}
    clip_preprocess = checkpoint_json(source, "preprocessor_config.json", **hub) if folder_or_repo else None
    if clip_preprocess:  # a CLIPImageProcessor's normalisation (OpenAI's mean/std for openai/clip-*)
        options.update({k: clip_preprocess[k] for k in ("image_mean", "image_std") if k in clip_preprocess})
        logger.info("%s: plain CLIP checkpoint; using open_clip's tokenizer and preprocessing", source)
    context = model.config.text_config.max_position_embeddings
    return BioCLIPProcessor(BioCLIPImageProcessor(**options), load_tokenizer(context))


__all__ = ["WEIGHT_SUFFIXES", "checkpoint_json", "config_from_model_config", "infer_open_clip_config",
           "model_from_weights_file", "processor_for", "read_weights_file"]  # fmt: skip
