"""The Tree-of-Life classifier scores its index exactly in float32 runs and from the float16 copy when the image
encoder runs in bf16; the provenance says which."""

from __future__ import annotations

import pytest
import torch
from support.treeoflife import random_taxa, write_tol_release

from bioclip_hf.inference.classify import TreeOfLifeClassifier


@pytest.mark.parametrize(("dtype", "expected"), [("float32", "float32"), ("bfloat16", "float16")])
def test_index_precision_follows_the_encoder_precision(tiny_hf_dir, tmp_path, dtype, expected):
    npy = write_tol_release(tmp_path, random_taxa(50, seed=4), 16)
    clf = TreeOfLifeClassifier(index=npy, model_name_or_path=str(tiny_hf_dir), device="cpu", num_workers=0, dtype=dtype)
    records = clf.predict([torch.zeros(30, 30, 3, dtype=torch.uint8).numpy()], rank="family", k=2)
    assert records and clf.index_precision() == expected and clf.index.precision == expected
    assert clf.provenance()["index"]["precision"] == expected
    assert (npy.parent / "txt_emb_species.bioclip-hf-f16.safetensors").exists() == (expected == "float16")
