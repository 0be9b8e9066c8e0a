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
    "BioCLIPConfig": "models.bioclip.configuration_bioclip",
    "BIOCLIP_PRESETS": "models.bioclip.configuration_bioclip",
    "BioCLIPModel": "models.bioclip.modeling_bioclip",
    "BioCLIPOutput": "models.bioclip.modeling_bioclip",
    "BioCLIPImageProcessor": "models.bioclip.processing_bioclip",
    "BioCLIPProcessor": "models.bioclip.processing_bioclip",
    "load_tokenizer": "models.bioclip.processing_bioclip",
    "register_auto_classes": "models.auto",
    "convert_open_clip_checkpoint": "models.convert",
    "export_to_open_clip": "models.convert",
    "Taxon": "treeoflife.taxonomy",
    "TreeOfLifeIndex": "treeoflife.index",
    "TreeOfLifeClassifier": "inference.classify",
    "CustomLabelsClassifier": "inference.classify",
    "CustomLabelsBinningClassifier": "inference.classify",
    "FewShotClassifier": "inference.classify",
    "records_to_dataframe": "inference.classify",
    "BatchOptions": "inference.runs",
    "BatchResult": "inference.runs",
    "predict_batch": "inference.runs",
    "embed_batch": "inference.runs",
    "load_model_and_processor": "models.loading",
    "load_labelled_data": "data.labelled",
    "FinetuneConfig": "training.finetune_config",
    "finetune": "training.finetune",
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from bioclip_hf.data.labelled import load_labelled_data  # noqa: F401
    from bioclip_hf.inference.classify import (  # noqa: F401
        CustomLabelsBinningClassifier,
        CustomLabelsClassifier,
        FewShotClassifier,
        TreeOfLifeClassifier,
        records_to_dataframe,
    )
    from bioclip_hf.inference.runs import BatchOptions, BatchResult, embed_batch, predict_batch  # noqa: F401
    from bioclip_hf.models.auto import register_auto_classes  # noqa: F401
    from bioclip_hf.models.bioclip.configuration_bioclip import BIOCLIP_PRESETS, BioCLIPConfig  # noqa: F401
    from bioclip_hf.models.bioclip.modeling_bioclip import BioCLIPModel, BioCLIPOutput  # noqa: F401
    from bioclip_hf.models.bioclip.processing_bioclip import BioCLIPImageProcessor, BioCLIPProcessor, load_tokenizer  # noqa: F401
    from bioclip_hf.models.convert import convert_open_clip_checkpoint, export_to_open_clip  # noqa: F401
    from bioclip_hf.models.loading import load_model_and_processor  # noqa: F401
    from bioclip_hf.training.finetune import finetune  # noqa: F401
    from bioclip_hf.training.finetune_config import FinetuneConfig  # noqa: F401
    from bioclip_hf.treeoflife.index import TreeOfLifeIndex  # noqa: F401
    from bioclip_hf.treeoflife.taxonomy import Taxon  # noqa: F401


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'bioclip_hf' has no attribute {name!r}")
    module = importlib.import_module(f".{_LAZY[name]}", __name__)
    # Touching any public class makes AutoModel & co. aware of BioCLIP (idempotent).
    importlib.import_module(".models.auto", __name__).register_auto_classes()
    return getattr(module, name)
