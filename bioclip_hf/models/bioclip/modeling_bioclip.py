"""BioCLIP model: transformers' CLIP dual encoder that also reads open_clip checkpoints."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPModel
from transformers.models.clip.modeling_clip import CLIPOutput
from transformers.utils import cached_file

from .configuration_bioclip import BioCLIPConfig
from .open_clip_format import (
    OPEN_CLIP_CONFIG_NAME,
    OPEN_CLIP_PICKLE_WEIGHTS_NAME,
    OPEN_CLIP_SAFE_WEIGHTS_NAME,
    CheckpointFormatError,
    check_shapes,
    find_open_clip_weights,
    load_state_dict_file,
    open_clip_to_hf_state_dict,
    read_open_clip_config,
)

logger = logging.getLogger(__name__)

_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")


@dataclass
class BioCLIPOutput(CLIPOutput):
    """Output of [`BioCLIPModel.forward`].

    Args:
        loss: symmetric contrastive loss, when `return_loss=True`.
        logits_per_image: `(n_images, n_texts)` scaled cosine similarities.
        logits_per_text: `(n_texts, n_images)`, the transpose of `logits_per_image`.
        text_embeds: L2-normalised text embeddings `(n_texts, projection_dim)`.
        image_embeds: L2-normalised image embeddings `(n_images, projection_dim)`.
    """


class BioCLIPModel(CLIPModel):
    r"""BioCLIP: a CLIP model for the Tree of Life.

    Identical in architecture to [`~transformers.CLIPModel`]; adds open_clip-style `encode_image` /
    `encode_text` and loads checkpoints saved in open_clip's Hub layout (converted on load).

    Args:
        config ([`BioCLIPConfig`]): model configuration.

    Example:
        >>> import torch
        >>> from bioclip_hf import BioCLIPConfig, BioCLIPModel
        >>> config = BioCLIPConfig.from_open_clip({"embed_dim": 16,
        ...     "vision_cfg": {"image_size": 30, "layers": 2, "width": 32, "patch_size": 2, "head_width": 16},
        ...     "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}})
        >>> model = BioCLIPModel(config).eval()
        >>> model.encode_image(torch.zeros(1, 3, 30, 30), normalize=True).shape
        torch.Size([1, 16])
    """

    config_class = BioCLIPConfig
    config: BioCLIPConfig
    # save_pretrained writes `auto_map` and copies this code, so trust_remote_code=True loads it anywhere.
    _auto_class = "AutoModel"

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """Save weights (safetensors), config and this model's code (for `trust_remote_code=True`)."""
        self.config.auto_map = {
            "AutoConfig": "configuration_bioclip.BioCLIPConfig",
            "AutoModel": "modeling_bioclip.BioCLIPModel",
            "AutoModelForZeroShotImageClassification": "modeling_bioclip.BioCLIPModel",
        }
        return super().save_pretrained(save_directory, *args, **kwargs)

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Project images into the joint space (open_clip's `encode_image`).

        Args:
            pixel_values: `(batch, 3, H, W)` tensor from [`BioCLIPProcessor`].
            normalize: return unit-length vectors.
        """
        features = self.get_image_features(pixel_values=pixel_values).pooler_output
        return torch.nn.functional.normalize(features, dim=-1) if normalize else features

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, normalize: bool = False
    ) -> torch.Tensor:
        """Project token ids into the joint space (open_clip's `encode_text`).

        Args:
            input_ids: `(batch, seq)` ids from [`BioCLIPProcessor`] (open_clip padding: 0 after end-of-text).
            attention_mask: optional; the causal mask already hides padding that follows end-of-text.
            normalize: return unit-length vectors.
        """
        features = self.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return torch.nn.functional.normalize(features, dim=-1) if normalize else features

    def forward(self, *args: Any, **kwargs: Any) -> BioCLIPOutput:
        """Same as [`~transformers.CLIPModel.forward`], returning a [`BioCLIPOutput`]."""
        kwargs["return_dict"] = True
        output = super().forward(*args, **kwargs)
        return BioCLIPOutput(**dict(output.items()))

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike | None, *model_args: Any, allow_pickle: bool = False,
        **kwargs: Any,
    ) -> BioCLIPModel:
        """Load a transformers-format *or* open_clip-format checkpoint (local folder or Hub repo id).

        open_clip checkpoints (`open_clip_config.json` + `open_clip_model.safetensors` or
        `open_clip_pytorch_model.bin`) are converted on load. Pickle weights are refused unless
        `allow_pickle=True` (they are then read with `torch.load(weights_only=True)`).

        Example:
            >>> model = BioCLIPModel.from_pretrained("imageomics/bioclip")  # doctest: +SKIP
        """
        if pretrained_model_name_or_path is not None and kwargs.get("state_dict") is None:
            files = resolve_open_clip_files(pretrained_model_name_or_path, allow_pickle=allow_pickle, **kwargs)
            if files is not None:
                for key in _HUB_KWARGS:
                    kwargs.pop(key, None)
                return cls._from_open_clip_files(*files, allow_pickle=allow_pickle, **kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    @classmethod
    def _from_open_clip_files(cls, config_file: Path, weights_file: Path, allow_pickle: bool, **kwargs: Any):
        open_clip_cfg = read_open_clip_config(config_file)
        try:
            config = BioCLIPConfig.from_open_clip(open_clip_cfg["model_cfg"])
        except (KeyError, ValueError, TypeError) as err:
            raise CheckpointFormatError(f"{config_file}: {err}") from None
        kwargs.pop("config", None)
        raw = load_state_dict_file(weights_file, allow_pickle=allow_pickle)
        state_dict = open_clip_to_hf_state_dict(raw)
        with torch.device("meta"):
            reference = cls(config)
        check_shapes(state_dict, reference.state_dict(), str(weights_file))
        logger.info("converted open_clip checkpoint %s on load", weights_file)
        return super().from_pretrained(None, config=config, state_dict=state_dict, **kwargs)


def resolve_open_clip_files(
    name_or_path: str | os.PathLike, allow_pickle: bool = False, **kwargs: Any
) -> tuple[Path, Path] | None:
    """Return `(config, weights)` paths if `name_or_path` is in open_clip layout, else `None`.

    A transformers `config.json` wins when both layouts are present. Works for local folders and
    Hub repo ids (through the Hub cache, so `HF_HUB_OFFLINE=1` works once files are cached).
    """
    hub_kwargs = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
    path = Path(name_or_path)
    if path.is_dir():
        if (path / "config.json").is_file() or not (path / OPEN_CLIP_CONFIG_NAME).is_file():
            return None
        return path / OPEN_CLIP_CONFIG_NAME, find_open_clip_weights(path, allow_pickle=allow_pickle)
    repo_id = str(name_or_path)
    if path.is_file():
        raise CheckpointFormatError(f"{repo_id} is a file; pass the folder that holds the checkpoint")
    if repo_id.startswith((".", "/", "~")) or repo_id.count("/") > 1:
        raise CheckpointFormatError(f"checkpoint folder not found: {repo_id}")

    def fetch(filename: str) -> str | None:
        return cached_file(
            repo_id, filename, _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False, **hub_kwargs,
        )

    if fetch("config.json") is not None:
        return None
    config_file = fetch(OPEN_CLIP_CONFIG_NAME)
    if config_file is None:
        return None
    weights = fetch(OPEN_CLIP_SAFE_WEIGHTS_NAME)
    if weights is None:
        if not allow_pickle:
            raise CheckpointFormatError(
                f"{repo_id} only offers {OPEN_CLIP_PICKLE_WEIGHTS_NAME} (pickle); pass allow_pickle=True to load it"
            )
        weights = fetch(OPEN_CLIP_PICKLE_WEIGHTS_NAME)
        if weights is None:
            raise CheckpointFormatError(f"{repo_id} has {OPEN_CLIP_CONFIG_NAME} but no open_clip weights file")
    return Path(config_file), Path(weights)


__all__ = ["BioCLIPModel", "BioCLIPOutput", "resolve_open_clip_files"]
