"""The Python half of benchmarks/gpu_predict.sh runs end to end on CPU (tiny model): every dtype, every number."""

from __future__ import annotations

import re
import sys

from support.paths import REPO_ROOT


def test_gpu_predict_runs_on_cpu(capsys, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    sys.modules.pop("gpu_predict", None)
    import gpu_predict

    # No photo folder: the script writes its own JPEGs (as on a GPU machine without ../shared).
    code = gpu_predict.main(["--device", "cpu", "--tiny", "--images", "6", "--batch-size", "4", "--taxa", "60",
                             "--num-workers", "0", "--photos", str(tmp_path / "none")])  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and lines[0].startswith("device=cpu batch=4 images=6")
    rows = {line.split(":")[0].strip(): line for line in lines[1:]}
    assert list(rows) == ["float32", "float16", "bfloat16", "auto", "int8"]
    assert "(auto = float32: " in rows["auto"] or "(auto = bfloat16: " in rows["auto"]
    for line in rows.values():
        numbers = re.findall(r"([\d.]+) images/s", line)
        assert len(numbers) == 2 and all(float(n) > 0 for n in numbers), line
    assert "agreement with float32 100.0%" in rows["float32"]
