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


def run_benchmark(script: str, *args: str) -> str:
    done = subprocess.run([os.environ.get("PYTHON", "python"), str(REPO_ROOT / "benchmarks" / script), *args],
                          capture_output=True, text=True, timeout=900, cwd=REPO_ROOT / "benchmarks")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_predict_vs_pybioclip_smoke_mode_prints_ratios_and_cpu_flags(bird_photos):
    out = run_benchmark("bench_predict_vs_pybioclip.py", "--smoke", "--startup", "1")
    assert re.search(r"CPU: .*avx2[+-] .*avx512_bf16[+-] .*amx_bf16[+-]", out), out
    assert re.search(r"species  2 photos, .* ratio pybioclip/bioclip-hf: wall \d+\.\d\dx, CPU \d+\.\d\dx, peak RSS "
                     r"\d+\.\d\dx \[tools agree: top-1 \d+%", out), out  # fmt: skip
    assert re.search(r"start-up, 1 photo, .* ours takes \d+\.\d\d of pybioclip's wall time", out), out


def test_batch_memory_default_model_smoke_mode_breaks_the_peak_down(bird_photos):
    out = run_benchmark("bench_batch_memory.py", "--model", "bioclip-2", "--smoke", "--probe-dtypes", "auto")
    assert re.search(r"--dtype auto: peak RSS \d+\.\d\d -> \d+\.\d\d GiB for 2 more images", out), out
    assert re.search(r"peak \d+\.\d\d GiB ~ python/torch/transformers \d+\.\d\d \+ index .* \+ weights .* \+ "
                     r"activations .* \+ scoring", out), out  # fmt: skip


def test_index_precision_smoke_mode_prints_the_agreement():
    out = run_benchmark("bench_index_precision.py", "--smoke")
    assert re.search(r"signal 0\.25 family +top-1 agreement +\d+\.\d\d%, top-5 overlap +\d+\.\d\d%", out), out
    assert re.search(r"near-taxon queries: worst top-1 agreement .*: (meets|does NOT meet) the rule", out), out
