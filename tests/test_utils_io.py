"""Atomic outputs: a reader sees the old file or the whole new one; a failed write leaves nothing behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bioclip_hf.utils.io import atomic_open, atomic_path, atomic_write_bytes


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="the umask is read from /proc (Linux)")
def test_atomic_open_replaces_only_on_success_with_the_umask_mode(tmp_path):
    target = tmp_path / "deep" / "out.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write(b"half of the new")
        raise RuntimeError("the writer failed")
    assert target.read_bytes() == b"old" and os.listdir(target.parent) == ["out.bin"]  # no temporary file left
    old_umask = os.umask(0o027)
    try:
        with atomic_open(target) as fh:
            fh.write(b"new")
        with atomic_path(tmp_path / "streamed.csv") as tmp:  # the path form (outputs written by other libraries)
            tmp.write_text("file,score\n")
    finally:
        os.umask(old_umask)
    # A shared cache must be readable as `open()` would make it (0o666 less the umask), not mkstemp's 0o600.
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "streamed.csv").stat().st_mode) == 0o640
