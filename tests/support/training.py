"""Shared pieces of the training tests: a small model config, clean Accelerate state, a simulated pre-emption."""

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


class Preempted(Exception):
    """A simulated pre-emption of the training job."""


class KillingLoader:
    """Proxy of a real loader that raises `Preempted` when asked for batch number `after + 1`
    (`state_dict` passes through, so checkpoints record the real stream position)."""

    def __init__(self, loader, after: int):
        self.loader, self.after, self.served = loader, after, 0

    def __iter__(self):
        for batch in self.loader:
            if self.served == self.after:
                raise Preempted
            self.served += 1
            yield batch

    def state_dict(self):
        return self.loader.state_dict()
