"""Inference: classifiers, few-shot, image decoding and sources, batch runs and their Parquet parts.

The batch-run API is importable from here (`from bioclip_hf.inference import BatchOptions, predict_batch`);
`bioclip_hf.inference.runs` imports only the standard library, so this stays cheap for the CLI.
"""

from bioclip_hf.inference.runs import (
    BatchOptions,
    BatchResult,
    BatchRun,
    NoImagesError,
    OutputPlan,
    embed_batch,
    predict_batch,
)

__all__ = ["BatchOptions", "BatchResult", "BatchRun", "NoImagesError", "OutputPlan", "embed_batch", "predict_batch"]
