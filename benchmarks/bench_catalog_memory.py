"""Memory of the TreeOfLife catalog lookup: peak RSS per million catalog rows (target: < 300 MB per million).

Writes a synthetic `metadata/catalog.csv` in TreeOfLife-10M's exact column layout (uuid `treeoflife_id`s,
EOL/BIOSCAN/iNat21 source columns, train + train_small duplicates + val rows, ~450k species at 10M rows,
scaled down with the row count), then loads it in fresh processes:

- `bioclip_hf`: `CatalogIndex.load` (Arrow dictionary columns + sorted fixed-width ids);
- reference: `pandas.read_csv` of the same columns with default dtypes, then `set_index(treeoflife_id)`,
  the obvious way to build a lookup.

Each load runs in its own process; the peak RSS (`ru_maxrss`) minus the RSS after imports is the memory the
load needed. Prints MB per million rows for both and their ratio; the lookup's steady size is printed too.

Example:
    python benchmarks/bench_catalog_memory.py --rows 1000000,4000000
"""

from __future__ import annotations

import argparse
import csv
import json
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
        "from bioclip_hf.tol_catalog import CatalogIndex, TOL10M_SCHEMA\n"
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
    "import bioclip_hf.tol_catalog\n"
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


def run(rows: int, repeats: int) -> dict[str, float]:
    """Peak RSS per million rows of each loader on a catalog of `rows` rows (median of `repeats`)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "catalog.csv"
        write_catalog(path, rows)
        size_mb = path.stat().st_size / 1e6
        results: dict[str, list[dict]] = {name: [] for name in LOADERS}
        for _ in range(repeats):
            for name in LOADERS:  # interleaved, so machine load affects both alike
                results[name].append(measure(name, path))
    total = results["bioclip_hf"][0]["rows"]
    peak = {}
    for name, runs in results.items():
        deltas = sorted(run["peak_mb"] - run["before_mb"] for run in runs)
        peak[name] = deltas[len(deltas) // 2]
        print(f"{name:>10}: peak RSS {peak[name]:8.1f} MB over the imports = "
              f"{peak[name] / (total / 1e6):6.1f} MB per million catalog rows")  # fmt: skip
    index_mb = results["bioclip_hf"][0]["index_mb"]
    print(f"  catalog: {total:,} rows ({size_mb:.0f} MB CSV), {results['bioclip_hf'][0]['ids']:,} distinct ids; "
          f"the lookup holds {index_mb:.1f} MB = {index_mb / (total / 1e6):.1f} MB per million rows")  # fmt: skip
    return {"rows": total, **peak}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1000000,2000000", help="catalog sizes (rows before train_small repeats)")
    parser.add_argument("--repeats", type=int, default=1, help="loads per implementation (the median peak is kept)")
    args = parser.parse_args(argv)
    runs = [run(int(rows), args.repeats) for rows in args.rows.split(",")]
    for result in runs:
        ours, reference = result["bioclip_hf"] / (result["rows"] / 1e6), result["pandas"] / (result["rows"] / 1e6)
        print(f"{result['rows']:>11,} rows: bioclip_hf {ours:6.1f} MB per million rows, pandas {reference:6.1f}; "
              f"ratio pandas / bioclip_hf {reference / ours:.2f} (target < 300: {'met' if ours < 300 else 'NOT met'})")
    if len(runs) > 1:  # the slope: what each further million rows costs, without fixed reader buffers
        first, last = runs[0], runs[-1]
        million = (last["rows"] - first["rows"]) / 1e6
        print(f"marginal peak per further million rows: bioclip_hf {(last['bioclip_hf'] - first['bioclip_hf']) / million:.1f} MB, "
              f"pandas {(last['pandas'] - first['pandas']) / million:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
