"""The Python half of benchmarks/gpu_eval.sh runs the whole BioCLIP 2 suite end to end on CPU (tiny model,
miniatures of all 15 tasks, the Hub tasks on a local Hub server): images/s and ours-vs-published per task."""

from __future__ import annotations

import re
import sys

from support.paths import REPO_ROOT


def test_gpu_eval_smoke_runs_the_suite_on_cpu(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    sys.modules.pop("gpu_eval", None)
    import gpu_eval

    assert gpu_eval.main(["--smoke"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "device=cpu batch=16 model=tiny (smoke)"
    rates = {m.group(1): float(m.group(2)) for m in (re.match(r"(\w+): \d+ images, ([\d.]+) images/s", x) for x in lines) if m}
    assert len(rates) == 15 and all(rate > 0 for rate in rates.values())
    assert not [x for x in lines if x.startswith("skipped ")]
    assert any(x.startswith("all tasks: ") and "images/s (image passes)" in x for x in lines)
    assert "| Task | Ours | BioCLIP | BioCLIP 2 | BioCAP | BioCLIP 2.5 | Δ vs BioCLIP 2 |" in lines
    table = [x for x in lines if x.startswith("| ") and "|---" not in x]
    assert any(x.startswith("| Herbarium19 | ") and "| 26.8 | 48.6 | – | – |" in x for x in table)
