"""Small I/O helpers: atomic file and folder writes so a crash never leaves half-written output."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a scratch folder next to `target`; on success its files replace those in `target`.

    Each file is moved with `os.replace` (atomic on POSIX), after the whole folder was written,
    so readers see either the old or the new version of every file, never a partial one.

    Example:
        >>> with atomic_directory("out") as tmp:  # doctest: +SKIP
        ...     (tmp / "a.json").write_text("{}")
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield scratch
        target.mkdir(parents=True, exist_ok=True)
        for src in sorted(scratch.rglob("*")):
            dst = target / src.relative_to(scratch)
            if src.is_dir():
                dst.mkdir(parents=True, exist_ok=True)
            else:
                os.replace(src, dst)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _new_file_mode() -> int:
    """The mode `open()` gives a new file: 0o666 less the umask (read from /proc: setting it is not thread-safe)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    return 0o644


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path` to write (streamed, any size); on success it is fsynced and renamed
    to `path`, on error removed, so `path` is never half-written.

    Example:
        >>> with atomic_path("predictions.csv") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("file,score\n")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fchmod(fh.fileno(), _new_file_mode())  # mkstemp's 0600 would hide outputs and shared caches from others
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces `path` (fsync + rename) only when the block ends without an error.

    Readers see the old file or the whole new one, never a partial one; two writers racing each leave a
    complete file (the last rename wins). For outputs too large to hold in memory as one `bytes`.

    Example:
        >>> with atomic_open("big.bin") as fh:  # doctest: +SKIP
        ...     fh.write(array.data)
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        yield fh
        fh.flush()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file + fsync + rename."""
    with atomic_open(path) as fh:
        fh.write(data)


def cache_root() -> Path:
    """bioclip-hf's own cache folder: `$BIOCLIP_HF_CACHE`, else `$XDG_CACHE_HOME/bioclip_hf` (`~/.cache/bioclip_hf`).

    Every derived cache lives under it (index copies, label embeddings, quantized weights, eval features), so one
    variable moves or clears them all.

    Example:
        >>> cache_root().name  # doctest: +SKIP
        'bioclip_hf'
    """
    configured = os.environ.get("BIOCLIP_HF_CACHE")
    return Path(configured) if configured else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bioclip_hf"
