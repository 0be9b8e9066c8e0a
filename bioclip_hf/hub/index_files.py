"""The one download path of released Tree-of-Life index files: candidate file pairs, revision, fast offline failure and
the commit obtained.

`TreeOfLifeIndex.from_hub` and `TreeOfLifeIndex.from_registry` (a registry model's index) both call
`resolve_index_files`, so every index read from the Hub says which repo, revision, commit and files it came from.
Standard library only at import time; huggingface_hub is imported when a download is made.

Example:
    >>> resolved = resolve_index_files("imageomics/TreeOfLife-10M")  # doctest: +SKIP
    >>> resolved.commit, resolved.files.embeddings  # doctest: +SKIP
    ('3d8a...', 'embeddings/txt_emb_species.npy')
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bioclip_hf.hub.registry import SPECIES_FILES, IndexFiles, check_revision_cached, snapshot_commit

logger = logging.getLogger(__name__)

# pybioclip's layout of a Tree-of-Life dataset repo, and the file each released repo's default model predicts with.
DEFAULT_CANDIDATES: tuple[IndexFiles, ...] = (SPECIES_FILES,)


@dataclass(frozen=True)
class ResolvedIndex:
    """Local paths of a downloaded (or cached) released index and where they came from."""

    repo_id: str
    revision: str | None
    commit: str | None
    files: IndexFiles
    embeddings_path: str
    names_path: str

    def provenance(self) -> dict[str, Any]:
        return {"repo_id": self.repo_id, "revision": self.revision, "commit": self.commit,
                "files": [self.files.embeddings, self.files.names]}  # fmt: skip


def index_files(spec: IndexFiles | str) -> IndexFiles:
    """A file pair from an `IndexFiles`, a repo path of the `.npy` (its `.json` beside it) or a bare stem.

    Example:
        >>> index_files("txt_emb_bioclip-2").names
        'embeddings/txt_emb_bioclip-2.json'
    """
    if isinstance(spec, IndexFiles):
        return spec
    text = str(spec).strip()
    if text.endswith(".npy"):
        return IndexFiles(text, text[: -len(".npy")] + ".json")
    if not text or "/" in text or text.endswith(".json"):  # stems may hold dots (txt_emb_bioclip-2.5-vith14)
        raise ValueError(f"index file {spec!r} is neither an .npy path in the repo nor a stem like txt_emb_species")
    return IndexFiles.named(text)


def resolve_index_files(repo_id: str, candidates: Sequence[IndexFiles | str] | None = None, revision: str | None = None,
                        cache_dir: str | None = None) -> ResolvedIndex:  # fmt: skip
    """Download (or find in the cache) the first candidate file pair that the dataset repo holds.

    Args:
        repo_id: the Hub dataset repo.
        candidates: file pairs tried in order (see `index_files`); default `DEFAULT_CANDIDATES`.
        revision: branch, tag or commit (default `main`); a pinned commit missing offline fails in one line.
        cache_dir: HF cache folder (default: huggingface_hub's).
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    from bioclip_hf.hub.access import hub_download_kwargs

    pairs = [index_files(spec) for spec in (candidates if candidates is not None else DEFAULT_CANDIDATES)]
    if not pairs:
        raise ValueError(f"no index files to look for in {repo_id}")
    check_revision_cached(repo_id, revision, "dataset", cache_dir)
    first = (pairs[0].embeddings, pairs[0].names)
    hub = hub_download_kwargs(repo_id, "dataset", revision, cache_dir, first, "a local index (--index DIR)")
    missing: list[str] = []
    for files in pairs:
        try:
            paths = [hf_hub_download(repo_id, name, repo_type="dataset", revision=revision, cache_dir=cache_dir, **hub)
                     for name in (files.embeddings, files.names)]  # fmt: skip
        except EntryNotFoundError as err:  # absent from the repo (or, offline, from the cache): try the next pair
            logger.info("%s: %s not available (%s)", repo_id, files.embeddings, type(err).__name__)
            missing.append(files.embeddings)
            continue
        if missing:
            logger.warning("%s has no %s; using %s", repo_id, " or ".join(missing), files.embeddings)
        return ResolvedIndex(repo_id, revision, snapshot_commit(paths[0]), files, *paths)
    where = f"{repo_id}@{revision}" if revision else repo_id
    raise FileNotFoundError(f"{where} has none of {', '.join(missing)} (in the repo or the offline cache); "
                            "pass --index, or build one with `bioclip-hf build-index`")  # fmt: skip


__all__ = ["DEFAULT_CANDIDATES", "ResolvedIndex", "index_files", "resolve_index_files"]
