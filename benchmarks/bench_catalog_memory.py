"""Memory and start time of the TreeOfLife catalog lookup, in one process and shared by the processes of a node.

Writes a synthetic `metadata/catalog.csv` in TreeOfLife-10M's exact column layout (uuid `treeoflife_id`s,
EOL/BIOSCAN/iNat21 source columns, train + train_small duplicates + val rows, ~450k species at 10M rows,
scaled down with the row count), then:

1. Peak RSS of one build per million rows (target < 300 MB), in fresh processes:
   - `bioclip_hf`: `CatalogIndex.load` (Arrow dictionary columns + sorted fixed-width ids);
   - reference: `pandas.read_csv` of the same columns with default dtypes, then `set_index(treeoflife_id)`.
   The peak RSS (`ru_maxrss`) minus the RSS after imports is the memory the load needed.
2. N processes of one node (`--processes 1,4`) started together, as `accelerate launch` starts them, each
   getting the lookup, then touching all of it (every array page, 20k lookups + taxa, as a long run would):
   - `memory`: `CatalogIndex.load` in every process (the reference: each builds and holds its own copy);
   - `cold`: `catalog_cache.open_catalog_index` without a cache (one process builds it under the lock, the others wait);
   - `warm`: `catalog_cache.open_catalog_index` with the cache on disk (every process memory-maps it).
   Per process, from `/proc/self/smaps_rollup` after the load minus before it: unique memory (private pages),
   anonymous memory (heap, not reclaimable) and PSS (shared pages divided among their processes; summed over the
   processes it is the node's total), the peak RSS, and the start time (the load call). Ratios against `memory`.

Example:
    python benchmarks/bench_catalog_memory.py --rows 1000000,4000000 --processes 1,4
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

HEADER = ("split", "treeoflife_id", "eol_content_id", "eol_page_id", "bioscan_part", "bioscan_filename",
          "inat21_filename", "inat21_cls_name", "inat21_cls_num", "kingdom", "phylum", "class", "order",
          "family", "genus", "species", "common")  # fmt: skip
KINGDOMS = ("Animalia", "Plantae", "Fungi", "Chromista", "Protozoa", "Bacteria")


def write_catalog(path: Path, rows: int, seed: int = 0) -> None:
    """`rows` catalog rows; taxa drawn from a tree scaled like TreeOfLife-10M (454k species per 10.4M rows)."""
    rng = random.Random(seed)
    species = max(rows * 454 // 10_400, 10)
    taxa = []
    for s in range(species):
        genus = f"Genus{s // 6}"
        taxa.append((KINGDOMS[s % len(KINGDOMS)], f"Phylum{s % 97}", f"Class{s % 401}", f"Order{s % 1601}",
                     f"Family{s % 9001}", genus, f"epithet{s}", f"common name {s}" if s % 3 else f"{genus} epithet{s}"))  # fmt: skip
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        for i in range(rows):
            taxon = taxa[int(species * rng.random() ** 2)]  # long-tailed, yet nearly every species appears
            key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            source = i % 10
            ids = ([str(rng.randrange(10**8)), str(rng.randrange(10**7)), "", "", "", "", ""] if source < 6 else
                   ["", "", str(1 + i % 113), f"{rng.getrandbits(40):x}.jpg", "", "", ""] if source < 7 else
                   ["", "", "", "", f"{key}.jpg", "_".join(taxon[:7]), str(i % 10_000)])  # fmt: skip
            split = "val" if i % 97 == 0 else "train"
            writer.writerow([split, key, *ids, *taxon])
            if split == "train" and i % 10 == 1:  # train_small repeats ~10% of train ids
                writer.writerow(["train_small", key, *ids, *taxon])


LOADERS = {
    "bioclip_hf": (
        "from bioclip_hf.data.catalog import CatalogIndex, TOL10M_SCHEMA\n"
        "index = CatalogIndex.load(PATH, TOL10M_SCHEMA)\n"
        "extra = {'ids': len(index), 'rows': index.num_rows, 'index_mb': index.nbytes / 1e6}\n"
    ),
    "pandas": (
        "import pandas as pd\n"
        "cols = ['split', 'treeoflife_id', 'eol_content_id', 'kingdom', 'phylum', 'class', 'order', 'family', "
        "'genus', 'species', 'common']\n"
        "frame = pd.read_csv(PATH, usecols=cols).set_index('treeoflife_id')\n"
        "extra = {'rows': len(frame)}\n"
    ),
}
PROBE = (
    "import json, resource, sys\n"
    "import numpy, pyarrow, pyarrow.csv, pyarrow.compute, pandas  # imports are not the load's memory\n"
    "import bioclip_hf.data.catalog\n"
    "def rss_mb():\n"
    "    return float(open('/proc/self/statm').read().split()[1]) * resource.getpagesize() / 1e6\n"
    "before = rss_mb()\n"
    "PATH = sys.argv[1]\n"
    "{body}"
    "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3\n"
    "print(json.dumps({{'before_mb': before, 'peak_mb': peak, **extra}}))\n"
)


def measure(name: str, path: Path) -> dict:
    code = PROBE.format(body=LOADERS[name])
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def build_peaks(path: Path, repeats: int) -> dict[str, float]:
    """Peak RSS over the imports of one build by each loader on the catalog at `path` (median of `repeats`)."""
    results: dict[str, list[dict]] = {name: [] for name in LOADERS}
    for _ in range(repeats):
        for name in LOADERS:  # interleaved, so machine load affects both alike
            results[name].append(measure(name, path))
    total = results["bioclip_hf"][0]["rows"]
    peak = {}
    for name, runs in results.items():
        peak[name] = median([run["peak_mb"] - run["before_mb"] for run in runs])
        print(f"{name:>10}: peak RSS {peak[name]:8.1f} MB over the imports = "
              f"{peak[name] / (total / 1e6):6.1f} MB per million catalog rows")  # fmt: skip
    index_mb = results["bioclip_hf"][0]["index_mb"]
    print(f"  catalog: {total:,} rows ({path.stat().st_size / 1e6:.0f} MB CSV), {results['bioclip_hf'][0]['ids']:,} "
          f"distinct ids; the lookup holds {index_mb:.1f} MB = {index_mb / (total / 1e6):.1f} MB per million rows")  # fmt: skip
    return {"rows": total, **peak}


def median(values: list[float]) -> float:
    values = sorted(values)
    return (
        values[len(values) // 2] if len(values) % 2 else (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2
    )


# One of N processes: imports, waits for "go", gets the lookup (timed), touches all of it, reports, waits for
# "measure" (so all N are alive and mapped when PSS is read), reports its memory.
NODE_PROCESS = """
import json, resource, sys, time
import numpy as np, pyarrow, pyarrow.csv, pyarrow.compute, pandas, filelock
from bioclip_hf.data.catalog import CatalogIndex, TOL10M_SCHEMA, unpack_uuids
import bioclip_hf.data.catalog_cache

def smaps():
    fields = {}
    for line in open('/proc/self/smaps_rollup'):
        parts = line.split()
        if len(parts) == 3 and parts[2] == 'kB':
            fields[parts[0].rstrip(':')] = int(parts[1]) / 1e3
    return {'rss': fields['Rss'], 'pss': fields['Pss'], 'anon': fields['Anonymous'],
            'unique': fields['Private_Clean'] + fields['Private_Dirty']}

print('imported', flush=True)
sys.stdin.readline()
before = smaps()
start = time.perf_counter()
load = CatalogIndex.load if sys.argv[2] == 'memory' else bioclip_hf.data.catalog_cache.open_catalog_index
index = load(sys.argv[1], TOL10M_SCHEMA)
start_s = time.perf_counter() - start
touched = int(index.split_masks.sum()) + int(index.ids.view(np.uint8).sum())
touched += sum(int(codes.sum()) for codes in index.codes)
touched += sum(int(names.data.sum()) for names in index.vocab if hasattr(names, 'data'))
rows = np.random.default_rng(0).integers(0, len(index), 20000)
keys = [key.decode() for key in (unpack_uuids(index.ids[rows]) if index.uuids else index.ids[rows])]
start = time.perf_counter()
found = [index.taxon(index.lookup(key))['species'] for key in keys]
lookup_us = (time.perf_counter() - start) / len(keys) * 1e6
print(json.dumps({'start_s': start_s, 'lookup_us': lookup_us, 'mapped': index.mapped_from is not None}), flush=True)
sys.stdin.readline()
after = smaps()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
print(json.dumps({**{k + '_mb': after[k] - before[k] for k in after}, 'peak_mb': peak - before['rss']}), flush=True)
"""


def node_run(path: Path, mode: str, processes: int) -> list[dict]:
    """Start `processes` processes together in `mode`; their timings and memory once all hold the lookup."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", NODE_PROCESS, str(path), mode], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env) for _ in range(processes)]  # fmt: skip
    try:
        results = [{} for _ in procs]
        for step in ("imported", "ready", "memory"):
            for proc, result in zip(procs, results):
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"a {mode} process died at step {step} (exit {proc.wait()})")
                if step != "imported":
                    result.update(json.loads(line))
            for proc in procs:  # release all at once: they load together, and are measured together
                if step != "memory":
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
        return results
    finally:
        for proc in procs:
            proc.wait(timeout=600)


def clear_cache(path: Path) -> None:
    from bioclip_hf.data.catalog_cache import lookup_locations

    for location in lookup_locations(path):
        for file in (location, location.with_name(location.name + ".lock")):
            file.unlink(missing_ok=True)


def node_runs(path: Path, rows: int, counts: list[int], repeats: int) -> None:
    """The `memory` / `cold` / `warm` modes with each process count, interleaved; medians of `repeats`."""
    runs: dict[tuple[int, str], list[list[dict]]] = {}
    for _ in range(repeats):
        for n in counts:
            for mode in ("memory", "cold", "warm"):
                if mode == "cold":
                    clear_cache(path)
                runs.setdefault((n, mode), []).append(node_run(path, mode, n))
    million = rows / 1e6
    for n in counts:
        summary = {mode: summarize(runs[(n, mode)]) for mode in ("memory", "cold", "warm")}
        print(f"-- {n} process(es) on one node, {rows:,} catalog rows (median of {repeats}):")
        for mode, row in summary.items():
            print(f"  {mode:>6}: start {row['start_max']:7.3f} s (slowest process) = {row['start_max'] / million:6.3f} s "
                  f"per million rows; per process: unique {row['unique']:7.1f} MB, anonymous {row['anon']:7.1f} MB, "
                  f"PSS {row['pss']:7.1f} MB, peak RSS {row['peak']:7.1f} MB; node: total PSS {row['pss_total']:7.1f} MB, "
                  f"most anonymous {row['anon_max']:7.1f} MB; "
                  f"lookup+taxon {row['lookup_us']:.1f} us")  # fmt: skip
        reference, warm = summary["memory"], summary["warm"]
        print(f"  warm vs memory: start x{reference['start_max'] / warm['start_max']:.0f} faster, unique memory per "
              f"process {warm['unique'] / reference['unique']:.3f}x, node total PSS {warm['pss_total'] / reference['pss_total']:.3f}x, "
              f"lookup+taxon {warm['lookup_us'] / reference['lookup_us']:.2f}x the time; cold start "
              f"{summary['cold']['start_max'] / reference['start_max']:.2f}x memory's")  # fmt: skip


def summarize(repeats: list[list[dict]]) -> dict[str, float]:
    """Per repeat: the slowest start, the per-process median of each memory figure, the node's PSS total."""

    def per_repeat(fn):
        return median([fn(processes) for processes in repeats])

    out = {
        "start_max": per_repeat(lambda ps: max(p["start_s"] for p in ps)),
        "pss_total": per_repeat(lambda ps: sum(p["pss_mb"] for p in ps)),
        "lookup_us": per_repeat(lambda ps: median([p["lookup_us"] for p in ps])),
        "anon_max": per_repeat(lambda ps: max(p["anon_mb"] for p in ps)),
    }  # anon_max: in cold mode, the process that built the lookup
    for key in ("unique", "anon", "pss", "peak"):
        out[key] = per_repeat(lambda ps, key=key: median([p[f"{key}_mb"] for p in ps]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1000000,2000000", help="catalog sizes (rows before train_small repeats)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each measurement (the median is kept)")
    parser.add_argument("--processes", default="1,4", help="process counts on one node for the shared cache ('' skips)")
    parser.add_argument("--skip-build-peak", action="store_true", help="only the multi-process part")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.processes.split(",") if n]
    peaks = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BIOCLIP_HF_CACHE"] = str(Path(tmp) / "user-cache")  # never the user's own cache
        for rows in (int(value) for value in args.rows.split(",")):
            path = Path(tmp) / f"{rows}" / "catalog.csv"
            path.parent.mkdir()
            write_catalog(path, rows)
            if not args.skip_build_peak:
                peaks.append(build_peaks(path, args.repeats))
            if counts:
                node_runs(path, peaks[-1]["rows"] if peaks else count_rows(path), counts, args.repeats)
            clear_cache(path)
            path.unlink()
    report_peaks(peaks)
    return 0


def count_rows(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for _ in fh) - 1


def report_peaks(runs: list[dict]) -> None:
    for result in runs:
        ours, reference = result["bioclip_hf"] / (result["rows"] / 1e6), result["pandas"] / (result["rows"] / 1e6)
        print(
            f"{result['rows']:>11,} rows: bioclip_hf {ours:6.1f} MB per million rows, pandas {reference:6.1f}; "
            f"ratio pandas / bioclip_hf {reference / ours:.2f} (target < 300: {'met' if ours < 300 else 'NOT met'})"
        )
    if len(runs) > 1:  # the slope: what each further million rows costs, without fixed reader buffers
        first, last = runs[0], runs[-1]
        million = (last["rows"] - first["rows"]) / 1e6
        print(
            f"marginal peak per further million rows: bioclip_hf {(last['bioclip_hf'] - first['bioclip_hf']) / million:.1f} MB, "
            f"pandas {(last['pandas'] - first['pandas']) / million:.1f} MB"
        )


if __name__ == "__main__":
    raise SystemExit(main())
