"""Shared setup for the end-to-end benchmarks: an offline HF cache holding a random `imageomics/bioclip` and a
random TreeOfLife-10M-layout index, the birds525 photos, and a runner measuring wall time and peak RSS.

The cache is exactly what both tools read with `HF_HUB_OFFLINE=1` and `HF_HOME=<root>`:
`hub/models--imageomics--bioclip/snapshots/<sha>/` written by open_clip's own Hub writer (`save_for_hf`: config,
safetensors and pickle weights), and `hub/datasets--imageomics--TreeOfLife-10M/snapshots/<sha>/embeddings/
txt_emb_species.{npy,json}` (`[dim, N]` float32, `[[kingdom ... epithet], common]` names), both written by the
test suite's writers (tests/support: `models.write_model_release`, `treeoflife.write_index_release`).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# The synthetic Tree of Life and the fake HF cache are the test suite's (tests/support), one copy for both.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.hub_cache import DEFAULT_COMMIT, repo_folder  # noqa: E402
from support.models import write_model_release  # noqa: E402
from support.paths import BIRDS  # noqa: E402
from support.treeoflife import realistic_taxa, write_index_release  # noqa: E402

# The registry's pinned commits: ours loads the pin, pybioclip loads `main`; the fake cache has both on one snapshot.
PINNED = {"imageomics/bioclip-2": "2957b322090f9cb17ae72c71981c7218a28d81e0"}


def write_model(hf_home: Path, architecture: str = "ViT-B-16", model_cfg: dict | None = None, seed: int = 0,
                logit_scale: float = 100.0, repo_id: str = "imageomics/bioclip", commit: str | None = None) -> dict:  # fmt: skip
    """A random open_clip model saved as `repo_id` (at `commit`, on `main`) with open_clip's writer (kept for later
    runs); returns its model config. `imageomics/bioclip-2` needs the registry's pinned commit (`PINNED`).

    The temperature is set to BioCLIP's trained `logit_scale.exp()` of 100 (a fresh model has 1/0.07 = 14.3),
    so probabilities are as peaked as with the released weights and the number of species above pybioclip's
    `min_prob` (which its per-image grouping loops over) is realistic rather than all of them.
    """
    cache = hf_home / "hub"
    written = next(repo_folder(cache, repo_id).glob("snapshots/*/open_clip_config.json"), None)
    if written is None:
        pin = {"commit": commit or PINNED.get(repo_id, DEFAULT_COMMIT)}
        write_model_release(cache, repo_id, seed=seed, model_cfg=model_cfg or architecture, logit_scale=logit_scale, **pin)
        written = next(repo_folder(cache, repo_id).glob("snapshots/*/open_clip_config.json"))
    return json.loads(written.read_text())["model_cfg"]


def write_index(hf_home: Path, num_taxa: int, dim: int = 512, seed: int = 1, repo: str = "imageomics/TreeOfLife-10M") -> None:
    """A random TreeOfLife-10M-layout index of `num_taxa` species (`realistic_taxa`, random unit columns) in dataset
    `repo` (`imageomics/TreeOfLife-200M` for bioclip-2), kept for later runs of the same size."""
    cache = hf_home / "hub"
    names = next(repo_folder(cache, repo, "dataset").glob("snapshots/*/embeddings/txt_emb_species.json"), None)
    if names is not None and len(json.loads(names.read_text())) == num_taxa:
        return
    shutil.rmtree(repo_folder(cache, repo, "dataset"), ignore_errors=True)
    write_index_release(cache, repo, (realistic_taxa(num_taxa, seed), dim))


def bird_photos(count: int) -> list[str]:
    """`count` photos spread over birds525's species (every k-th row of labels.csv)."""
    with open(BIRDS / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if count > len(rows):
        raise SystemExit(f"birds525 has {len(rows)} photos, {count} asked")
    step = len(rows) // count
    return [str(BIRDS / row["file"]) for row in rows[::step][:count]]


def offline_env(hf_home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
            "TOKENIZERS_PARALLELISM": "false", **extra}  # fmt: skip


@dataclass
class Measure:
    """One run: wall seconds, CPU seconds (user + system, children included: less sensitive than wall time to
    other jobs on a shared machine), peak RSS in GiB of its largest process, and peak PSS of all its processes
    together (proportional set size: pages shared after fork are counted once, not once per worker)."""

    wall: float
    cpu: float
    peak_gib: float
    peak_total_gib: float = 0.0
    peak_split_gib: dict[str, float] = field(default_factory=dict)  # the total's anon / file / shmem parts


class TreeRSS(threading.Thread):
    """Samples the memory of a process and its descendants every 50 ms: each one's peak RSS, and the PSS total.

    Each process's peak is its kernel high-water mark (`VmHWM` in /proc/PID/status: exact, so short spikes
    between samples count, and reset by exec), read at every sample; the total is sampled, so it can miss spikes.
    The total's split at its peak is kept too: anonymous (heap), file-backed (mapped files: reclaimable) and shmem.
    (`getrusage`'s ru_maxrss cannot be used: Linux carries a parent's high-water mark across fork + exec, so
    every child would report at least the benchmark's own size.)
    """

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.peak_total, self.stop = pid, 0, 0, threading.Event()
        self.peak_split = {"anon": 0, "file": 0, "shmem": 0}

    def run(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        while not self.stop.wait(0.05):
            try:
                processes = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            split = {"anon": 0, "file": 0, "shmem": 0}
            for process in processes:
                self.peak = max(self.peak, high_water_mark(process.pid))
                for key, value in pss_split(process.pid).items():
                    split[key] += value
            if sum(split.values()) > self.peak_total:
                self.peak_total, self.peak_split = sum(split.values()), split


def pss_split(pid: int) -> dict[str, int]:
    """Proportional set size of process `pid` in bytes by kind (anon, file, shmem), from /proc/PID/smaps_rollup."""
    out = {"anon": 0, "file": 0, "shmem": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                name, _, rest = line.partition(":")
                if name in ("Pss_Anon", "Pss_File", "Pss_Shmem"):
                    out[name[4:].lower()] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def high_water_mark(pid: int) -> int:
    """Peak resident bytes of process `pid` since its exec (`VmHWM`), 0 where /proc does not say."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def run_measured(command: list[str], env: dict[str, str], log: Path | None = None) -> Measure:
    """Run `command` and measure it (see `Measure`), or exit showing the end of its log on error."""
    start = time.perf_counter()
    with open(log or os.devnull, "w") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
        sampler = TreeRSS(process.pid)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        sampler.stop.set()
        sampler.join()
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = Path(log).read_text(errors="replace")[-2000:] if log else ""
        raise SystemExit(f"command failed ({process.returncode}): {' '.join(command[:6])} ...\n{tail}")
    split = {kind: size / 2**30 for kind, size in sampler.peak_split.items()}
    return Measure(seconds, usage.ru_utime + usage.ru_stime, sampler.peak / 2**30, sampler.peak_total / 2**30, split)
