"""The GPU throughput script's Python part, run on CPU in its smoke mode (tiny model, 2 gloo processes)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from support.paths import REPO_ROOT

pytestmark = pytest.mark.heavy


def test_gpu_train_script_smoke_mode_runs_end_to_end():
    env = {**os.environ, "SMOKE": "1", "PYTHON": os.environ.get("PYTHON", "python")}
    done = subprocess.run(["bash", str(REPO_ROOT / "benchmarks" / "gpu_train.sh")], capture_output=True, text=True,
                          timeout=600, env=env, cwd=REPO_ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert re.search(r"open_clip: .* images/s per process  MFU +\d+\.\d%", out), out
    assert re.search(r"bioclip_hf: .* images/s per process  MFU +\d+\.\d%", out), out
    assert "2 process(es)" in out and "local loss + gather-with-grad + grad checkpointing" in out
