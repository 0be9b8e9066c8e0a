"""The released BioCLIP models and their Tree-of-Life indexes: one table, and how their revisions resolve.

`MODELS` is the single source of truth for what `bioclip-hf list-models` prints, which index a model predicts
with, which architecture preset it has and which revision is loaded. A revision is pinned only where a full commit
hash is publicly confirmed; every other entry follows `main`, and the commit actually obtained is read back from
the Hugging Face cache (`resolved_commit`), so every run can say exactly which weights and index it used.

Any other open_clip (`hf-hub:` prefix accepted) or transformers CLIP checkpoint still loads for custom labels,
few-shot and embeddings; only Tree-of-Life prediction needs an entry here (or an index of your own). The index
files are downloaded by `hub.index_files.resolve_index_files` and read by `TreeOfLifeIndex.from_registry`.

Standard library only at import time: the CLI lists models without importing torch.

Example:
    >>> get_entry("hf-hub:imageomics/bioclip-2").index.repo_id
    'imageomics/TreeOfLife-200M'
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HF_HUB_PREFIX = "hf-hub:"
DEFAULT_MODEL = "imageomics/bioclip-2"  # pybioclip's default since 2.0
_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class IndexFiles:
    """One `[D, N]` text-embedding matrix (`.npy`) and its N names (`.json`) inside a dataset repo."""

    embeddings: str
    names: str

    @classmethod
    def named(cls, stem: str) -> IndexFiles:
        return cls(f"embeddings/{stem}.npy", f"embeddings/{stem}.json")


@dataclass(frozen=True)
class IndexSource:
    """Where a model's released Tree-of-Life index lives: dataset repo, candidate files (first present wins)."""

    repo_id: str
    files: tuple[IndexFiles, ...]
    revision: str | None = None  # None: `main`, recorded as the commit obtained


@dataclass(frozen=True)
class ModelEntry:
    """One released model: Hub repo, pinned revision (or None = `main`), architecture and its index."""

    repo_id: str
    architecture: str  # open_clip model name
    preset: str  # key of `BIOCLIP_PRESETS`
    embed_dim: int
    revision: str | None = None
    index: IndexSource | None = None
    note: str = ""
    # How the release was trained: "amp_fp16", "amp_bf16", "pure_bf16", "float32" or "unknown" (treated as mixed);
    # `--dtype auto` runs bf16 on CPUs with native bf16 only where this allows it (models/precision.py).
    training_precision: str = "unknown"


SPECIES_FILES = IndexFiles.named("txt_emb_species")  # pybioclip's layout; each index repo's default model
MODELS: tuple[ModelEntry, ...] = (
    ModelEntry("imageomics/bioclip", "ViT-B-16", "bioclip", 512,
               index=IndexSource("imageomics/TreeOfLife-10M", (IndexFiles.named("txt_emb_bioclip"), SPECIES_FILES)),
               note="BioCLIP (CVPR 2024); being retrained on corrected labels, so its commit is recorded per run",
               training_precision="amp_fp16"),  # recipe: fp16 AMP
    # 2957b322...: the commit third-party exporters pin (the only publicly confirmed full hash of these repos).
    ModelEntry("imageomics/bioclip-2", "ViT-L-14", "bioclip-2", 768, "2957b322090f9cb17ae72c71981c7218a28d81e0",
               index=IndexSource("imageomics/TreeOfLife-200M", (IndexFiles.named("txt_emb_bioclip-2"), SPECIES_FILES)),
               note="BioCLIP 2; the default model, as in pybioclip", training_precision="pure_bf16"),  # --precision pure_bf16
    ModelEntry("imageomics/bioclip-2.5-vith14", "ViT-H-14", "bioclip-2.5", 1024,
               index=IndexSource("imageomics/TreeOfLife-200M", (IndexFiles.named("txt_emb_bioclip-2.5-vith14"),)),
               note="BioCLIP 2.5 Huge, the strongest released checkpoint"),
    # BioCAP's own embeddings follow pybioclip's model-named convention (pybioclip PR #171); BioCLIP's
    # txt_emb_species would be the wrong model's text space, so there is deliberately no fallback.
    ModelEntry("imageomics/biocap", "ViT-B-16", "bioclip", 512,
               index=IndexSource("imageomics/TreeOfLife-10M", (IndexFiles.named("txt_emb_biocap"),)),
               note="caption-trained BioCLIP variant"),
    ModelEntry("imageomics/bioclip-vit-b-16-inat-only", "ViT-B-16", "bioclip", 512,
               note="iNat21-only baseline; no Tree-of-Life index (use --labels, --few-shot or build-index)"),
)  # fmt: skip
_BY_ID = {entry.repo_id: entry for entry in MODELS}


class UnknownModelError(ValueError):
    """Tree-of-Life prediction asked for a model the registry does not know."""


class NoIndexError(ValueError):
    """The model is known but has no released Tree-of-Life index."""


class RevisionNotCachedError(OSError):
    """A pinned commit is not in the local Hugging Face cache while downloads are disabled."""


def normalize_model_id(name: str | os.PathLike) -> str:
    """`hf-hub:org/name/` -> `org/name` (open_clip/pybioclip spelling accepted); paths are kept as given."""
    text = str(name)
    return text[len(HF_HUB_PREFIX) :].rstrip("/") if text.startswith(HF_HUB_PREFIX) else text


def get_entry(name: str | os.PathLike) -> ModelEntry | None:
    """The registry entry of a model id (with or without `hf-hub:`), or None."""
    return _BY_ID.get(normalize_model_id(name).rstrip("/"))


def known_model_ids() -> list[str]:
    return [entry.repo_id for entry in MODELS]


def is_local(name: str | os.PathLike) -> bool:
    """True when `name` is an existing local path (it then wins over a Hub id of the same spelling)."""
    return Path(normalize_model_id(name)).expanduser().exists()


def model_revision(name: str | os.PathLike, revision: str | None = None) -> str | None:
    """The revision to load: an explicit `revision`, else the registry pin, else None (`main`)."""
    if revision:
        if is_local(name):
            raise ValueError(f"a revision applies to Hub repos only; {normalize_model_id(name)} is a local path")
        return revision
    entry = None if is_local(name) else get_entry(name)
    return entry.revision if entry else None


def requested_model_name(
    model_name_or_path: str | None, model_str: str | None = None, pretrained_str: str | None = None
) -> str | None:
    """The model asked for, under our name or pybioclip's (`model_str`, `hf-hub:` prefix removed)."""
    if pretrained_str is not None:
        raise ValueError("open_clip pretrained tags (pretrained_str) are not supported; pass a Hub id or folder as the model")
    if model_name_or_path and model_str and normalize_model_id(model_name_or_path) != normalize_model_id(model_str):
        raise ValueError(f"model_name_or_path={model_name_or_path!r} and model_str={model_str!r} disagree; pass one")
    name = model_name_or_path or model_str
    return normalize_model_id(name) if name else None


def index_source(name: str | os.PathLike) -> IndexSource:
    """The released Tree-of-Life index of a model, or a one-line error saying what to do instead."""
    entry = None if is_local(name) else get_entry(name)
    if entry is None:
        raise UnknownModelError(
            f"no Tree-of-Life index is known for model {normalize_model_id(name)!r}; known models: "
            f"{', '.join(known_model_ids())} (or pass --index from build-index, or use --labels)"
        )
    if entry.index is None:
        raise NoIndexError(f"{entry.repo_id} has no Tree-of-Life index; use --labels/--few-shot, or build one with "
                           "`bioclip-hf build-index taxa.csv --model ...` and pass --index")  # fmt: skip
    return entry.index


def default_index_repo(model_name_or_path: str) -> str:
    """The Hub dataset holding a model's released Tree-of-Life embeddings (see `index_source`)."""
    return index_source(model_name_or_path).repo_id


# -- revisions and commits ------------------------------------------------------------------------------------------
def snapshot_commit(path: str | os.PathLike | None) -> str | None:
    """The commit of a file inside the HF cache (`.../snapshots/<commit>/...`), or None for other paths."""
    if not path:
        return None
    for part in reversed(Path(path).parents):
        if part.parent.name == "snapshots" and _COMMIT.fullmatch(part.name):
            return part.name
    return None


def resolved_commit(repo_id: str, revision: str | None, filenames: tuple[str, ...], repo_type: str = "model") -> str | None:
    """The commit the HF cache holds for `repo_id` at `revision` (read from its snapshot; no network)."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        path = try_to_load_from_cache(repo_id, filename, revision=revision, repo_type=repo_type)
        if isinstance(path, str):
            return snapshot_commit(path)
    return None


def check_revision_cached(repo_id: str, revision: str | None, repo_type: str = "model", cache_dir: str | None = None) -> None:
    """Offline (HF_HUB_OFFLINE=1), a pinned commit must be in the cache: say so in one line if it is not."""
    import huggingface_hub.constants as constants

    if not revision or not _COMMIT.fullmatch(revision) or not constants.HF_HUB_OFFLINE:
        return
    cache = cache_dir or constants.HF_HUB_CACHE
    repo_dir = Path(cache) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    if (repo_dir / "snapshots" / revision).is_dir():
        return
    cached = sorted(p.name for p in (repo_dir / "snapshots").glob("*")) if repo_dir.is_dir() else []
    hint = f"; cached commits: {', '.join(cached[:3])} (pass one as the revision to use it)" if cached else ""
    raise RevisionNotCachedError(f"{repo_id} at commit {revision} is not in the offline Hugging Face cache "
                                 f"({cache}) and HF_HUB_OFFLINE=1 forbids downloading it{hint}")  # fmt: skip


def model_provenance(name: str | os.PathLike, revision: str | None) -> dict[str, Any]:
    """Model id, requested revision and the commit obtained (from the cache), or the absolute local path."""
    model_id = normalize_model_id(name)
    if is_local(model_id):
        return {"id": model_id, "path": str(Path(model_id).expanduser().resolve()), "revision": None, "commit": None}
    commit = resolved_commit(model_id, revision, ("open_clip_config.json", "config.json"))
    return {"id": model_id, "revision": revision, "commit": commit}


def _stem(files: IndexFiles) -> str:
    return files.embeddings.rsplit(".", 1)[0]


def registry_rows() -> list[dict[str, Any]]:
    """One flat dict per model, as `bioclip-hf list-models` prints them."""
    rows = []
    for entry in MODELS:
        index = entry.index
        rows.append({
            "model": entry.repo_id,
            "default": "yes" if entry.repo_id == DEFAULT_MODEL else "",
            "revision": entry.revision or "main (unpinned)",
            "architecture": entry.architecture,
            "preset": entry.preset,
            "embed_dim": entry.embed_dim,
            "index_repo": index.repo_id if index else "",
            "index_files": " else ".join(_stem(f) + ".{npy,json}" for f in index.files) if index else "",
            "index_revision": (index.revision or "main (unpinned)") if index else "",
        })
    return rows
