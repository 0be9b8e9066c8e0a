"""bioclip-hf: Hugging Face-native BioCLIP.

Importing the package is cheap (no torch/transformers import) so that the CLI starts fast.
Public classes are resolved lazily on first access; resolving a model class also registers
the BioCLIP classes with transformers' Auto* factories and the zero-shot pipeline.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "BioCLIPConfig": "configuration_bioclip",
    "BIOCLIP_PRESETS": "configuration_bioclip",
    "BioCLIPModel": "modeling_bioclip",
    "BioCLIPOutput": "modeling_bioclip",
    "BioCLIPImageProcessor": "processing_bioclip",
    "BioCLIPProcessor": "processing_bioclip",
    "load_tokenizer": "processing_bioclip",
    "register_auto_classes": "registration",
    "convert_open_clip_checkpoint": "convert",
    "export_to_open_clip": "convert",
    "Taxon": "taxonomy",
    "TreeOfLifeIndex": "tol_index",
    "TreeOfLifeClassifier": "classify",
    "CustomLabelsClassifier": "classify",
    "CustomLabelsBinningClassifier": "classify",
    "FewShotClassifier": "classify",
    "records_to_dataframe": "classify",
    "load_model_and_processor": "loading",
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .classify import (  # noqa: F401
        CustomLabelsBinningClassifier,
        CustomLabelsClassifier,
        FewShotClassifier,
        TreeOfLifeClassifier,
        records_to_dataframe,
    )
    from .configuration_bioclip import BIOCLIP_PRESETS, BioCLIPConfig  # noqa: F401
    from .convert import convert_open_clip_checkpoint, export_to_open_clip  # noqa: F401
    from .loading import load_model_and_processor  # noqa: F401
    from .modeling_bioclip import BioCLIPModel, BioCLIPOutput  # noqa: F401
    from .processing_bioclip import BioCLIPImageProcessor, BioCLIPProcessor, load_tokenizer  # noqa: F401
    from .registration import register_auto_classes  # noqa: F401
    from .taxonomy import Taxon  # noqa: F401
    from .tol_index import TreeOfLifeIndex  # noqa: F401


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'bioclip_hf' has no attribute {name!r}")
    module = importlib.import_module(f".{_LAZY[name]}", __name__)
    # Touching any public class makes AutoModel & co. aware of BioCLIP (idempotent).
    importlib.import_module(".registration", __name__).register_auto_classes()
    return getattr(module, name)
