"""Conversion between open_clip's Hub layout and the transformers layout (both directions).

open_clip / pybioclip users load our exports with
`open_clip.create_model_and_transforms("local-dir:PATH")` or `"hf-hub:REPO"`.

Sources are read through the one loading path (`bioclip_hf.models.loading`): a Hub repo id gets the registry's pinned
revision (unless `revision` is given), the fast offline failure and the `allow_pickle` policy, as in predict.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from bioclip_hf.models.bioclip.open_clip_format import (
    OPEN_CLIP_CONFIG_NAME,
    OPEN_CLIP_PICKLE_WEIGHTS_NAME,
    OPEN_CLIP_SAFE_WEIGHTS_NAME,
    CheckpointFormatError,
    hf_to_open_clip_state_dict,
)
from bioclip_hf.utils.io import atomic_directory

logger = logging.getLogger(__name__)
_LOCAL_SOURCE = "a local checkpoint folder as the source"


def convert_open_clip_checkpoint(
    source: str | os.PathLike, output: str | os.PathLike, allow_pickle: bool = False, revision: str | None = None
) -> Path:
    """Convert an open_clip-format checkpoint (folder or Hub repo id) into a transformers folder.

    Args:
        source: folder / repo holding `open_clip_config.json` + open_clip weights.
        output: folder to write (`config.json`, `model.safetensors`, processor files, remote code).
        allow_pickle: allow `open_clip_pytorch_model.bin` when no safetensors file exists.
        revision: branch, tag or commit of a Hub repo (default: the registry's pinned commit, else `main`).

    Example:
        >>> convert_open_clip_checkpoint("imageomics/bioclip", "bioclip-hf")  # doctest: +SKIP
    """
    from bioclip_hf.models.bioclip.modeling_bioclip import resolve_open_clip_files
    from bioclip_hf.models.loading import load_model, load_processor, resolve_model_source

    resolved = resolve_model_source(str(source), revision, allow_pickle, local_alternative=_LOCAL_SOURCE)
    if resolve_open_clip_files(resolved.name, allow_pickle=resolved.allow_pickle, **resolved.hub) is None:
        raise CheckpointFormatError(f"{source} is not an open_clip checkpoint (no {OPEN_CLIP_CONFIG_NAME} found)")
    model = load_model(resolved, device="cpu")
    processor = load_processor(resolved)
    with atomic_directory(output) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    logger.info("wrote transformers checkpoint of %s to %s", model.bioclip_source, output)
    return Path(output)


def export_to_open_clip(
    source: Any, output: str | os.PathLike, processor: Any = None, also_pickle: bool = False, allow_pickle: bool = False,
    revision: str | None = None,
) -> Path:
    """Write a BioCLIP model in open_clip's Hub layout (config + safetensors, optionally .bin).

    Args:
        source: a `BioCLIPModel`, or a folder / Hub repo id loadable by `BioCLIPModel.from_pretrained`.
        output: folder to write.
        processor: the `BioCLIPProcessor` whose preprocessing to record (loaded from `source` if omitted).
        also_pickle: also write `open_clip_pytorch_model.bin` (for very old open_clip versions).
        allow_pickle: allow reading pickle weights when `source` is an open_clip checkpoint.
        revision: branch, tag or commit when `source` is a Hub repo id (default: the registry's pin, else `main`).

    Example:
        >>> export_to_open_clip("my-finetune", "my-finetune-open_clip")  # doctest: +SKIP
    """
    import torch
    from safetensors.torch import save_file

    from bioclip_hf.models.bioclip.modeling_bioclip import BioCLIPModel
    from bioclip_hf.models.bioclip.processing_bioclip import BioCLIPImageProcessor
    from bioclip_hf.models.loading import load_model, load_processor, resolve_model_source

    if isinstance(source, BioCLIPModel):
        model = source
    else:
        resolved = resolve_model_source(str(source), revision, allow_pickle, local_alternative=_LOCAL_SOURCE)
        model = load_model(resolved, device="cpu")
        if processor is None:
            processor = load_processor(resolved)
    image_processor = processor.image_processor if processor is not None else BioCLIPImageProcessor(
        size=model.config.vision_config.image_size
    )
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in hf_to_open_clip_state_dict(model.state_dict()).items()}
    config = {"model_cfg": model.config.to_open_clip(), "preprocess_cfg": image_processor.to_open_clip_preprocess()}
    with atomic_directory(output) as tmp:
        save_file(state, str(tmp / OPEN_CLIP_SAFE_WEIGHTS_NAME))
        if also_pickle:
            torch.save(state, tmp / OPEN_CLIP_PICKLE_WEIGHTS_NAME)
        (tmp / OPEN_CLIP_CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    logger.info("wrote open_clip checkpoint to %s", output)
    return Path(output)
