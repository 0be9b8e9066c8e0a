"""The one way files reach the Hub: create the repo if needed, then upload everything in a single commit.

Every publisher in the project calls `upload`: `bioclip-hf push` (a staged model folder), training's
`push_to_hub` (the saved model folder), batch runs' `--push-to-hub` (Parquet parts + card, stale parts removed in
the same commit) and `dataset_scripts/push_dataset.py` (shards + card). huggingface_hub reads `HF_ENDPOINT` and
`HF_TOKEN` (or the token saved by `hf auth login`) as usual. Failures are one line naming the repo.

Example:
    >>> upload("me/bioclip-ft", folder="out/model", commit_message="Upload model").commit_url  # doctest: +SKIP
    'https://huggingface.co/me/bioclip-ft/commit/...'
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REPO_TYPES = ("model", "dataset", "space")


class HubUploadError(OSError):
    """Creating the repo or committing to it failed (network, auth, rejected commit); the message names the repo."""


def upload(repo_id: str, *, commit_message: str, folder: str | os.PathLike | None = None,
           files: Mapping[str, str | os.PathLike | bytes] | None = None, repo_type: str = "model",
           private: bool = False, revision: str | None = None, allow_patterns: Sequence[str] | None = None,
           delete_patterns: Sequence[str] = (), token: str | None = None) -> Any:  # fmt: skip
    """Create `repo_id` (kept if it exists) and upload `folder` or `files` to it in one commit.

    Args:
        repo_id: "owner/name".
        commit_message: summary of the commit.
        folder: upload this folder's files (those matching `allow_patterns`, all by default) ...
        files: ... or these: path in the repo -> local file or bytes. Exactly one of `folder` / `files`.
        repo_type: "model", "dataset" or "space".
        private: create the repo as private (an existing repo keeps its visibility).
        revision: branch to commit to (default: main); it must exist.
        allow_patterns: glob patterns selecting files of `folder`.
        delete_patterns: files already in the repo that match one of these globs and are not part of this upload
            are deleted in the same commit (e.g. `["data/*"]` drops parts of an earlier, larger upload).
        token: Hub token (default: `HF_TOKEN` or the saved login).

    Returns:
        The `huggingface_hub.CommitInfo` (`.commit_url`, `.oid`, `.repo_url`).

    Raises:
        ValueError: bad arguments; FileNotFoundError: missing local files; HubUploadError: the Hub said no.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, HTTPError

    local = _check_arguments(repo_id, repo_type, folder, files)
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        if folder is not None:
            commit = api.upload_folder(repo_id=url.repo_id, folder_path=str(folder), repo_type=repo_type,
                                       revision=revision, commit_message=commit_message,
                                       allow_patterns=list(allow_patterns) if allow_patterns else None,
                                       delete_patterns=list(delete_patterns) or None)  # fmt: skip
        else:
            operations = _file_operations(api, url.repo_id, repo_type, revision, local, delete_patterns)
            commit = api.create_commit(url.repo_id, operations, repo_type=repo_type, revision=revision,
                                       commit_message=commit_message)  # fmt: skip
    except HFValidationError as err:
        raise ValueError(f"{repo_type} repo {repo_id!r}: {_one_line(str(err))}") from None
    except HfHubHTTPError as err:
        reason = _one_line(err.server_message or str(err))
        raise HubUploadError(f"upload to {repo_type} repo {repo_id} failed: {reason}") from None
    except (HTTPError, OSError) as err:  # the HTTP client's network errors; offline mode
        reason = _one_line(str(err)) or type(err).__name__
        raise HubUploadError(f"upload to {repo_type} repo {repo_id} failed: {reason}") from None
    logger.info("uploaded to %s repo %s: %s", repo_type, repo_id, commit.commit_url)
    return commit


def _check_arguments(repo_id: str, repo_type: str, folder: str | os.PathLike | None,
                     files: Mapping[str, str | os.PathLike | bytes] | None) -> dict[str, Path | bytes]:  # fmt: skip
    """Validate the arguments before any request; returns `files` with local paths as `Path`s."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"Hub repo id must look like 'owner/name', got {repo_id!r}")
    if repo_type not in REPO_TYPES:
        raise ValueError(f"repo type must be one of {', '.join(REPO_TYPES)}, got {repo_type!r}")
    if (folder is None) == (files is None):
        given = "both" if folder is not None else "neither"
        raise ValueError(f"upload to {repo_id}: give a folder or files, not {given}")
    if folder is not None:
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"upload to {repo_id}: folder not found: {folder}")
        return {}
    local = {name: data if isinstance(data, bytes) else Path(data) for name, data in files.items()}
    missing = [str(path) for path in local.values() if isinstance(path, Path) and not path.is_file()]
    if missing:
        raise FileNotFoundError(f"upload to {repo_id}: file(s) not found: {', '.join(missing[:5])}")
    return local


def _file_operations(api: Any, repo_id: str, repo_type: str, revision: str | None, files: dict[str, Path | bytes],
                     delete_patterns: Sequence[str]) -> list[Any]:  # fmt: skip
    """Commit operations: add every file, delete the repo's files that match `delete_patterns` and are not added."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    operations: list[Any] = [CommitOperationAdd(name, data if isinstance(data, bytes) else str(data))
                             for name, data in files.items()]  # fmt: skip
    if delete_patterns:
        existing = api.list_repo_files(repo_id, repo_type=repo_type, revision=revision)
        operations += [CommitOperationDelete(name) for name in existing if name not in files
                       and any(fnmatch.fnmatchcase(name, pattern) for pattern in delete_patterns)]  # fmt: skip
    return operations


def _one_line(message: str) -> str:
    """The first non-empty line of an error message (Hub errors carry the URL and server text on later lines)."""
    return next((line.strip() for line in message.splitlines() if line.strip()), "")
