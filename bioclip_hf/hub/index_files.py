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


# A model that carries its own label index (a `bioclip-hf finetune` output): a `TreeOfLifeIndex.save` folder beside the
# weights, in a local folder or a Hub model repo. Predict and the Space use it when no index is given.
BUNDLED_INDEX_DIR = "label_index"
BUNDLED_INDEX_FILES = ("embeddings.safetensors", "taxa.parquet", "index.json")


def bundled_index(model: str, revision: str | None = None) -> str | None:
    """The local folder of the label index `model` carries (`label_index/`), downloading it from a Hub repo; None when
    the model has none (registry models never do: they use their released index).

    Args:
        model: a model folder or Hub repo id (`hf-hub:` accepted).
        revision: branch, tag or commit of the Hub repo (the model's own).

    Example:
        >>> bundled_index("runs/my-finetune")  # doctest: +SKIP
        'runs/my-finetune/label_index'
    """
    from pathlib import Path

    from bioclip_hf.hub.access import is_repo_id
    from bioclip_hf.hub.registry import get_entry, is_local, normalize_model_id

    name = normalize_model_id(model)
    if is_local(name):
        folder = Path(name).expanduser() / BUNDLED_INDEX_DIR
        return str(folder) if (folder / BUNDLED_INDEX_FILES[0]).is_file() else None
    if get_entry(name) is not None or not is_repo_id(name):
        return None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    from bioclip_hf.hub.access import HubUnavailableError, hub_download_kwargs

    try:
        hub = hub_download_kwargs(name, revision=revision)
        paths = [hf_hub_download(name, f"{BUNDLED_INDEX_DIR}/{file}", revision=revision, **hub)
                 for file in BUNDLED_INDEX_FILES]  # fmt: skip
    # Not there (or not reachable): the caller goes on to the registry, whose error names the alternatives.
    except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError, HubUnavailableError, FileNotFoundError) as err:
        logger.info("%s carries no label index (%s)", name, type(err).__name__)
        return None
    return str(Path(paths[0]).parent)


__all__ = ["BUNDLED_INDEX_DIR", "BUNDLED_INDEX_FILES", "DEFAULT_CANDIDATES", "ResolvedIndex", "bundled_index",
           "index_files", "resolve_index_files"]  # fmt: skip
