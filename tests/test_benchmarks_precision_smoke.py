"""benchmarks/bench_cpu_precision.py in its smoke mode (tiny random model, 8 real photos): every figure and the
rule's verdict for bf16, bf16 texts and int8 are printed."""

from __future__ import annotations

import re
import sys

from support.paths import REPO_ROOT


def test_precision_benchmark_smoke(bird_photos, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    sys.modules.pop("bench_cpu_precision", None)
    import bench_cpu_precision

    assert bench_cpu_precision.main(["--smoke"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("CPU: ") and "torch " in out.splitlines()[0]
    assert "tiny (random weights): 8 photos x 525 species" in out
    rows = dict(re.findall(r"^  (float32|bfloat16\+text|bfloat16|int8) +([\d.]+%.*)$", out, re.M))
    assert list(rows) == ["float32", "bfloat16", "bfloat16+text", "int8"]
    for row in rows.values():
        top1, top5, dprob, accuracy, seconds, speed = row.split()
        assert all(0 <= float(v.rstrip("%")) <= 100 for v in (top1, top5, accuracy)), row
        assert float(dprob) >= 0 and float(seconds) > 0 and float(speed.rstrip("x")) > 0, row
    assert rows["float32"].split()[:3] == ["100.00%", "100.00%", "0.00e+00"]  # the reference against itself
    assert "rule for a default: top-1 agreement >= 99.5% and top-5 overlap >= 99% on every model" in out
    verdicts = dict(re.findall(r"^  (bfloat16\+text|bfloat16|int8) +(PASS|FAIL)", out, re.M))
    assert set(verdicts) == {"bfloat16", "bfloat16+text", "int8"}
