"""Shared pieces of the training tests."""

from __future__ import annotations

import pytest

# Smaller than conftest's tiny model (16 image tokens instead of 225) so that dozens of steps take seconds.
TRAIN_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 24, "layers": 2, "width": 32, "patch_size": 6, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Accelerate keeps process-wide state (precision, device); every training run here starts clean."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
