"""Shared pieces of the batch-inference tests: a workspace of photos and an index, and the CLI run in-process."""

from __future__ import annotations

import pytest

from .images import write_image
from .treeoflife import random_taxa

NUM_GOOD = 11

# Script prefix for runs the tests kill mid-way: every image batch takes 0.5 s more, so a kill lands between parts.
SLOW_ENCODER = """
import sys, time
from bioclip_hf.inference.classify import BaseClassifier
encode = BaseClassifier.encode_pixels
def slow(self, pixels, normalize=True):
    time.sleep(0.5)  # give the test time to kill us mid-run
    return encode(self, pixels, normalize)
BaseClassifier.encode_pixels = slow
"""


@pytest.fixture(scope="module")
def batch_workspace(tmp_path_factory, tiny_model_and_processor):
    """11 photos of varied sizes in nested folders, one corrupt file (position 5), and a 30-taxa index."""
    from bioclip_hf.treeoflife.index import TreeOfLifeIndex
    from bioclip_hf.treeoflife.taxonomy import DEFAULT_TEMPLATE

    root = tmp_path_factory.mktemp("batch")
    for i in range(NUM_GOOD):
        write_image(root / "photos" / f"g{i // 4}" / f"img{i:02d}.png", i)
    (root / "photos" / "g1" / "img04b.jpg").write_bytes(b"\xff\xd8 truncated")  # sorts between img04 and img05
    model, processor = tiny_model_and_processor
    TreeOfLifeIndex.build(random_taxa(30), model, processor, templates=(DEFAULT_TEMPLATE,), progress=False).save(
        root / "index"
    )
    return root


def cli(capsys, *argv):
    """Run `bioclip-hf *argv` in this process; returns (exit code, stdout, stderr)."""
    from bioclip_hf.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err
