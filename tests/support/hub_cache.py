"""The fake HF cache: repos laid out exactly as `huggingface_hub` downloads them, for offline tests and benchmarks.

`<cache>/<type>s--<org>--<name>/` holds `blobs/<sha256>`, `snapshots/<commit>/<path>` (relative symlinks to the
blobs) and `refs/<branch>` (the commit the branch points to). `cache` is `HF_HUB_CACHE` (`$HF_HOME/hub`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

DEFAULT_COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


def commit_of(tag: str) -> str:
    """A distinct, valid-looking 40-hex commit id per tag (tests only; never a real Hub commit)."""
    return hashlib.sha1(tag.encode()).hexdigest()


def repo_folder(cache: Path, repo_id: str, repo_type: str = "model") -> Path:
    """`<cache>/<type>s--<org>--<name>`, the folder of one repo in the cache."""
    return Path(cache) / f"{repo_type}s--{repo_id.replace('/', '--')}"


def hub_cache_snapshot(
    cache: Path, repo_id: str, repo_type: str = "model", commit: str = DEFAULT_COMMIT, ref: str | None = "main"
) -> Path:
    """Create `<type>s--org--name/{refs/<ref>, snapshots/<commit>/}` as huggingface_hub's cache does; return the
    snapshot. Several commits of one repo may be added; `ref=None` adds a snapshot that no branch points to."""
    repo = repo_folder(cache, repo_id, repo_type)
    if ref is not None:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    return snapshot


def _sha256(source: Path | bytes) -> str:
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    digest = hashlib.sha256()
    with open(source, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def write_hub_cache(cache: Path, repo_id: str, files: dict[str, Path | bytes], repo_type: str = "model",
                    commit: str = DEFAULT_COMMIT, ref: str | None = "main", move: bool = False) -> Path:  # fmt: skip
    """Lay `files` ({path in repo: source file or content}) out exactly like huggingface_hub's cache: blobs named by
    content hash, `snapshots/<commit>/<path>` symlinks to them, `refs/<ref>`; return the snapshot.

    `move=True` moves source files into the blobs instead of copying them (large files written beside the cache)."""
    snapshot = hub_cache_snapshot(cache, repo_id, repo_type, commit, ref)
    blobs = snapshot.parent.parent / "blobs"
    blobs.mkdir(exist_ok=True)
    for name, source in files.items():
        blob = blobs / _sha256(source)
        if isinstance(source, bytes):
            if not blob.exists():
                blob.write_bytes(source)
        elif move:
            os.replace(source, blob)
        elif not blob.exists():
            shutil.copyfile(source, blob)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    return snapshot
