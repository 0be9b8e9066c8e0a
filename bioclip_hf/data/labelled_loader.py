"""Batches of labelled photos for fine-tuning: decoded in worker processes, in a seeded order, resumable mid-epoch.

Batch `b` of epoch `e` holds the examples at `epoch_order(e)[b * B : (b + 1) * B]`, where `epoch_order(e)` is the
permutation drawn by `numpy.random.default_rng([seed, e])` (the identity without shuffling): the same batches on
every platform and for any number of workers, so a run stopped after batch `b` resumes exactly with
`start_batch=b + 1`. Worker `w` of `W` decodes batches `w, w + W, ...`; the DataLoader takes them in turn, so they
come out in order. Streamed examples (no random access) are shuffled through a seeded buffer instead; a resumed
stream skips its first batches without decoding them.

Unreadable images are left out of their batch (it shrinks) and recorded, once per key, in `loader.skipped` and in
the `DataReport` passed as `report=`, as batch runs count skipped images; a batch with no readable image is not
yielded. Images are decoded only by `decode_image`, then preprocessed by the processor's `transform`, or by
`augment(image, rng)` with `rng = random.Random(f"{seed}:{epoch}:{key}:crop")` (the training stream's rule).

Example:
    >>> loader = labelled_loader(data.train, processor.image_processor.transform, 32, shuffle=True, seed=0)  # doctest: +SKIP
    >>> for pixels, label_ids in loader:  # doctest: +SKIP
    ...     ...
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from bioclip_hf.models.bioclip.image_decoding import decode_image

# What a broken image raises: decode_image (ValueError, FileNotFoundError, TypeError) or a transform (PIL's
# OSError/SyntaxError on lazily read data).
DECODE_ERRORS = (OSError, ValueError, TypeError, SyntaxError)


def epoch_order(num_examples: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The order of the examples in `epoch`: a permutation from `default_rng([seed, epoch])`, or the identity.

    Example:
        >>> epoch_order(5, seed=0, epoch=1).tolist() == epoch_order(5, seed=0, epoch=1).tolist()
        True
    """
    if not shuffle:
        return np.arange(num_examples)
    return np.random.default_rng([int(seed), int(epoch)]).permutation(num_examples)


def buffer_shuffle(items: Any, rng: np.random.Generator, size: int) -> Iterator[Any]:
    """Items of an iterable in a seeded, bounded-memory shuffled order (a reservoir of `size` items)."""
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        slot = int(rng.integers(size))
        yield buffer[slot]
        buffer[slot] = item
    for slot in rng.permutation(len(buffer)):
        yield buffer[int(slot)]


def decode_examples(examples: Sequence[Any], transform: Callable[[Any], Any], augment: Callable[..., Any] | None,
                    seed: int, epoch: int) -> tuple[list[np.ndarray], list[int], list[tuple[str, str]]]:  # fmt: skip
    """(pixel arrays, class ids, [(key, reason)] of unreadable images) for `examples`."""
    arrays, label_ids, skipped = [], [], []
    for example in examples:
        try:
            image = decode_image(example.image, name=example.key)
            if augment is not None:
                arrays.append(augment(image, random.Random(f"{seed}:{epoch}:{example.key}:crop")))
            else:
                arrays.append(transform(image))
        except DECODE_ERRORS as err:
            skipped.append((example.key, " ".join(str(err).split()) or type(err).__name__))
            continue
        label_ids.append(int(example.label_id))
    return arrays, label_ids, skipped


class _EpochBatches(torch.utils.data.IterableDataset):
    """The batches of one epoch from `start_batch` on; worker `w` of `W` decodes every W-th batch."""

    def __init__(self, loader: LabelledLoader, epoch: int, start_batch: int):
        self.examples, self.transform, self.augment = loader.examples, loader.transform, loader.augment
        self.options = dict(batch_size=loader.batch_size, seed=loader.seed, shuffle=loader.shuffle,
                            drop_last=loader.drop_last, buffer=loader.shuffle_buffer)  # fmt: skip
        self.epoch, self.start_batch = epoch, start_batch

    def batches(self) -> Iterator[tuple[int, Callable[[], list[Any]]]]:
        """(batch index, a function giving its examples) from `start_batch` on; examples are fetched only when asked."""
        size, seed = self.options["batch_size"], self.options["seed"]
        if isinstance(self.examples, Sequence):
            order = epoch_order(len(self.examples), seed, self.epoch, self.options["shuffle"])
            count = num_batches(len(self.examples), size, self.options["drop_last"])
            for index in range(self.start_batch, count):
                yield index, lambda index=index: [self.examples[int(i)] for i in order[index * size : (index + 1) * size]]
            return
        items = iter(self.examples)
        if self.options["shuffle"]:
            items = buffer_shuffle(items, np.random.default_rng([int(seed), int(self.epoch)]), self.options["buffer"])
        batch: list[Any] = []
        index = 0
        for item in items:
            batch.append(item)
            if len(batch) == size:
                if index >= self.start_batch:
                    yield index, lambda batch=batch: batch
                batch, index = [], index + 1
        if batch and not self.options["drop_last"] and index >= self.start_batch:
            yield index, lambda: batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for index, fetch in self.batches():
            if (index - self.start_batch) % workers != worker:
                continue
            arrays, label_ids, skipped = decode_examples(fetch(), self.transform, self.augment, self.options["seed"],
                                                         self.epoch)  # fmt: skip
            pixels = torch.from_numpy(np.stack(arrays)) if arrays else None
            yield {"index": index, "pixels": pixels, "label_ids": torch.tensor(label_ids, dtype=torch.long),
                   "skipped": skipped}  # fmt: skip


def num_batches(num_examples: int, batch_size: int, drop_last: bool) -> int:
    return num_examples // batch_size if drop_last else -(-num_examples // batch_size)


class LabelledLoader:
    """Iterable of `(pixels [B, 3, H, W] float32, label_ids [B] int64)` over labelled examples; see the module
    docstring for the order, resuming and unreadable images. Build it with `labelled_loader`.

    Attributes:
        epoch: the epoch iterated next (`set_epoch` changes it).
        start_batch: the batch index the next iteration starts at (reset to 0 once an epoch is finished).
        next_batch: index of the batch that comes next: after consuming batch b, b + 1 (save it to resume).
        skipped: unreadable images met so far, key -> reason.
    """

    def __init__(self, examples: Any, transform: Callable[[Any], Any], batch_size: int, *, shuffle: bool, seed: int,
                 num_workers: int = 0, drop_last: bool = False, epoch: int = 0, start_batch: int = 0,
                 augment: Callable[..., Any] | None = None, report: Any = None, pin_memory: bool = False,
                 shuffle_buffer: int = 1000) -> None:  # fmt: skip
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        self.examples, self.transform, self.augment = examples, transform, augment
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, int(seed), drop_last
        self.num_workers, self.pin_memory, self.shuffle_buffer, self.report = num_workers, pin_memory, shuffle_buffer, report
        self.skipped: dict[str, str] = {}
        self.set_epoch(epoch, start_batch)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Iterate `epoch` next, from batch `start_batch`."""
        self.epoch, self.start_batch, self.next_batch = int(epoch), int(start_batch), int(start_batch)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The example order of `epoch` (sequences only)."""
        return epoch_order(len(self.examples), self.seed, epoch, self.shuffle)

    def __len__(self) -> int:
        """Batches in a whole epoch (TypeError for a stream of unknown length)."""
        if isinstance(self.examples, Sequence):
            return num_batches(len(self.examples), self.batch_size, self.drop_last)
        hint = getattr(self.examples, "len_hint", None)
        if hint is None:
            raise TypeError("the number of batches of a stream of unknown length is unknown")
        return num_batches(int(hint), self.batch_size, self.drop_last)

    def _workers(self) -> int:
        try:
            remaining = len(self) - self.start_batch
        except TypeError:
            return max(0, int(self.num_workers))
        return 0 if remaining <= 1 else max(0, min(int(self.num_workers), remaining))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        workers = self._workers()
        loader = torch.utils.data.DataLoader(
            _EpochBatches(self, self.epoch, self.start_batch), batch_size=None, num_workers=workers,
            pin_memory=self.pin_memory, collate_fn=_identity, prefetch_factor=2 if workers else None,
            worker_init_fn=_init_worker if workers else None,
            # its own generator: iterating must not draw from torch's global RNG (dropout's), or a resumed run's
            # random stream would differ from the uninterrupted run's
            generator=torch.Generator(),
        )  # fmt: skip
        for batch in loader:
            self.next_batch = batch["index"] + 1
            if batch["skipped"]:
                new = {key: reason for key, reason in batch["skipped"]}
                self.skipped.update(new)
                if self.report is not None:
                    self.report.add_skipped(new)
            if batch["pixels"] is not None:
                yield batch["pixels"], batch["label_ids"]
        self.start_batch = 0  # the epoch is done: iterating again starts it over


def labelled_loader(examples: Any, transform: Callable[[Any], Any], batch_size: int, *, shuffle: bool, seed: int,
                    num_workers: int = 0, drop_last: bool = False, epoch: int = 0, start_batch: int = 0,
                    augment: Callable[..., Any] | None = None, report: Any = None, pin_memory: bool = False,
                    shuffle_buffer: int = 1000) -> LabelledLoader:  # fmt: skip
    """A `LabelledLoader` over `examples` (`LabelledData.train` / `.val`).

    Args:
        examples: a sequence of `LabelledExample`s, or an iterable of them (a stream; shuffled through a buffer).
        transform: `processor.image_processor.transform` (image -> `(3, S, S)` float32 array).
        batch_size: examples per batch (fewer in the last batch unless `drop_last`, and where images are unreadable).
        shuffle: draw a new order each epoch (seeded by `(seed, epoch)`).
        seed: seeds the order and the augmentation.
        num_workers: decoding processes (0: decode in this process).
        drop_last: leave out the last, incomplete batch.
        epoch, start_batch: where to start (resume with the saved epoch and `next_batch`).
        augment: optional `augment(image, rng) -> (3, S, S) array` used instead of `transform`, e.g.
            `functools.partial(bioclip_hf.data.augment.train_transform, processor.image_processor)`.
        report: a `DataReport` whose `skipped` gathers unreadable images.
        pin_memory: pin batches (for CUDA).
        shuffle_buffer: examples held by the shuffle buffer of a stream (sequences are permuted whole).

    Example:
        >>> loader = labelled_loader(data.train, transform, 16, shuffle=True, seed=0, epoch=2, start_batch=5)  # doctest: +SKIP
    """
    return LabelledLoader(examples, transform, batch_size, shuffle=shuffle, seed=seed, num_workers=num_workers,
                          drop_last=drop_last, epoch=epoch, start_batch=start_batch, augment=augment, report=report,
                          pin_memory=pin_memory, shuffle_buffer=shuffle_buffer)  # fmt: skip


def _init_worker(_worker_id: int) -> None:
    """Keep a worker's memory flat over Arrow-backed or streamed data (as batch inference's decoding workers do):
    Arrow buffers from malloc, and large blocks returned to the system."""
    import pyarrow as pa

    from bioclip_hf.utils.memory import return_large_blocks

    pa.set_memory_pool(pa.system_memory_pool())
    return_large_blocks()


def _identity(batch: Any) -> Any:
    return batch


__all__ = ["DECODE_ERRORS", "LabelledLoader", "buffer_shuffle", "decode_examples", "epoch_order", "labelled_loader",
           "num_batches"]  # fmt: skip
