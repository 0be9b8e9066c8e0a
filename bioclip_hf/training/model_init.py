"""The model and processor a training run starts from: `init_from` (a checkpoint to fine-tune) or `model_config`
(from scratch).

`init_from` may be a folder or Hub repo in transformers or open_clip layout, loaded through the one loading path
(`bioclip_hf.models.loading`: the registry's pinned revisions, the fast offline failure, the `allow_pickle` policy
and provenance apply as for predict), or one open_clip/OpenAI weights file (`bioclip_hf.models.checkpoints`). The
processor is the checkpoint's own, or one with open_clip's tokenizer for plain CLIP checkpoints
(`bioclip_hf.models.checkpoints.processor_for`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

INIT_FROM_ALTERNATIVE = "a local checkpoint folder (--init_from ./folder)"


def build_model_and_processor(config: Any) -> tuple[Any, Any]:
    """Model from `init_from` (any layout above) or from scratch (`model_config`), and its processor.

    Example:
        >>> model, processor = build_model_and_processor(TrainConfig(model_config="bioclip"))  # doctest: +SKIP
    """
    from bioclip_hf.models.checkpoints import config_from_model_config, model_from_weights_file, processor_for
    from bioclip_hf.models.loading import load_model, load_processor, resolve_model_source

    source = None
    if config.init_from and Path(config.init_from).is_file():
        model = model_from_weights_file(Path(config.init_from), config.model_config, config.allow_pickle)
    elif config.init_from:
        source = resolve_model_source(config.init_from, allow_pickle=config.allow_pickle,
                                      local_alternative=INIT_FROM_ALTERNATIVE)  # fmt: skip
        # On the CPU: the accelerator places it (each process on its own device).
        model = load_model(source, device="cpu")
        logger.info("initialised from %s", model.bioclip_source)
    elif config.model_config:
        from bioclip_hf.models.bioclip.modeling_bioclip import BioCLIPModel

        model = BioCLIPModel(config_from_model_config(config.model_config))
    else:
        raise ValueError("set init_from (a checkpoint to fine-tune) or model_config (to train from scratch)")
    if config.processor:
        return model, load_processor(resolve_model_source(config.processor, local_alternative="a local processor folder"))
    if source is None:
        return model, processor_for(config.init_from, model)
    return model, processor_for(source.name, model, **source.hub)


__all__ = ["build_model_and_processor"]
