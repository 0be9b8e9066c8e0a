"""Decode and preprocess images in DataLoader worker processes, batch by batch, in input order.

PIL decoding and resizing hold the GIL for part of their work, so threads cannot keep an accelerator fed;
worker processes can. Each batch comes back as one stacked float32 tensor (through shared memory, pinned when the
model runs on CUDA) plus the positions of the images that were unreadable, so a corrupt file never stops a run.

Example:
    >>> loader = image_loader(["a.jpg", "b.png"], processor.image_processor.transform, batch_size=2)  # doctest: +SKIP
    >>> for batch in loader:  # doctest: +SKIP
    ...     batch["pixels"].shape, batch["positions"], batch["errors"]
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from bioclip_hf.models.bioclip.image_decoding import decode_image

# What a broken payload raises: decode_image (ValueError, FileNotFoundError, TypeError) or the transform (PIL's
# OSError/SyntaxError on a lazily read image passed in by the caller).
DECODE_ERRORS = (OSError, ValueError, TypeError, SyntaxError)


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def collect_images(inputs: Any, recursive: bool = True) -> tuple[list[Any], list[dict[str, str]]]:
    """Expand `inputs` (paths, folders, globs, PIL images, arrays) into a flat list; missing paths become errors.

    Folders are searched (recursively by default) for files with `IMAGE_EXTENSIONS`, in sorted order; explicit
    files are kept whatever their extension. A path that does not exist but holds `*`, `?` or `[` is a glob
    (`**` spans folders), expanded in sorted order, e.g. "photos/**/*.jpg" (quote it so the shell leaves it alone).

    Example:
        >>> images, errors = collect_images(["photos/", "extra.jpg"])  # doctest: +SKIP
    """
    if isinstance(inputs, (str, os.PathLike)) or not isinstance(inputs, Iterable) or hasattr(inputs, "shape"):
        inputs = [inputs]
    images: list[Any] = []
    errors: list[dict[str, str]] = []
    for item in inputs:
        if not isinstance(item, (str, os.PathLike)):
            images.append(item)
            continue
        path = Path(item)
        if path.is_dir():
            pattern = path.rglob("*") if recursive else path.glob("*")
            images.extend(str(p) for p in sorted(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        elif path.is_file():
            images.append(item if isinstance(item, str) else str(path))  # the user's spelling ("./a.jpg") is the key
        elif any(char in str(item) for char in "*?[") and (matches := sorted(glob.glob(str(item), recursive=True))):
            images.extend(match for match in matches if Path(match).is_file())
        else:
            errors.append({"file": str(path), "error": f"image not found: {path}"})
    return images, errors


def image_key(image: Any, position: int) -> str:
    """The "file" value of a record: the path, or `<image N>` for in-memory images."""
    return str(image) if isinstance(image, (str, os.PathLike)) else f"<image {position}>"


def safe_transform(transform: Callable[[Any], Any], payload: Any) -> Any:
    """`transform` of the decoded `payload`, or the exception when the image cannot be read.

    Payloads are anything `decode_image` takes: file paths, PIL images, uint8 arrays, or the `{"bytes": ..., "path":
    ...}` dicts that a `datasets` `Image(decode=False)` column yields (decoded here, in the worker, rather than in the
    reading process).
    """
    try:
        return transform(decode_image(payload))
    except DECODE_ERRORS as err:
        return err


def decode_batch(transform: Callable[[Any], Any], payloads: Sequence[Any]) -> dict[str, Any]:
    """Decode `payloads`; returns {"pixels": `[n_ok, 3, H, W]` float32 tensor or None, "ok": positions (into
    `payloads`) of the readable images, "errors": [(position, message)], "size": len(payloads)}."""
    import numpy as np

    arrays, ok, errors = [], [], []
    for position, payload in enumerate(payloads):
        result = safe_transform(transform, payload)
        if isinstance(result, BaseException):
            errors.append((position, str(result) or type(result).__name__))
        else:
            arrays.append(result)
            ok.append(position)
    pixels = torch.from_numpy(np.stack(arrays)) if arrays else None
    return {"pixels": pixels, "ok": ok, "errors": errors, "size": len(payloads)}


class _Batches(torch.utils.data.IterableDataset):
    """Consecutive batches of `items`; worker `w` of `W` decodes batches `w, w + W, ...`.

    The DataLoader takes one batch from each worker in turn, so batches come out in input order.
    """

    def __init__(self, items: Sequence[Any], transform: Callable[[Any], Any], batch_size: int):
        self.items, self.transform, self.batch_size = items, transform, batch_size

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for start in range(worker * self.batch_size, len(self.items), workers * self.batch_size):
            batch = decode_batch(self.transform, self.items[start : start + self.batch_size])
            batch["start"] = start
            yield batch


def loader_workers(requested: int, num_batches: int) -> int:
    """Worker processes worth starting: none for a single batch (nothing to overlap), at most one per batch."""
    if num_batches <= 1:
        return 0
    return max(0, min(int(requested), num_batches))


def make_loader(dataset: torch.utils.data.IterableDataset, num_workers: int, pin_memory: bool = False) -> Any:
    """A DataLoader over an iterable of ready-made batch dicts (no re-batching, no collation)."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
        collate_fn=_identity, prefetch_factor=2 if num_workers else None,
        worker_init_fn=_init_decoding_worker if num_workers else None,
    )  # fmt: skip


def _init_decoding_worker(_worker_id: int) -> None:
    """Keep a decoding worker's memory flat over a long stream (every block of a streamed dataset passes through
    every worker): Arrow buffers come from malloc rather than Arrow's pool (mimalloc kept a worker growing by tens of
    KB per image read, even after `release_unused`), and glibc returns large blocks instead of letting its heap
    fragment. Measured with `benchmarks/bench_batch_memory.py`. Set in our worker processes only, never in the
    user's."""
    import pyarrow as pa

    from bioclip_hf.utils.memory import return_large_blocks

    pa.set_memory_pool(pa.system_memory_pool())
    return_large_blocks()


def image_loader(items: Sequence[Any], transform: Callable[[Any], Any], batch_size: int, num_workers: int = 0,
                 pin_memory: bool = False) -> Any:  # fmt: skip
    """Iterate decoded batches of `items` in order (see `decode_batch`; each batch also has "start", the index of
    its first item). Decoding happens in `num_workers` processes (0: in this process).

    Example:
        >>> for batch in image_loader(paths, processor.image_processor.transform, 32, num_workers=4):  # doctest: +SKIP
        ...     features = model.encode_image(batch["pixels"])
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    workers = loader_workers(num_workers, -(-len(items) // batch_size))
    return make_loader(_Batches(items, transform, batch_size), workers, pin_memory)


def _identity(batch: Any) -> Any:
    return batch
