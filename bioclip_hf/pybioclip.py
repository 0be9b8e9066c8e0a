"""pybioclip's Python API on bioclip-hf: change one import, keep your script (checked against pybioclip 2.1.6).

    from bioclip import TreeOfLifeClassifier, CustomLabelsClassifier, Rank        # pybioclip
    from bioclip_hf.pybioclip import TreeOfLifeClassifier, CustomLabelsClassifier, Rank   # the same, here

The classes are bioclip-hf's with pybioclip's defaults: records keyed `file_name` / `classification` with
pybioclip's columns, `device="cpu"`, `batch_size=10`, custom labels returning every class unless `k` is given,
pybioclip's own image preprocessing (`preprocess="pybioclip"`) for the models pybioclip treats as Tree-of-Life models,
float32 encoders (`dtype="float32"`, pybioclip's precision: pass `dtype="auto"` for bf16 where the CPU has it),
model ids as `model_str="hf-hub:imageomics/bioclip-2"`. What bioclip-hf adds stays available (revision pinning,
folders as input, unreadable images skipped and listed in `.errors` instead of aborting the batch).

Example:
    >>> from bioclip_hf.pybioclip import TreeOfLifeClassifier, Rank  # doctest: +SKIP
    >>> TreeOfLifeClassifier(model_str="hf-hub:imageomics/bioclip").predict(["bee.jpg"], Rank.GENUS)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import bioclip_hf.inference.classify as classify
from bioclip_hf.hub.registry import DEFAULT_MODEL, HF_HUB_PREFIX
from bioclip_hf.inference.pybioclip_format import Rank

__all__ = ["BIOCLIP_MODEL_STR", "BIOCLIP_V1_MODEL_STR", "BIOCLIP_V2_MODEL_STR", "CustomLabelsBinningClassifier",
           "CustomLabelsClassifier", "Rank", "TreeOfLifeClassifier"]  # fmt: skip

BIOCLIP_V1_MODEL_STR = HF_HUB_PREFIX + "imageomics/bioclip"
BIOCLIP_V2_MODEL_STR = HF_HUB_PREFIX + "imageomics/bioclip-2"
BIOCLIP_MODEL_STR = HF_HUB_PREFIX + DEFAULT_MODEL
DEFAULT_BATCH_SIZE = 10  # pybioclip's


# pybioclip swaps open_clip's transform for its own squash (ToTensor, Resize((224, 224)), Normalize) for these.
PYBIOCLIP_TOL_MODELS = frozenset({"imageomics/bioclip", "imageomics/bioclip-2"})


def _pybioclip_defaults(kwargs: dict[str, Any]) -> dict[str, Any]:
    kwargs.setdefault("record_keys", "pybioclip")
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("dtype", "float32")  # a drop-in gives pybioclip's answers: no bf16 even where auto would pick it
    model = kwargs.get("model_str") or kwargs.get("model_name_or_path") or BIOCLIP_MODEL_STR
    if kwargs.get("model") is None and str(model).removeprefix(HF_HUB_PREFIX) in PYBIOCLIP_TOL_MODELS:
        kwargs.setdefault("preprocess", "pybioclip")
    return kwargs


class TreeOfLifeClassifier(classify.TreeOfLifeClassifier):
    """`classify.TreeOfLifeClassifier` with pybioclip's defaults (see the module docstring)."""

    def __init__(self, **kwargs: Any):
        super().__init__(**_pybioclip_defaults(kwargs))

    def predict(self, images: Any, rank: Any, min_prob: float = 1e-9, k: int = 5, batch_size: int = DEFAULT_BATCH_SIZE,
                callback: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:  # fmt: skip
        return super().predict(images, rank, min_prob, k, batch_size, callback)


class CustomLabelsClassifier(classify.CustomLabelsClassifier):
    """`classify.CustomLabelsClassifier(cls_ary=...)` with pybioclip's defaults (every class unless `k`)."""

    def __init__(self, cls_ary: Any, **kwargs: Any):
        super().__init__(cls_ary=cls_ary, **_pybioclip_defaults(kwargs))

    def predict(self, images: Any, k: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                callback: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:  # fmt: skip
        return super().predict(images, k or None, batch_size, callback)  # pybioclip: k=0/None = all classes


class CustomLabelsBinningClassifier(CustomLabelsClassifier):
    """pybioclip's binned custom labels: empty, null or NaN bins raise ValueError."""

    def __init__(self, cls_to_bin: Mapping[str, Any], **kwargs: Any):
        classify.CustomLabelsClassifier.__init__(self, list(cls_to_bin), bins=cls_to_bin, **_pybioclip_defaults(kwargs))
