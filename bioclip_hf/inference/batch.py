"""Predict or embed millions of images: partitioned over processes, streamed, resumable, memory-flat.

Multi-process and multi-node runs are Accelerate's job: under `accelerate launch` every process runs the same
command, and `process_state()` tells it its rank. The inputs are cut into blocks (see `inference.sources`); block `b`
belongs to process `b % world_size`, and within a process to DataLoader worker `(b // world_size) % num_workers`,
which decodes it batch by batch. The process encodes each batch, turns it into rows (`to_table`) and, when a
block is complete, writes it as one Parquet part (atomically). Blocks never mix in a batch, so every image is
computed with the same batch neighbours whatever the number of processes or workers.

Re-running the same command skips the blocks whose part exists; `run.json` (written by the first run) makes a
run with other options refuse, naming the option that changed. Memory stays flat: a process holds at most one
block per worker, and merging reads one part at a time.

Example:
    >>> state = process_state()  # doctest: +SKIP
    >>> result = run_blocks(classifier, FileSource.from_inputs(["photos/"]), "out.parts", to_table, run, state=state)  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bioclip_hf.inference.images import decode_batch, make_loader
from bioclip_hf.inference.parquet import RUN_DIR, list_parts, part_name, write_part

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"


@dataclass
class ProcessState:
    """This process's place in a (possibly) multi-process run; a single process needs no Accelerate."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    accelerate_state: Any = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every process got here (a no-op for one process)."""
        if self.accelerate_state is not None:
            self.accelerate_state.wait_for_everyone()

    def device(self, requested: str | None) -> str | None:
        """The device for this process: with several processes, Accelerate's (one GPU per process) unless
        a specific one was asked for; "cuda" alone means this process's GPU."""
        if self.accelerate_state is None:
            return requested
        if requested in (None, "auto", "cuda"):
            return str(self.accelerate_state.device)
        return requested


def process_state() -> ProcessState:
    """Rank and world size from the launcher (`accelerate launch`, or torchrun); Accelerate sets up the process
    group (gloo on CPU when `ACCELERATE_USE_CPU` is set or no GPU is present). One process (no `WORLD_SIZE` > 1
    in the environment) never imports Accelerate."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return ProcessState()
    try:
        from accelerate import PartialState
        from accelerate.utils import parse_flag_from_env
    except ImportError:
        raise ImportError("this process is one of several (WORLD_SIZE > 1) but accelerate is not installed: "
                          "pip install 'bioclip-hf[distributed]'") from None  # fmt: skip
    accelerators = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not accelerators)
    if state.num_processes != world_size:
        raise RuntimeError(f"the launcher started {world_size} processes but Accelerate set up {state.num_processes}")
    return ProcessState(state.process_index, state.num_processes, state.local_process_index, state)


# -- the run file: what a resumed run must match --------------------------------------------------------------


def run_file(folder: str | os.PathLike) -> Path:
    return Path(folder) / RUN_DIR / RUN_FILE


def changed_option(previous: Mapping[str, Any], current: Mapping[str, Any], flags: bool = True) -> str | None:
    """A one-line description of the first difference between two run descriptions, or None; options are named
    as command-line flags (`--part-size`) or, with `flags=False`, as Python arguments (`part_size`)."""

    def option(name: str) -> str:
        return f"--{name.replace('_', '-')}" if flags else name

    if previous.get("command") != current.get("command"):
        return f"it was a {previous.get('command')!r} run, this is {current.get('command')!r}"
    old_options, new_options = previous.get("options", {}), current.get("options", {})
    for name in dict.fromkeys([*old_options, *new_options]):
        if old_options.get(name) != new_options.get(name):
            return f"{option(name)} was {old_options.get(name)!r}, now {new_options.get(name)!r}"
    if previous.get("block_size") != current.get("block_size"):
        return f"{option('part_size')} was {previous.get('block_size')}, now {current.get('block_size')}"
    if previous.get("inputs") != current.get("inputs"):
        return f"the inputs changed (was {_describe(previous.get('inputs'))}, now {_describe(current.get('inputs'))})"
    return None


def _describe(inputs: Any) -> str:
    if not isinstance(inputs, Mapping):
        return repr(inputs)
    if inputs.get("kind") == "files":
        return f"{inputs.get('images')} files, sha256 {str(inputs.get('sha256'))[:12]}"
    return ", ".join(f"{key}={value}" for key, value in inputs.items() if key != "kind")


def check_resume(folder: str | os.PathLike, run: Mapping[str, Any], flags: bool = True) -> bool:
    """Refuse (ValueError, one line naming the option) to continue `folder` with another `run`; True if resuming."""
    path = run_file(folder)
    if not path.is_file():
        return False
    previous = json.loads(path.read_text(encoding="utf-8"))
    change = changed_option(previous, json.loads(json.dumps(run, default=str)), flags)
    if change:
        raise ValueError(f"{folder} holds parts of another run: {change} (rerun with the same options, "
                         f"or use another {'--output' if flags else 'output'})")  # fmt: skip
    return True


def check_or_start_run(folder: str | os.PathLike, run: Mapping[str, Any], state: ProcessState) -> bool:
    """`check_resume`; for a new run the main process records `run`. Every process checks (so all fail alike),
    then waits for the main process. Returns True when resuming."""
    resuming = check_resume(folder, run)
    if state.is_main:  # temporary files of parts whose writer was killed
        for stale in Path(folder).glob(".part-*.parquet.*"):
            stale.unlink(missing_ok=True)
    if not resuming and state.is_main:
        from bioclip_hf.utils.io import atomic_write_bytes

        atomic_write_bytes(run_file(folder), json.dumps(run, indent=2, default=str).encode())
    state.barrier()
    return resuming


# -- the run ------------------------------------------------------------------------------------------------------


@dataclass
class BlockResult:
    """What this process did: blocks written now, images read, rows written, unreadable images."""

    blocks: int = 0
    images: int = 0
    rows: int = 0
    errors: int = 0
    skipped_blocks: int = 0


class _BlockBatches(torch.utils.data.IterableDataset):
    """This process's pending blocks as decoded batches; worker w of W takes every W-th of them.

    Every worker sees the block indices in the same order (sources call `wanted` once per block, in order), so
    counting the pending ones splits them evenly, also when a resumed run has holes in its blocks.
    """

    def __init__(self, source: Any, transform: Callable[[Any], Any], batch_size: int, state: ProcessState,
                 done: set[int]):  # fmt: skip
        self.source, self.transform, self.batch_size = source, transform, batch_size
        self.rank, self.world, self.done = state.rank, state.world_size, done

    def mine(self, block: int) -> bool:
        """Is `block` this process's, and not written yet?"""
        return block % self.world == self.rank and block not in self.done

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        pending = itertools.count()

        def wanted(index: int) -> bool:
            return self.mine(index) and next(pending) % workers == worker

        for block in self.source.iter_blocks(wanted):
            size = len(block.payloads)
            for start in range(0, size, self.batch_size):
                batch = decode_batch(self.transform, block.payloads[start : start + self.batch_size])
                keys = block.keys[start : start + self.batch_size]
                yield {"block": block.index, "pixels": batch["pixels"], "keys": [keys[i] for i in batch["ok"]],
                       "errors": [{"key": keys[i], "error": message} for i, message in batch["errors"]],
                       "size": batch["size"], "last": start + self.batch_size >= size}  # fmt: skip


def _pending(dataset: _BlockBatches, source: Any) -> tuple[int | None, int | None]:
    """(blocks, images) this process still has to do; (None, None) when the source's length is unknown."""
    if source.num_blocks is None:
        return None, None
    blocks = [block for block in range(source.num_blocks) if dataset.mine(block)]
    size = len(source)
    return len(blocks), sum(min(source.block_size, size - block * source.block_size) for block in blocks)


def run_blocks(
    classifier: Any, source: Any, folder: str | os.PathLike, to_table: Callable[[list[Any], torch.Tensor], Any],
    run: Mapping[str, Any], metadata: Mapping[str, Any] | None = None, state: ProcessState | None = None,
    normalize: bool = True, progress: bool = True,
) -> BlockResult:
    """Encode this process's blocks of `source` with `classifier` and write one Parquet part per block to `folder`.

    Args:
        classifier: a `BaseClassifier` (its batch size, workers, device, `optimize` settings are used).
        source: a `FileSource` or `DatasetSource`.
        folder: where the parts go (created; shared by all processes).
        to_table: (keys of the readable images, `[b, D]` float32 features) -> a `pyarrow.Table` of output rows.
        run: what identifies the run (command, options, inputs, block_size): a resumed run must match.
        metadata: stored in every part's Parquet metadata (model, revision, ...).
        state: from `process_state()` (default: this process alone).
        normalize: unit-length features.
        progress: show a progress bar (main process).

    Example:
        >>> run_blocks(clf, source, "out.parts", lambda keys, f: embeddings_table(keys, "file", f.numpy()), run)  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    state = state or ProcessState()
    Path(folder).mkdir(parents=True, exist_ok=True)
    check_or_start_run(folder, run, state)
    done = set(list_parts(folder))
    dataset = _BlockBatches(source, classifier.processor.image_processor.transform, classifier.batch_size, state, done)
    pending, images = _pending(dataset, source)
    # Workers decode whole blocks: no more than there are blocks, none for a single batch (nothing to overlap).
    workers = classifier.num_workers if pending is None else min(classifier.num_workers, pending)
    workers = 0 if images is not None and images <= classifier.batch_size else workers
    loader = make_loader(dataset, workers, pin_memory=classifier.device.type == "cuda")
    result = BlockResult(skipped_blocks=len(done))
    open_blocks: dict[int, dict[str, Any]] = {}
    bar = tqdm(total=images, desc=f"images (process {state.rank})" if state.world_size > 1 else "images", unit="img",
               disable=not progress or not state.is_main)  # fmt: skip
    for batch in loader:
        entry = open_blocks.setdefault(batch["block"], {"tables": [], "errors": [], "images": 0})
        entry["errors"] += batch["errors"]
        entry["images"] += batch["size"]
        if batch["pixels"] is not None:
            table = to_table(batch["keys"], classifier.encode_pixels(batch["pixels"], normalize))
            if table is not None and table.num_rows:
                entry["tables"].append(table)
        bar.update(batch["size"])
        if batch["last"]:
            _write_block(folder, batch["block"], open_blocks.pop(batch["block"]), metadata, result, state.rank)
    bar.close()
    if open_blocks:  # a worker stopped mid-block: never write a partial part
        raise RuntimeError(f"incomplete blocks {sorted(open_blocks)[:5]}: the image loader stopped early")
    state.barrier()
    return result


def _write_block(folder: str | os.PathLike, block: int, entry: dict[str, Any], metadata: Mapping[str, Any] | None,
                 result: BlockResult, process: int = 0) -> None:  # fmt: skip
    import pyarrow as pa

    tables = entry["tables"]
    table = pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
    for error in entry["errors"]:  # recorded in the part; callers report them once the run is merged
        logger.info("skipped %s: %s", error["key"], error["error"])
    info = {"images": entry["images"], "errors": entry["errors"], "process": process}
    write_part(folder, block, table, info, metadata)
    logger.info("wrote %s (%d rows, %d images)", part_name(block), table.num_rows, entry["images"])
    result.blocks += 1
    result.images += entry["images"]
    result.rows += table.num_rows
    result.errors += len(entry["errors"])
