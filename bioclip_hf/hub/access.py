"""Fail fast, in one line, when a Hub repo is needed but the Hub cannot be reached and the files are not cached.

Left alone, huggingface_hub retries an unreachable endpoint with exponential back-off for every file it cannot
find locally (about 23 s per file, over a minute for one model), logging each retry. Before a model or index is
loaded from a Hub id, `hub_download_kwargs` asks the endpoint once, with a short timeout, whether it answers:

- it answers: nothing changes (`{}`);
- it does not (or `HF_HUB_OFFLINE=1`) but the repo is in the local cache at that revision:
  `{"local_files_only": True}`, so the cached files are used without any network wait;
- it does not and the repo is not cached: `HubUnavailableError`, one line saying what could not be reached,
  that the repo is not in the cache, and how to proceed.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# The probe only waits for the endpoint's first answer (no download). HF_HUB_ETAG_TIMEOUT, huggingface_hub's own
# limit for such metadata requests, overrides it for slow links.
DEFAULT_PROBE_TIMEOUT_S = 5.0
# One answer serves the model and the index loaded right after it (a dead network costs one timeout, not two).
PROBE_MEMO_S = 30.0
_REPO_ID = re.compile(r"[\w-][\w.-]*(/[\w-][\w.-]*)?")  # "name" or "owner/name"; "./x" is a path
_COMMIT = re.compile(r"[0-9a-f]{40}")
_probe_memo: dict[str, tuple[float, str | None]] = {}


class HubUnavailableError(OSError):
    """The Hugging Face Hub cannot be reached (or offline mode is on) and the requested repo is not cached."""


def is_repo_id(name_or_path: str | os.PathLike) -> bool:
    """Whether `name_or_path` names a Hub repo rather than a local path (existing or not)."""
    text = str(name_or_path)
    return _REPO_ID.fullmatch(text) is not None and not Path(text).exists()


def is_cached(repo_id: str, repo_type: str = "model", revision: str | None = None, cache_dir: str | None = None) -> bool:
    """Whether the HF cache holds a (non-empty) snapshot of `repo_id` at `revision` (a branch, tag or commit).

    Example:
        >>> is_cached("imageomics/bioclip")  # doctest: +SKIP
        True
    """
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    folder = Path(cache_dir or constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type=repo_type)
    revision = revision or "main"
    commit = revision if _COMMIT.fullmatch(revision) else None
    ref = folder / "refs" / revision
    if commit is None and ref.is_file():
        commit = ref.read_text().strip()
    snapshot = folder / "snapshots" / str(commit)
    if commit is None or not snapshot.is_dir():
        return False
    return any(snapshot.iterdir())


def probe_endpoint(endpoint: str | None = None, timeout: float | None = None) -> str | None:
    """`None` when the Hub endpoint answers an HTTP request, otherwise why not (e.g. "Connection refused").

    Any HTTP answer below 500 counts as reachable (a mirror may not serve "/"); the result is remembered for
    `PROBE_MEMO_S` seconds.

    Example:
        >>> probe_endpoint("http://127.0.0.1:9")  # doctest: +SKIP
        '[Errno 111] Connection refused'
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    memo = _probe_memo.get(endpoint)
    if memo is not None and time.monotonic() - memo[0] < PROBE_MEMO_S:
        return memo[1]
    if timeout is None:
        timeout = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or DEFAULT_PROBE_TIMEOUT_S)
    reason: str | None = None
    try:
        response = get_session().head(endpoint + "/", timeout=timeout, follow_redirects=False)
        if response.status_code >= 500:
            reason = f"HTTP {response.status_code}"
    except Exception as err:  # noqa: BLE001  (any transport failure means "not reachable"; details logged)
        reason = str(err).strip() or type(err).__name__
        if "timed out" in reason.lower() or "timeout" in type(err).__name__.lower():
            reason = f"no answer within {timeout:g} s"
        logger.info("Hub endpoint %s is not reachable: %s: %s", endpoint, type(err).__name__, err)
    _probe_memo[endpoint] = (time.monotonic(), reason)
    return reason


def hub_download_kwargs(name_or_path: str | os.PathLike, repo_type: str = "model", revision: str | None = None,
                        cache_dir: str | None = None, download_files: Sequence[str] = (),
                        local_alternative: str = "a local folder") -> dict[str, Any]:  # fmt: skip
    """Extra download kwargs for loading `name_or_path`, or `HubUnavailableError` when it cannot be had.

    Args:
        name_or_path: a Hub repo id (local paths give `{}` at once).
        repo_type: "model" or "dataset".
        revision: branch, tag or commit to check in the cache (default "main").
        cache_dir: HF cache folder (default: huggingface_hub's).
        download_files: the files to suggest downloading (default: the whole repo). Whether the repo counts as
            cached does not depend on them: with a snapshot at `revision` in the cache, the loader runs from the
            cache and names any file it lacks itself.
        local_alternative: what the user can pass instead, for the error message.

    Returns:
        `{}` when the Hub answers, `{"local_files_only": True}` when it does not but the repo is cached.

    Example:
        >>> model = BioCLIPModel.from_pretrained(repo, **hub_download_kwargs(repo))  # doctest: +SKIP
    """
    from huggingface_hub import constants

    if not is_repo_id(name_or_path):
        return {}
    repo_id = str(name_or_path)
    if constants.is_offline_mode():
        problem = "HF_HUB_OFFLINE=1 is set"
    else:
        reason = probe_endpoint()
        if reason is None:
            return {}
        problem = f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} ({reason})"
    if is_cached(repo_id, repo_type, revision, cache_dir):
        logger.info("%s: using the cached copy of %s", problem, repo_id)
        return {"local_files_only": True}
    cache = cache_dir or constants.HF_HUB_CACHE
    download = " ".join(["hf download", repo_id, *download_files] + (["--repo-type", repo_type] if repo_type != "model" else [])
                        + (["--revision", revision] if revision else []))  # fmt: skip
    raise HubUnavailableError(
        f"{problem} and {repo_type} {repo_id} is not in the local cache ({cache}); to proceed, run "
        f"`{download}` where the Hub is reachable and use that cache here with HF_HUB_OFFLINE=1, "
        f"or use {local_alternative}"
    )


__all__ = ["HubUnavailableError", "hub_download_kwargs", "is_cached", "is_repo_id", "probe_endpoint"]
