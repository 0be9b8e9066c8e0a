"""Where the images of a batch run come from: files (folders, globs, file lists, a CSV column) or a `datasets`
image dataset (local or on the Hub, streamed).

Both kinds are cut into blocks of `block_size` consecutive inputs. A block is the unit of work: it is handed to one
process (and one decoding worker), written as one Parquet part, and skipped when a run resumes. Blocks depend only
on the inputs and `block_size` (never on the number of processes), so a run can resume with another process count.

Example:
    >>> source = FileSource.from_inputs(["photos/", "more/*.jpg"], block_size=1024)  # doctest: +SKIP
    >>> source = DatasetSource("imageomics/rare-species", split="train", image_column="image")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Column names `--files table.csv` looks for when no column is named.
FILE_COLUMNS = ("file", "filepath", "file_path", "path", "image_path", "filename", "file_name", "image")


@dataclass
class Block:
    """Inputs `index * block_size ...` of a source: their output keys and what to decode (paths, bytes dicts)."""

    index: int
    keys: list[Any]
    payloads: list[Any]


@dataclass
class FileSource:
    """Image files in a fixed order; `keys` are the names written to the output's key column ("file").

    Args:
        keys: one output name per image (the path as given).
        paths: where to read each image (same order as `keys`).
        block_size: images per block.
        errors: inputs already known to be missing ({"file", "error"}), reported with the run's errors.
    """

    keys: list[str]
    paths: list[str]
    block_size: int = 1024
    errors: list[dict[str, str]] = field(default_factory=list)
    key_column: str = "file"

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"block size must be >= 1, got {self.block_size}")

    @classmethod
    def from_inputs(cls, inputs: Sequence[str], files: str | os.PathLike | None = None, file_column: str | None = None,
                    block_size: int = 1024) -> FileSource:  # fmt: skip
        """Folders (recursive), files and globs from `inputs`, then the entries of a `files` list (see `read_file_list`)."""
        from bioclip_hf.inference.images import collect_images

        paths, errors = collect_images(list(inputs)) if inputs else ([], [])
        keys = list(paths)
        if files is not None:
            listed_keys, listed_paths = read_file_list(files, file_column)
            keys += listed_keys
            paths += listed_paths
        return cls(keys, paths, block_size, errors)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_blocks(self) -> int | None:
        return -(-len(self.paths) // self.block_size)

    def fingerprint(self) -> dict[str, Any]:
        """What identifies these inputs for a resumed run: count and a hash of the ordered names."""
        digest = hashlib.sha256("\n".join(self.keys).encode("utf-8", "surrogateescape")).hexdigest()
        return {"kind": "files", "images": len(self.keys), "sha256": digest}

    def describe(self) -> str:
        return f"{len(self.keys):,} image files"

    def iter_blocks(self, wanted: Callable[[int], bool]) -> Iterator[Block]:
        """The blocks whose index satisfies `wanted` (called once per block, in order), in order."""
        for index in range(self.num_blocks or 0):
            if wanted(index):
                span = slice(index * self.block_size, (index + 1) * self.block_size)
                yield Block(index, self.keys[span], self.paths[span])


def read_file_list(path: str | os.PathLike, column: str | None = None) -> tuple[list[str], list[str]]:
    """(names as written, paths to read) from a text file (one path per line) or a table's column.

    Tables are .csv, .tsv or .parquet; the column is `column`, else the first of `FILE_COLUMNS` present. Relative
    paths are resolved against the list's own folder (as in dataset metadata files such as birds525's labels.csv).

    Example:
        >>> keys, paths = read_file_list("labels.csv", column="file")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file list not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".parquet"):
        import pandas as pd

        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
        if column is None:
            column = next((name for name in FILE_COLUMNS if name in frame.columns), None)
        if column not in frame.columns:
            wanted = f"no column {column!r}" if column else f"none of the columns {', '.join(FILE_COLUMNS)}"
            raise ValueError(f"{path} has {wanted}; its columns: {', '.join(map(str, frame.columns))} (use --file-column)")
        names = [str(value).strip() for value in frame[column].tolist()]
    else:
        if column is not None:
            raise ValueError(f"--file-column applies to .csv/.tsv/.parquet lists, not {path.name}")
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [name for name in names if name]
    return names, [str(path.parent / name) if not os.path.isabs(name) else name for name in names]


class DatasetSource:
    """Images from a `datasets` dataset, read in order: a Hub id or local folder (streamed), or a folder written by
    `Dataset.save_to_disk` (read by position).

    Images are read undecoded (`Image(decode=False)`) and decoded by the workers. Each block is read as one Arrow
    table; processes and workers skip the blocks that are not theirs without decoding them. A streamed dataset is
    therefore read (not decoded) once per worker: download big Hub datasets first for multi-node runs.

    Args:
        name: Hub dataset id or local path.
        split: split to read.
        image_column: column holding the images (an `Image` feature, or paths as strings).
        id_column: column whose values identify each image in the output; default: "index", the position in the split.
        config: dataset configuration name.
        block_size: images per block.

    Example:
        >>> source = DatasetSource("owner/camera-traps", split="test", id_column="uuid")  # doctest: +SKIP
    """

    def __init__(self, name: str, split: str = "train", image_column: str = "image", id_column: str | None = None,
                 config: str | None = None, block_size: int = 1024):  # fmt: skip
        if block_size < 1:
            raise ValueError(f"block size must be >= 1, got {block_size}")
        self.name, self.split, self.config = str(name), split, config
        self.image_column, self.id_column, self.block_size = image_column, id_column, block_size
        self.key_column = id_column or "index"
        self.errors: list[dict[str, str]] = []
        self._dataset = self._open()
        self._on_disk = hasattr(self._dataset, "__getitems__")  # a map-style `Dataset`: blocks by position

    def _open(self) -> Any:
        import datasets

        local = Path(self.name)
        if (local / "dataset_info.json").is_file() or (local / "state.json").is_file() or (local / "dataset_dict.json").is_file():
            dataset = datasets.load_from_disk(str(local))
            if isinstance(dataset, datasets.DatasetDict):
                if self.split not in dataset:
                    raise ValueError(f"dataset {self.name} has no split {self.split!r}; its splits: {', '.join(dataset)}")
                dataset = dataset[self.split]
        else:
            dataset = _stream(self.name, self.config, self.split)
        return self._prepare(dataset)

    def _prepare(self, dataset: Any) -> Any:
        import datasets

        features = dataset.features
        if features is None:  # some streamed formats only know their columns after a first look
            features = dataset._resolve_features().features
        columns = list(features)
        for role, column in (("image", self.image_column), ("id", self.id_column)):
            if column is not None and column not in columns:
                raise ValueError(f"dataset {self.name} has no {role} column {column!r}; its columns: {', '.join(columns)}"
                                 f" (use --{role}-column)")  # fmt: skip
        feature = features[self.image_column]
        if isinstance(feature, datasets.Image):
            dataset = dataset.cast_column(self.image_column, datasets.Image(decode=False))
        elif not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
            raise ValueError(f"column {self.image_column!r} of {self.name} holds {feature}, not images "
                             f"(image columns: {', '.join(c for c in columns if isinstance(features[c], datasets.Image)) or 'none'})")  # fmt: skip
        keep = [self.image_column] + ([self.id_column] if self.id_column else [])
        return dataset.select_columns(keep).with_format("arrow")

    def __len__(self) -> int:
        if not self._on_disk:
            raise TypeError(f"the length of streamed dataset {self.name} is unknown")
        return len(self._dataset)

    @property
    def num_blocks(self) -> int | None:
        """Known for datasets on disk; None for streamed ones (found by reading to the end)."""
        return -(-len(self) // self.block_size) if self._on_disk else None

    def fingerprint(self) -> dict[str, Any]:
        rows = len(self) if self._on_disk else None
        return {"kind": "dataset", "name": self.name, "config": self.config, "split": self.split,
                "image_column": self.image_column, "id_column": self.id_column, "rows": rows}  # fmt: skip

    def describe(self) -> str:
        return f"dataset {self.name} ({self.split})"

    def iter_blocks(self, wanted: Callable[[int], bool]) -> Iterator[Block]:
        """The blocks whose index satisfies `wanted` (called once per block, in order), in order; the others are
        read as Arrow tables and dropped undecoded. `IterableDataset.iter` does not split shards between DataLoader
        workers (iterating the dataset itself would), so every worker sees every block."""
        if self._on_disk:  # read only our blocks
            tables = ((index, lambda index=index: self._dataset[index * self.block_size : (index + 1) * self.block_size])
                      for index in range(self.num_blocks or 0))  # fmt: skip
        else:
            tables = ((index, lambda table=table: table)
                      for index, table in enumerate(self._dataset.iter(batch_size=self.block_size)))  # fmt: skip
        import pyarrow as pa

        for index, read in tables:
            if wanted(index):
                yield self._block(index, read())
            # Arrow's allocator keeps freed buffers for reuse; over a long stream that grows with the data read.
            pa.default_memory_pool().release_unused()

    def _block(self, index: int, table: Any) -> Block:
        payloads = table.column(self.image_column).to_pylist()
        if self.id_column:
            keys = table.column(self.id_column).to_pylist()
        else:
            keys = list(range(index * self.block_size, index * self.block_size + table.num_rows))
        return Block(index, keys, payloads)


def _stream(name: str, config: str | None, split: str) -> Any:
    """`load_dataset(..., streaming=True)`; Parquet data (Hub image datasets) is read without pre-buffering.

    Arrow pre-buffers a Parquet file's row groups and keeps them until the file is done, so every decoding worker
    (each reads the whole stream) would hold up to a whole shard of image bytes; without it a reader holds one
    row group. Other builders have no such option and are streamed as they are.
    """
    import datasets
    import pyarrow.dataset as pads

    options = pads.ParquetFragmentScanOptions(pre_buffer=False)
    try:
        return datasets.load_dataset(name, config, split=split, streaming=True, fragment_scan_options=options)
    except ValueError as err:
        if "fragment_scan_options" not in str(err):
            raise
    return datasets.load_dataset(name, config, split=split, streaming=True)
