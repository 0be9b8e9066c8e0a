"""Inference: classifiers, few-shot, image decoding and sources, batch runs and their Parquet parts."""
