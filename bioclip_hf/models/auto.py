"""Registration of BioCLIP with transformers' Auto classes and the zero-shot pipeline."""

from __future__ import annotations

_REGISTERED = False


def register_auto_classes() -> None:
    """Register BioCLIP with AutoConfig/AutoModel/AutoProcessor/... (safe to call repeatedly).

    Example:
        >>> import bioclip_hf
        >>> bioclip_hf.register_auto_classes()
        >>> from transformers import AutoConfig
        >>> AutoConfig.for_model("bioclip").model_type
        'bioclip'
    """
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModel,
        AutoModelForZeroShotImageClassification,
        AutoProcessor,
    )

    from bioclip_hf.models.bioclip.configuration_bioclip import BioCLIPConfig
    from bioclip_hf.models.bioclip.modeling_bioclip import BioCLIPModel
    from bioclip_hf.models.bioclip.processing_bioclip import BioCLIPImageProcessor, BioCLIPProcessor

    AutoConfig.register("bioclip", BioCLIPConfig, exist_ok=True)
    AutoModel.register(BioCLIPConfig, BioCLIPModel, exist_ok=True)
    AutoModelForZeroShotImageClassification.register(BioCLIPConfig, BioCLIPModel, exist_ok=True)
    AutoImageProcessor.register(BioCLIPConfig, slow_image_processor_class=BioCLIPImageProcessor, exist_ok=True)
    AutoProcessor.register(BioCLIPConfig, BioCLIPProcessor, exist_ok=True)
    _REGISTERED = True
