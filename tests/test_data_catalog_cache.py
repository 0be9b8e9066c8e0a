"""The catalog lookup's on-disk cache: built once, memory-mapped by every process, exact, invalidated, shared safely.

Fixtures are the real layouts of `support.training_data` (TreeOfLife-10M's `metadata/catalog.csv`, TreeOfLife-200M's
`catalog.parquet`); the in-memory `CatalogIndex.load` is the reference every cached lookup must equal.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support.training import TRAIN_CFG, KillingLoader, Preempted, fresh_accelerate_state  # noqa: F401  (autouse fixture)
from support.training_data import catalog_row, make_tol10m_repo, make_tol200m_folder, tol_id

import bioclip_hf
from bioclip_hf.data.catalog import TOL10M_SCHEMA, TOL200M_SCHEMA, CatalogIndex, CatalogSchema
from bioclip_hf.data.catalog_cache import LOOKUP_SUFFIX, PackedNames, lookup_locations, open_catalog_index


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    """The fallback cache folder of every test is its own (never the user's ~/.cache)."""
    monkeypatch.setenv("BIOCLIP_HF_CACHE", str(tmp_path / "user-cache"))
    return tmp_path / "user-cache"


@pytest.fixture
def tol10m(tmp_path):
    root = tmp_path / "TreeOfLife-10M"
    return root, make_tol10m_repo(root, train=16, val=4, per_tar=7)


def assert_same_lookup(cached: CatalogIndex, reference: CatalogIndex, keys: list[str]) -> None:
    """Same ids, splits, taxa, sizes and answers as the in-memory build."""
    assert (cached.ids.dtype, cached.uuids, cached.num_rows) == (
        reference.ids.dtype,
        reference.uuids,
        reference.num_rows,
    )
    assert (cached.split_names, cached.counts) == (reference.split_names, reference.counts)
    assert np.array_equal(cached.ids, reference.ids) and np.array_equal(cached.split_masks, reference.split_masks)
    assert all(np.array_equal(a, b) for a, b in zip(cached.codes, reference.codes))
    assert [None if v is None else list(v) for v in cached.vocab] == reference.vocab
    assert [cached.taxon(row) for row in range(len(cached))] == [reference.taxon(row) for row in range(len(reference))]
    for key in keys:
        row = reference.lookup(key)
        assert cached.lookup(key) == row
        assert row < 0 or [cached.in_split(row, s) for s in cached.split_names] == [reference.in_split(row, s) for s in
                                                                                    reference.split_names]  # fmt: skip


def probe_keys(info: dict) -> list[str]:
    keys = info["train"] + info["val"] + [info["orphan"], info["corrupt"], "not-a-uuid", ""]
    return keys + [key.upper() for key in info["train"][:3]] + [tol_id(i) for i in range(950, 956)]


def test_cached_lookup_is_the_in_memory_one_and_a_warm_start_never_reads_the_catalog(tol10m, monkeypatch):
    root, info = tol10m
    catalog = root / "metadata" / "catalog.csv"
    reference = CatalogIndex.load(catalog, TOL10M_SCHEMA)
    cold = open_catalog_index(catalog, TOL10M_SCHEMA)
    cache = catalog.with_name("catalog.csv" + LOOKUP_SUFFIX)
    assert cold.mapped_from == cache == lookup_locations(catalog)[0] and cache.is_file()
    assert reference.mapped_from is None
    assert_same_lookup(cold, reference, probe_keys(info))
    with monkeypatch.context() as patch:
        patch.setattr(CatalogIndex, "load", lambda *a, **k: pytest.fail("catalog read despite a valid cache"))
        warm = open_catalog_index(catalog, TOL10M_SCHEMA)
    assert_same_lookup(warm, reference, probe_keys(info))
    # The arrays are read-only views of one shared mapping of the file, not copies.
    assert not warm.ids.flags.writeable and not warm.codes[6].flags.writeable
    assert all(isinstance(names, PackedNames) for names in warm.vocab) and warm.nbytes < cache.stat().st_size


def test_packed_names_read_back_as_the_list_they_pack():
    names = ["Aves", "", "é-ünïcode", "Corvus corax", "common name 12"]
    packed = PackedNames.pack(names)
    assert len(packed) == len(names) and list(packed) == names and packed[1:4] == names[1:4]
    assert (packed[-1], packed[np.int32(2)], packed[True]) == (names[-1], names[2], names[1])  # index-like keys
    for bad in (len(names), -len(names) - 1):
        with pytest.raises(IndexError):
            packed[bad]
    assert list(PackedNames.pack([])) == []


def test_treeoflife_200m_parquet_and_non_uuid_ids(tmp_path):
    keys = make_tol200m_folder(tmp_path / "tol200m", num_images=12, per_shard=4)
    catalog = tmp_path / "tol200m" / "catalog.parquet"
    reference = CatalogIndex.load(catalog, TOL200M_SCHEMA)
    cached = open_catalog_index(catalog, TOL200M_SCHEMA)
    assert cached.mapped_from == tmp_path / "tol200m" / ("catalog.parquet" + LOOKUP_SUFFIX) and cached.uuids
    assert_same_lookup(cached, reference, keys + [tol_id(1), keys[0].upper()])
    assert cached.taxon(cached.lookup(keys[5]))["common_name"] == ""  # a null `common` stays empty
    mixed = tmp_path / "mixed" / "catalog.csv"  # ids that are not all uuids stay plain strings
    mixed.parent.mkdir()
    rows = [catalog_row("train", key, i) for i, key in enumerate((tol_id(1), "eol-123", tol_id(2), "é-ünïcode"))]
    mixed.write_text(",".join(rows[0]) + "\n" + "".join(",".join(r.values()) + "\n" for r in rows), encoding="utf-8")
    reference = CatalogIndex.load(mixed, TOL10M_SCHEMA)
    cached = open_catalog_index(mixed, TOL10M_SCHEMA)
    assert not cached.uuids and cached.mapped_from is not None
    assert_same_lookup(cached, reference, ["eol-123", "é-ünïcode", tol_id(1), tol_id(2).upper(), "eol-124"])


def test_streams_and_dataset_sizes_are_those_of_the_in_memory_lookup(tol10m, monkeypatch):
    from bioclip_hf.data.stream import StreamStats, build_stream
    from bioclip_hf.data.treeoflife_sources import find_tol_source, load_catalog_index

    root, _ = tol10m

    def stream(split: str):
        stats = StreamStats()
        samples = [(s["key"], s["text"], s["taxon"]) for s in build_stream(str(root), split=split, shuffle_buffer=4,
                                                                            seed=3, stats=stats)]  # fmt: skip
        return samples, stats.skipped, find_tol_source(str(root)).num_examples(split)

    splits = ("train", "val", "train_small")
    cached = {split: stream(split) for split in splits}
    assert load_catalog_index(str(root / "metadata" / "catalog.csv"), "treeoflife-10m").mapped_from is not None
    load_catalog_index.cache_clear()
    monkeypatch.setattr("bioclip_hf.data.treeoflife_sources.open_catalog_index", CatalogIndex.load)
    try:
        assert {split: stream(split) for split in splits} == cached
        assert load_catalog_index(str(root / "metadata" / "catalog.csv"), "treeoflife-10m").mapped_from is None
    finally:
        load_catalog_index.cache_clear()
    assert [cached[s][2] for s in splits] == [17, 4, 6]


def revise_catalog(catalog: Path, old: str, new: str, mtime_ns: int) -> None:
    """A new revision of the catalog: the first row's species `old` becomes `new`, with the given mtime."""
    data = catalog.read_bytes()  # bytes: the csv module's \r\n line ends stay as they are
    assert data.split(b"\n")[1].count(f",Corvus,{old},".encode()) == 1
    catalog.write_bytes(data.replace(f",Corvus,{old},".encode(), f",Corvus,{new},".encode(), 1))
    os.utime(catalog, ns=(mtime_ns, mtime_ns))


DAMAGES = {
    "truncated": lambda data: data[: len(data) // 2],
    "bad magic": lambda data: b"not a cache" + data[11:],
    "header not a dict": lambda data: data[:18] + (2).to_bytes(8, "little") + b"[]",
    "header not json": lambda data: data[:26] + b"\xff" * 8 + data[34:],
}


def test_a_changed_catalog_or_a_damaged_cache_is_rebuilt(tol10m, caplog):
    root, info = tol10m
    catalog = root / "metadata" / "catalog.csv"
    first = open_catalog_index(catalog, TOL10M_SCHEMA)
    cache, size = first.mapped_from, catalog.stat().st_size
    # Only the mtime tells this revision apart (same size: corax -> albus), then only the size (cornix, same mtime).
    for species, mtime_ns in (("albus", 10**18), ("cornix", 10**18)):
        revise_catalog(catalog, {"albus": "corax", "cornix": "albus"}[species], species, mtime_ns)
        assert (catalog.stat().st_size == size) == (species == "albus")
        changed = open_catalog_index(catalog, TOL10M_SCHEMA)
        assert changed.mapped_from == cache and changed.taxon(changed.lookup(info["train"][0]))["species"] == species
        assert_same_lookup(changed, CatalogIndex.load(catalog, TOL10M_SCHEMA), probe_keys(info))
    assert first.taxon(first.lookup(info["train"][0]))["species"] == "corax"  # a rebuild leaves old mappings intact
    # The reference is built in memory: damaging the file in place (as here) changes what maps it, so the
    # mapped `changed` cannot serve as the reference once its file is damaged.
    reference = CatalogIndex.load(catalog, TOL10M_SCHEMA)
    caplog.set_level(logging.INFO, logger="bioclip_hf.data.catalog_cache")
    for name, damage in DAMAGES.items():
        cache.write_bytes(damage(cache.read_bytes()))
        caplog.clear()
        rebuilt = open_catalog_index(catalog, TOL10M_SCHEMA)
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1 and str(cache) in warnings[0], (name, warnings)  # one warning, naming the file
        assert rebuilt.mapped_from == cache and "wrote catalog lookup cache" in caplog.text, name
        assert_same_lookup(rebuilt, reference, probe_keys(info))
    # The same file read with another schema is another lookup: the TreeOfLife-10M one is not reused.
    other = open_catalog_index(catalog, CatalogSchema(key="treeoflife_id"))
    assert other.counts["train"] == 16 + 1 + 6  # no image marker: every train row counts
    assert open_catalog_index(catalog, TOL10M_SCHEMA).counts["train"] == 16 + 1
    assert sorted(p.name for p in cache.parent.iterdir() if p.name.startswith(".")) == []  # no temporary files left


def test_a_read_only_catalog_folder_caches_in_the_user_cache(tol10m, user_cache):
    root, info = tol10m
    folder = root / "metadata"
    catalog = folder / "catalog.csv"
    reference = CatalogIndex.load(catalog, TOL10M_SCHEMA)
    beside = lookup_locations(catalog)[0]
    if os.geteuid() == 0:  # permission bits do not bind root: the cache and lock paths are taken instead
        beside.mkdir()
        beside.with_name(beside.name + ".lock").mkdir()
    folder.chmod(0o555)
    try:
        cached = open_catalog_index(catalog, TOL10M_SCHEMA)
        assert (
            cached.mapped_from == lookup_locations(catalog)[1]
            and cached.mapped_from.parent == user_cache / "tol-catalog"
        )
        assert_same_lookup(cached, reference, probe_keys(info))
        assert open_catalog_index(catalog, TOL10M_SCHEMA).mapped_from == cached.mapped_from
        (user_cache / "tol-catalog").chmod(0o555)  # nothing writable at all: held in memory, still exact
        cached.mapped_from.unlink()
        if os.geteuid() == 0:
            cached.mapped_from.mkdir()
            cached.mapped_from.with_name(cached.mapped_from.name + ".lock").unlink()
            cached.mapped_from.with_name(cached.mapped_from.name + ".lock").mkdir()
        uncached = open_catalog_index(catalog, TOL10M_SCHEMA)
        assert uncached.mapped_from is None
        assert_same_lookup(uncached, reference, probe_keys(info))
    finally:
        folder.chmod(0o755)
        (user_cache / "tol-catalog").chmod(0o755)


RACER = """
import json, logging, os, sys, time
from pathlib import Path
import bioclip_hf.data.catalog_cache as cache_module
from bioclip_hf.data.catalog import CatalogIndex, TOL10M_SCHEMA

catalog, go, no_lock = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
load = CatalogIndex.load
def slow_load(*args, **kwargs):  # hold the build open so that the racers overlap
    index = load(*args, **kwargs)
    time.sleep(1.0)
    return index
CatalogIndex.load = slow_load
if no_lock:  # a file system where the lock does not hold: every racer builds and writes
    import contextlib
    cache_module._build_lock = lambda locations: contextlib.nullcontext(locations[0])
go.with_name(f"ready-{os.getpid()}").touch()  # imported: the test releases every racer at once
while not go.exists():
    time.sleep(0.005)
index = cache_module.open_catalog_index(catalog, TOL10M_SCHEMA)
rows = [index.lookup(key) for key in json.loads(sys.argv[4])]
print(json.dumps({"mapped": str(index.mapped_from), "taxa": [index.taxon(r) if r >= 0 else None for r in rows]}))
"""


@pytest.mark.parametrize("no_lock", [False, True], ids=["locked", "lock-not-holding"])
def test_racing_processes_build_once_and_never_see_a_partial_cache(tol10m, tmp_path, no_lock):
    root, info = tol10m
    catalog = root / "metadata" / "catalog.csv"
    keys = probe_keys(info)
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(bioclip_hf.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(catalog), str(go), str(int(no_lock)), json.dumps(keys)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(3)]  # fmt: skip
    deadline = time.monotonic() + 240
    while len(list(tmp_path.glob("ready-*"))) < len(racers):  # a barrier: imports take seconds on a busy machine
        assert time.monotonic() < deadline and all(racer.poll() is None for racer in racers), "a racer did not start"
        time.sleep(0.01)
    go.touch()  # all three start together
    outputs = [racer.communicate(timeout=300) for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0, 0], [err[-2000:] for _, err in outputs]
    reference = CatalogIndex.load(catalog, TOL10M_SCHEMA)
    expected = [reference.taxon(reference.lookup(k)) if reference.lookup(k) >= 0 else None for k in keys]
    cache = lookup_locations(catalog)[0]
    for out, _ in outputs:
        assert json.loads(out) == {"mapped": str(cache), "taxa": expected}
    builds = sum(err.count("wrote catalog lookup cache") for _, err in outputs)
    waits = sum(err.count("waiting for another process to build") for _, err in outputs)
    assert (builds, waits) == ((3, 0) if no_lock else (1, 2))  # with the lock: one builder, two waiters
    assert_same_lookup(open_catalog_index(catalog, TOL10M_SCHEMA), reference, keys)
    assert [p.name for p in cache.parent.iterdir() if p.name.startswith(".")] == []  # every temporary file renamed


def test_training_on_a_catalog_source_resumes_exactly_from_the_mapped_lookup(tol10m, tmp_path, monkeypatch):
    """Uninterrupted (the lookup built, cold) == killed after 3 steps and resumed (the lookup mapped, warm)."""
    from safetensors.torch import load_file

    import bioclip_hf.training.trainer as train_module
    from bioclip_hf.data.treeoflife_sources import load_catalog_index
    from bioclip_hf.training.config import TrainConfig
    from bioclip_hf.training.trainer import train

    root, _ = tol10m
    (tmp_path / "tiny.json").write_text(json.dumps(TRAIN_CFG))
    settings = {"model_config": str(tmp_path / "tiny.json"), "train_data": str(root), "batch_size": 4, "max_steps": 6,
                "warmup_steps": 1, "learning_rate": 1e-3, "shuffle_buffer": 6, "report_to": "none",
                "progress_bar": False, "seed": 3, "save_steps": 2}  # fmt: skip
    load_catalog_index.cache_clear()
    straight = train(TrainConfig(**settings, output_dir=str(tmp_path / "straight")))
    assert lookup_locations(root / "metadata" / "catalog.csv")[0].is_file()
    load_catalog_index.cache_clear()  # a new process: the lookup comes from the cache
    real = train_module.default_data_fn
    monkeypatch.setattr(train_module, "default_data_fn", lambda *args: KillingLoader(real(*args), after=3))
    with pytest.raises(Preempted):
        train(TrainConfig(**settings, output_dir=str(tmp_path / "resumed")))
    monkeypatch.setattr(train_module, "default_data_fn", real)
    load_catalog_index.cache_clear()
    monkeypatch.setattr(CatalogIndex, "load", lambda *a, **k: pytest.fail("catalog read despite a valid cache"))
    resumed = train(TrainConfig(**settings, output_dir=str(tmp_path / "resumed"), resume="latest"))
    load_catalog_index.cache_clear()
    a, b = load_file(str(Path(straight) / "model.safetensors")), load_file(str(Path(resumed) / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)  # bit-identical
