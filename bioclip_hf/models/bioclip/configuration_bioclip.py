"""BioCLIP configuration: a CLIP configuration with BioCLIP presets and open_clip interop."""

from __future__ import annotations

import copy
from typing import Any

from transformers import CLIPConfig

# Architectures of the released open_clip checkpoints (open_clip `model_cfg` dialect).
BIOCLIP_PRESETS: dict[str, dict[str, Any]] = {
    # imageomics/bioclip: open_clip "ViT-B-16".
    "bioclip": {
        "embed_dim": 512,
        "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12},
    },
    # imageomics/bioclip-2: open_clip "ViT-L-14".
    "bioclip-2": {
        "embed_dim": 768,
        "vision_cfg": {"image_size": 224, "layers": 24, "width": 1024, "patch_size": 14},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12},
    },
    # imageomics/bioclip-2.5-vith14: open_clip "ViT-H-14" (16 heads of width 80 in the image tower).
    "bioclip-2.5": {
        "embed_dim": 1024,
        "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24},
    },
}
# The open_clip model name of each preset (tests compare them with open_clip's own model_configs/*.json).
PRESET_ARCHITECTURES: dict[str, str] = {"bioclip": "ViT-B-16", "bioclip-2": "ViT-L-14", "bioclip-2.5": "ViT-H-14"}

# open_clip model_cfg keys we understand; anything else changes the architecture and is refused.
_SUPPORTED_TOP = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "custom_text", "cast_dtype", "init_logit_scale"}
_SUPPORTED_VISION = {"image_size", "layers", "width", "patch_size", "head_width", "mlp_ratio", "patch_dropout"}
_SUPPORTED_TEXT = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio"}
_DEFAULT_IGNORABLE = {"pool_type": ("tok", "argmax"), "pad_id": (0,), "no_causal_mask": (False,), "attentional_pool": (False,)}


class BioCLIPConfig(CLIPConfig):
    r"""Configuration of a [`BioCLIPModel`]: a CLIP dual encoder (ViT image tower, causal text tower).

    It is a [`~transformers.CLIPConfig`] with `model_type="bioclip"`, presets for the released
    checkpoints and lossless conversion to and from open_clip's `model_cfg` dictionaries.

    Args:
        text_config (`dict` or `CLIPTextConfig`, *optional*): text tower settings.
        vision_config (`dict` or `CLIPVisionConfig`, *optional*): image tower settings.
        projection_dim (`int`, *optional*, defaults to 512): size of the joint embedding space.
        logit_scale_init_value (`float`, *optional*, defaults to 2.6592): initial log temperature.

    Example:
        >>> from bioclip_hf import BioCLIPConfig
        >>> config = BioCLIPConfig.from_preset("bioclip")
        >>> config.vision_config.patch_size, config.projection_dim
        (16, 512)
        >>> BioCLIPConfig.from_open_clip(config.to_open_clip()).vision_config.hidden_size
        768
    """

    model_type = "bioclip"

    @classmethod
    def from_preset(cls, name: str, **kwargs: Any) -> BioCLIPConfig:
        """Build the architecture of a released checkpoint (a key of `BIOCLIP_PRESETS`: "bioclip", "bioclip-2",
        "bioclip-2.5")."""
        if name not in BIOCLIP_PRESETS:
            raise ValueError(f"unknown BioCLIP preset {name!r}; choose one of {sorted(BIOCLIP_PRESETS)}")
        return cls.from_open_clip(BIOCLIP_PRESETS[name], **kwargs)

    @classmethod
    def from_open_clip(cls, model_cfg: dict[str, Any], **kwargs: Any) -> BioCLIPConfig:
        """Translate an open_clip `model_cfg` (as in `open_clip_config.json`) into a BioCLIPConfig.

        Raises:
            ValueError: naming the first key whose value needs an architecture we do not implement.
        """
        _check_supported(model_cfg)
        vision, text = model_cfg["vision_cfg"], model_cfg["text_cfg"]
        act = "quick_gelu" if model_cfg.get("quick_gelu", False) else "gelu"
        v_width = vision["width"]
        t_width = text["width"]
        vision_config = {
            "hidden_size": v_width,
            "intermediate_size": int(v_width * vision.get("mlp_ratio", 4.0)),
            "num_hidden_layers": vision["layers"],
            "num_attention_heads": v_width // vision.get("head_width", 64),
            "image_size": _as_int_size(vision["image_size"]),
            "patch_size": _as_int_size(vision["patch_size"]),
            "projection_dim": model_cfg["embed_dim"],
            "hidden_act": act,
        }
        text_config = {
            "hidden_size": t_width,
            "intermediate_size": int(t_width * text.get("mlp_ratio", 4.0)),
            "num_hidden_layers": text["layers"],
            "num_attention_heads": text["heads"],
            "max_position_embeddings": text["context_length"],
            "vocab_size": text["vocab_size"],
            "projection_dim": model_cfg["embed_dim"],
            "hidden_act": act,
            # open_clip pools the text tower at the end-of-text token (the highest id) and pads with 0.
            "eos_token_id": text["vocab_size"] - 1,
            "bos_token_id": text["vocab_size"] - 2,
            "pad_token_id": 0,
        }
        return cls(
            text_config=text_config,
            vision_config=vision_config,
            projection_dim=model_cfg["embed_dim"],
            **kwargs,
        )

    def to_open_clip(self) -> dict[str, Any]:
        """Return the open_clip `model_cfg` describing this architecture (inverse of `from_open_clip`)."""
        v, t = self.vision_config, self.text_config
        if v.hidden_act != t.hidden_act or v.hidden_act not in ("gelu", "quick_gelu"):
            raise ValueError(f"open_clip needs one activation, gelu or quick_gelu; got {v.hidden_act}/{t.hidden_act}")
        cfg: dict[str, Any] = {
            "embed_dim": self.projection_dim,
            "vision_cfg": {
                "image_size": v.image_size,
                "layers": v.num_hidden_layers,
                "width": v.hidden_size,
                "patch_size": v.patch_size,
                "head_width": v.hidden_size // v.num_attention_heads,
                "mlp_ratio": v.intermediate_size / v.hidden_size,
            },
            "text_cfg": {
                "context_length": t.max_position_embeddings,
                "vocab_size": t.vocab_size,
                "width": t.hidden_size,
                "heads": t.num_attention_heads,
                "layers": t.num_hidden_layers,
                "mlp_ratio": t.intermediate_size / t.hidden_size,
            },
        }
        if v.hidden_act == "quick_gelu":
            cfg["quick_gelu"] = True
        return copy.deepcopy(cfg)


def _as_int_size(value: Any) -> int:
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ValueError(f"non-square size {value!r} is not supported")
        return int(value[0])
    return int(value)


def _check_supported(model_cfg: dict[str, Any]) -> None:
    for section, allowed, where in (
        (model_cfg, _SUPPORTED_TOP, "model_cfg"),
        (model_cfg.get("vision_cfg", {}), _SUPPORTED_VISION, "model_cfg.vision_cfg"),
        (model_cfg.get("text_cfg", {}), _SUPPORTED_TEXT, "model_cfg.text_cfg"),
    ):
        if not isinstance(section, dict):
            raise ValueError(f"{where} must be a mapping, got {type(section).__name__}")
        for key, value in section.items():
            if key in allowed or value is None or value in _DEFAULT_IGNORABLE.get(key, ()):
                continue
            raise ValueError(f"unsupported open_clip setting {where}.{key}={value!r} (BioCLIP needs a plain ViT CLIP)")
    for key in ("embed_dim", "vision_cfg", "text_cfg"):
        if key not in model_cfg:
            raise ValueError(f"open_clip model_cfg is missing required key {key!r}")
    if model_cfg.get("custom_text") and "hf_model_name" in model_cfg.get("text_cfg", {}):
        raise ValueError("open_clip configs with a Hugging Face text tower are not supported")
