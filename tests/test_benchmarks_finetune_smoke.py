"""benchmarks/bench_finetune.py in its smoke mode: LoRA vs full fine-tuning steps of a tiny model on the shared
photos, each in its own process, with the ratios printed by the parent."""

from __future__ import annotations

import re
import sys

import pytest
from support.paths import BIRDS, REPO_ROOT

pytestmark = pytest.mark.heavy  # two spawned processes, each importing torch and transformers


def test_bench_finetune_smoke_reports_lora_vs_full(capsys, monkeypatch):
    if not (BIRDS / "labels.csv").is_file():
        pytest.skip(f"real photos not available at {BIRDS}")
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    sys.modules.pop("bench_finetune", None)
    import bench_finetune

    assert bench_finetune.main(["--smoke"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("device=cpu model=tiny (smoke) batch=4 classes=4 steps=2")
    pattern = r"{}: [\d.]+ s/step  [\d.]+ images/s  peak RSS \d+ MiB  trainable ([\d.]+)% "
    lora, full = (re.match(pattern.format(m), line) for m, line in zip(("lora", "full"), lines[1:3]))
    assert lora and full, lines
    assert 0 < float(lora.group(1)) < 5 and float(full.group(1)) == 100.0
    ratios = re.match(r"lora/full: time per step ([\d.]+)x  peak memory ([\d.]+)x  trainable parameters ([\d.]+)x", lines[3])
    assert ratios and 0 < float(ratios.group(3)) < 0.05, lines
