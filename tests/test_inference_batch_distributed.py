"""`accelerate launch` with 2 CPU processes (gloo) == 1 process; a killed run resumes to the same bytes.

Every process here is started fresh (never forked from pytest) with OMP_NUM_THREADS=1. Blocks never mix in a
batch, so each image is encoded in the same batch (same neighbours, same shapes) whatever the number of processes.
That does not make the arithmetic identical: oneDNN/MKL choose kernels by CPU and process setup, and on an AMD EPYC
(Zen 4) one score of the 2-process run is one float32 ulp off the 1-process one. So 1 vs 2 processes compares
labels and order exactly and scores within `score_rtol` (see `support.batch`). A killed run resumed by the same
command is the same computation repeated in one environment (same launch, same env, same machine): its output is
compared byte for byte.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from support.batch import NUM_GOOD, SLOW_ENCODER
from support.tolerances import assert_same_records, score_rtol

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "HF_HUB_OFFLINE": "1"}


def predict_command(ws, model_dir, output, *extra):
    return ["predict", str(ws / "photos"), "--index", str(ws / "index"), "--model", str(model_dir), "--k", "3",
            "--batch-size", "2", "--part-size", "2", "--num-workers", "1", "--no-progress", "--output", str(output),
            *extra]  # fmt: skip


def run(command, timeout=600):
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.float_sensitive
def test_two_processes_merge_to_the_single_process_result(batch_workspace, tiny_hf_dir, tiny_model_and_processor, tmp_path):
    single = tmp_path / "single.parquet"
    run([sys.executable, "-m", "bioclip_hf.cli", *predict_command(batch_workspace, tiny_hf_dir, single)])
    multi = tmp_path / "multi.parquet"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "bioclip_hf.cli"]  # fmt: skip
    result = run([*launch, *predict_command(batch_workspace, tiny_hf_dir, multi, "--keep-parts")])
    # The main process reports the merged error list, once.
    assert sum("img04b.jpg" in line for line in result.stderr.splitlines()) == 1
    # Both processes wrote parts: block b belongs to process b % 2.
    from bioclip_hf.inference.parquet import list_parts, part_info

    parts = list_parts(f"{multi}.parts")
    assert len(parts) == 6 and [part_info(p)["process"] for p in parts.values()] == [0, 1, 0, 1, 0, 1]
    a, b = pq.read_table(single).to_pylist(), pq.read_table(multi).to_pylist()
    assert len(a) == 3 * NUM_GOOD
    # Same rows, files, taxa and order; scores to the tolerance of other float kernels (not bit for bit).
    assert_same_records(a, b, score_rtol(float(tiny_model_and_processor[0].logit_scale.detach().exp())))
    errors = (tmp_path / "multi.errors.csv").read_text().splitlines()
    assert len(errors) == 2 and errors[1].startswith(str(batch_workspace / "photos" / "g1" / "img04b.jpg"))


SLOW_DRIVER = SLOW_ENCODER + """
from bioclip_hf.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_killed_run_resumes_without_loss_or_duplicates(batch_workspace, tiny_hf_dir, tmp_path):
    reference = tmp_path / "reference.csv"
    run([sys.executable, "-m", "bioclip_hf.cli", *predict_command(batch_workspace, tiny_hf_dir, reference)])
    driver = tmp_path / "slow.py"
    driver.write_text(SLOW_DRIVER)
    output = tmp_path / "p.csv"
    parts = tmp_path / "p.csv.parts"
    process = subprocess.Popen([sys.executable, str(driver), *predict_command(batch_workspace, tiny_hf_dir, output)],
                               env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 300
    while len(list(parts.glob("part-*.parquet"))) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(list(parts.glob("part-*.parquet")))
    assert process.returncode == -signal.SIGKILL and 2 <= done < 6 and not output.exists()
    result = run([sys.executable, "-m", "bioclip_hf.cli", "--verbose", *predict_command(batch_workspace, tiny_hf_dir, output)])
    assert result.stderr.count("wrote part-") == 6 - done  # only the missing blocks were computed
    # The reference, the killed and the resuming process run the same command on this machine: same kernels, same
    # bytes (unlike 1 vs 2 processes above, whose launchers differ).
    assert output.read_bytes() == reference.read_bytes()
    assert not parts.exists()
