"""A local, in-memory, Hub-compatible HTTP endpoint for tests (never the real Hub).

It implements the part of the Hugging Face Hub HTTP API that `huggingface_hub`, `transformers` and
`datasets` use to push and read repos, so tests can run the real clients against `HF_ENDPOINT`:

- `POST /api/repos/create`, `POST /api/repos/delete`, `GET /api/whoami-v2`
- `GET /api/{models,datasets,spaces}/{repo}[/revision/{rev}]` (repo_info, with `siblings` and `cardData`)
- `GET /api/{type}s/{repo}/tree/{rev}[/{path}]` (`recursive`, `expand`), `POST .../paths-info/{rev}`
- `GET /api/{type}s/{repo}/refs`, `GET /api/{type}s/{repo}/commits/{rev}`
- `POST .../preupload/{rev}` (binary files -> "lfs", text -> "regular"), `POST .../commit/{rev}` (NDJSON)
- git-LFS basic transfer: `POST /{repo}.git/info/lfs/objects/batch`, `PUT /_lfs/{oid}`, `POST /_lfs/verify`
- `GET|HEAD /{prefix}{repo}/resolve/{rev}/{path}` with `ETag`, `X-Repo-Commit`, `X-Linked-Etag/Size`, `Range`

Xet storage is not implemented: clients must run with `HF_HUB_DISABLE_XET=1` (`hub_environment` does this).

Example:
    >>> with HubServer() as server, hub_environment(server.url):  # doctest: +SKIP
    ...     HfApi().create_repo("me/data", repo_type="dataset")
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

USER = "tester"
_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_REPO = r"(?P<repo>[^/]+/[^/]+)"
_API = re.compile(
    rf"^/api/(?P<type>models|datasets|spaces)/{_REPO}"
    r"(?:/(?P<action>revision|tree|paths-info|preupload|commit|refs|commits)(?:/(?P<rev>[^/]+))?(?:/(?P<path>.*))?)?$"
)
_RESOLVE = re.compile(rf"^/(?P<prefix>datasets/|spaces/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_LFS_BATCH = re.compile(rf"^/(?P<prefix>datasets/|spaces/)?{_REPO}\.git/info/lfs/objects/batch$")
_GITATTRIBUTES = b"*.tar filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


@dataclass
class Blob:
    data: bytes
    lfs: bool

    @property
    def git_oid(self) -> str:  # git blob sha1 (for LFS files: of the pointer, like the Hub)
        content = self.pointer if self.lfs else self.data
        return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n".encode()


@dataclass
class Commit:
    oid: str
    title: str
    files: dict[str, Blob]
    date: str


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    commits: list[Commit] = field(default_factory=list)  # newest last; "main" is the last one

    def resolve(self, revision: str) -> Commit | None:
        revision = unquote(revision)
        if revision in ("main", "refs/heads/main"):
            return self.commits[-1] if self.commits else None
        matches = (c for c in self.commits if c.oid == revision or (len(revision) >= 7 and c.oid.startswith(revision)))
        return next(matches, None)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class HubState:
    """All repos and LFS objects of one server, guarded by a lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) for debugging

    def repo(self, repo_type: str, repo_id: str) -> Repo:
        found = self.repos.get((repo_type, repo_id))
        if found is None:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return found

    def commit(self, repo: Repo, revision: str) -> Commit:
        found = repo.resolve(revision)
        if found is None:
            raise HubError(404, f"Invalid rev id: {unquote(revision)}", "RevisionNotFound")
        return found

    def add_commit(self, repo: Repo, title: str, files: dict[str, Blob]) -> Commit:
        parent = repo.commits[-1].oid if repo.commits else ""
        oid = hashlib.sha1(f"{parent}\n{title}\n{len(repo.commits)}\n{sorted(files)}".encode()).hexdigest()
        commit = Commit(oid, title, files, time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))
        repo.commits.append(commit)
        return commit


def _entry(path: str, blob: Blob, commit: Commit | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "file", "oid": blob.git_oid, "size": len(blob.data), "path": path}
    if blob.lfs:
        entry["lfs"] = {"oid": blob.sha256, "size": len(blob.data), "pointerSize": len(blob.pointer)}
    if commit is not None:
        entry["lastCommit"] = {"id": commit.oid, "title": commit.title, "date": commit.date}
    return entry


def _dir_entry(path: str) -> dict[str, Any]:
    return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}


def _looks_binary(sample: bytes) -> bool:
    return b"\0" in sample


class HubHandler(BaseHTTPRequestHandler):
    """Routes one request; `self.server.state` holds the data, `self.server.url` the public base URL."""

    protocol_version = "HTTP/1.1"
    server: HubHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    # -- plumbing -------------------------------------------------------------------------------------
    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:  # fmt: skip
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        with self.server.state.lock:
            self.server.state.requests.append((self.command, self.path, status))

    def _json(self, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        query = parse_qs(urlsplit(self.path).query)
        try:
            body = self._body() if self.command in ("POST", "PUT") else b""
            with self.server.state.lock:
                self._route(path, query, body)
        except HubError as err:
            headers = {"X-Error-Code": err.code} if err.code else {}
            headers["X-Error-Message"] = str(err)
            self._json({"error": str(err)}, err.status, headers)
        except (ValueError, KeyError, TypeError) as err:
            self._json({"error": f"bad request: {err}"}, 400)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def _route(self, path: str, query: dict[str, list[str]], body: bytes) -> None:
        if path == "/api/whoami-v2":
            return self._json({"type": "user", "name": USER, "fullname": USER, "orgs": [],
                               "auth": {"accessToken": {"role": "write", "displayName": "test"}}})  # fmt: skip
        if path == "/api/agent-harnesses":  # client-side registry lookup; nothing to offer
            return self._json({"standardEnvVars": [], "harnesses": {}})
        if path == "/api/validate-yaml" and self.command == "POST":
            return self._validate_yaml(json.loads(body))
        if path == "/api/repos/create" and self.command == "POST":
            return self._create(json.loads(body or b"{}"))
        if path == "/api/repos/delete" and self.command in ("DELETE", "POST"):
            return self._delete(json.loads(body or b"{}"))
        if path.startswith("/_lfs/"):
            return self._lfs_object(path[len("/_lfs/") :], body)
        match = _LFS_BATCH.match(path)
        if match and self.command == "POST":
            return self._lfs_batch(json.loads(body))
        match = _RESOLVE.match(path)
        if match and self.command in ("GET", "HEAD"):
            repo_type = "dataset" if match["prefix"] == "datasets/" else "space" if match["prefix"] else "model"
            return self._resolve(repo_type, match["repo"], match["rev"], unquote(match["path"]))
        match = _API.match(path)
        if match:
            return self._api(_TYPES[match["type"]], match["repo"], match["action"], match["rev"],
                             unquote(match["path"] or ""), query, body)  # fmt: skip
        raise HubError(404, f"no route for {self.command} {path}")

    def _validate_yaml(self, payload: dict[str, Any]) -> None:
        """Like the Hub: the README's YAML header must parse to a mapping with well-formed `configs`."""
        errors = []
        try:
            card = _card_data(Blob(payload["content"].encode(), lfs=False), strict=True)
        except ValueError as err:
            card, errors = None, [{"message": str(err)}]
        for config in (card or {}).get("configs", []) or []:
            if not isinstance(config, dict) or "config_name" not in config:
                errors.append({"message": f"configs entries need a config_name, got {config!r}"})
        self._json({"errors": errors, "warnings": []}, 400 if errors else 200)

    # -- repos -------------------------------------------------------------------------------------------
    def _create(self, payload: dict[str, Any]) -> None:
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        url = f"{self.server.url}/{_PREFIX[repo_type]}{repo_id}"
        state = self.server.state
        if (repo_type, repo_id) in state.repos:
            return self._json({"error": "You already created this repo", "url": url}, 409)
        repo = state.repos[(repo_type, repo_id)] = Repo(repo_type, repo_id)
        state.add_commit(repo, "initial commit", {".gitattributes": Blob(_GITATTRIBUTES, lfs=False)})
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def _delete(self, payload: dict[str, Any]) -> None:
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        self.server.state.repo(repo_type, repo_id)
        del self.server.state.repos[(repo_type, repo_id)]
        self._json({})

    def _api(self, repo_type: str, repo_id: str, action: str | None, rev: str | None, path: str,
             query: dict[str, list[str]], body: bytes) -> None:  # fmt: skip
        state = self.server.state
        repo = state.repo(repo_type, repo_id)
        if action is None or action == "revision":
            return self._info(repo, state.commit(repo, rev or "main"))
        if action == "refs":
            head = repo.commits[-1].oid
            branch = {"name": "main", "ref": "refs/heads/main", "targetCommit": head}
            return self._json({"branches": [branch], "tags": [], "converts": [], "pullRequests": []})
        if action == "commits":
            commits = repo.commits[: repo.commits.index(state.commit(repo, rev or "main")) + 1]
            return self._json([{"id": c.oid, "title": c.title, "message": c.title, "authors": [{"user": USER}],
                                "date": c.date} for c in reversed(commits)])  # fmt: skip
        if action == "preupload":
            return self._preupload(state.commit(repo, rev or "main"), json.loads(body))
        if action == "commit":
            return self._commit(repo, rev or "main", body)
        commit = state.commit(repo, rev or "main")
        if action == "tree":
            return self._tree(commit, path.strip("/"), query)
        if action == "paths-info":
            return self._paths_info(commit, body)
        raise HubError(404, f"unsupported action {action}")

    def _info(self, repo: Repo, commit: Commit) -> None:
        siblings = []
        for name, blob in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": name, "size": len(blob.data), "blobId": blob.git_oid}
            if blob.lfs:
                sibling["lfs"] = {"size": len(blob.data), "sha256": blob.sha256, "pointerSize": len(blob.pointer)}
            siblings.append(sibling)
        info: dict[str, Any] = {"_id": repo.repo_id, "id": repo.repo_id, "author": repo.repo_id.split("/")[0],
                                "sha": commit.oid, "lastModified": commit.date, "createdAt": repo.commits[0].date,
                                "private": False, "gated": False, "disabled": False, "downloads": 0, "likes": 0,
                                "tags": [], "siblings": siblings}  # fmt: skip
        card = _card_data(commit.files.get("README.md"))
        if card is not None:
            info["cardData"] = card
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
        self._json(info, headers={"X-Repo-Commit": commit.oid})

    # -- reading files ---------------------------------------------------------------------------------------
    def _tree(self, commit: Commit, prefix: str, query: dict[str, list[str]]) -> None:
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        expand = query.get("expand", ["false"])[0].lower() in ("1", "true")
        base = f"{prefix}/" if prefix else ""
        if prefix and prefix in commit.files:
            raise HubError(400, f"{prefix} is a file, not a folder")
        files = {name: blob for name, blob in commit.files.items() if name.startswith(base)}
        if prefix and not files:
            raise HubError(404, f"{prefix} does not exist on main", "EntryNotFound")
        entries, dirs = [], set()
        for name in sorted(files):
            parts = name[len(base) :].split("/")
            for depth in range(1, len(parts)):
                if recursive or depth == 1:
                    dirs.add(base + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                entries.append(_entry(name, files[name], commit if expand else None))
        self._json([_dir_entry(d) for d in sorted(dirs)] + entries)

    def _paths_info(self, commit: Commit, body: bytes) -> None:
        content_type = self.headers.get("Content-Type", "")
        if "json" in content_type:
            payload = json.loads(body)
            paths, expand = payload.get("paths", []), bool(payload.get("expand"))
        else:
            form = parse_qs(body.decode())
            paths, expand = form.get("paths", []), form.get("expand", ["false"])[0].lower() in ("1", "true")
        paths = [paths] if isinstance(paths, str) else paths
        result = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                result.append(_entry(path, commit.files[path], commit if expand else None))
            elif path == "" or any(name.startswith(path + "/") for name in commit.files):
                result.append(_dir_entry(path))
        self._json(result)

    def _resolve(self, repo_type: str, repo_id: str, rev: str, path: str) -> None:
        state = self.server.state
        commit = state.commit(state.repo(repo_type, repo_id), rev)
        blob = commit.files.get(path)
        if blob is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        etag = f'"{blob.sha256 if blob.lfs else blob.git_oid}"'
        headers = {"ETag": etag, "X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
        if blob.lfs:
            headers.update({"X-Linked-Etag": etag, "X-Linked-Size": str(len(blob.data))})
        data, status = blob.data, 200
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if match and (match[1] or match[2]):
            start, end = _byte_range(match[1], match[2], len(data))
            if start >= len(data):
                return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}", **headers})
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        self._send(status, data, headers, content_type="application/octet-stream")

    # -- writing files -----------------------------------------------------------------------------------------
    def _preupload(self, commit: Commit, payload: dict[str, Any]) -> None:
        files = []
        for item in payload["files"]:
            sample = base64.b64decode(item.get("sample", ""))
            lfs = _looks_binary(sample) or int(item.get("size", 0)) > 10 * 1024 * 1024
            existing = commit.files.get(item["path"])
            oid = None
            if existing is not None and existing.lfs == lfs:
                oid = existing.sha256 if lfs else existing.git_oid
            files.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid})  # fmt: skip
        self._json({"files": files, "commitOid": commit.oid})

    def _lfs_batch(self, payload: dict[str, Any]) -> None:
        if payload.get("operation") != "upload":
            raise HubError(400, "only LFS uploads are supported")
        objects = []
        for obj in payload["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.server.state.lfs_objects:
                entry["actions"] = {
                    "upload": {"href": f"{self.server.url}/_lfs/{obj['oid']}"},
                    "verify": {"href": f"{self.server.url}/_lfs/verify"},
                }
            objects.append(entry)
        self._json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _lfs_object(self, name: str, body: bytes) -> None:
        state = self.server.state
        if name == "verify" and self.command == "POST":
            payload = json.loads(body)
            data = state.lfs_objects.get(payload["oid"])
            if data is None or len(data) != int(payload["size"]):
                raise HubError(404, f"LFS object {payload['oid']} not uploaded")
            return self._json({"success": True})
        if self.command != "PUT":
            raise HubError(405, "LFS objects can only be uploaded here")
        if hashlib.sha256(body).hexdigest() != name:
            raise HubError(400, f"sha256 mismatch for LFS object {name}")
        state.lfs_objects[name] = body
        self._send(200, b"", {"ETag": f'"{name}"'})

    def _commit(self, repo: Repo, rev: str, body: bytes) -> None:
        state = self.server.state
        if unquote(rev) not in ("main", "refs/heads/main"):
            raise HubError(400, f"this test Hub only commits to main, not {unquote(rev)!r}")
        files = dict(repo.commits[-1].files)
        title = "commit"
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                title = value.get("summary") or title
                parent = value.get("parentCommit")
                if parent and parent != repo.commits[-1].oid:
                    raise HubError(412, f"parent commit {parent} is not the head of main")
            elif key == "file":
                files[value["path"]] = Blob(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                data = state.lfs_objects.get(value["oid"])
                if data is None:
                    raise HubError(400, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                files[value["path"]] = Blob(data, lfs=True)
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, f"cannot delete missing file {value['path']}", "EntryNotFound")
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                files = {name: blob for name, blob in files.items() if not name.startswith(folder)}
            else:
                raise HubError(400, f"unsupported commit operation {key!r}")
        commit = state.add_commit(repo, title, files)
        url = f"{self.server.url}/{_PREFIX[repo.repo_type]}{repo.repo_id}/commit/{commit.oid}"
        self._json({"success": True, "commitOid": commit.oid, "commitUrl": url, "commitMessage": title,
                    "pullRequestUrl": None})  # fmt: skip


def _byte_range(first: str, last: str, size: int) -> tuple[int, int]:
    if not first:  # suffix range: the last N bytes
        return max(size - int(last), 0), size - 1
    return int(first), min(int(last), size - 1) if last else size - 1


def _card_data(readme: Blob | None, strict: bool = False) -> dict[str, Any] | None:
    """The YAML header of a README as a dict (None without one); `strict` raises ValueError on bad YAML."""
    if readme is None:
        return None
    text = readme.data.decode("utf-8", errors="replace")
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if not match:
        return None
    import yaml

    try:
        data = yaml.safe_load(match[1])
    except yaml.YAMLError as err:
        if strict:
            raise ValueError(f"invalid YAML in README.md: {err}") from None
        return None
    if strict and data is not None and not isinstance(data, dict):
        raise ValueError("README.md metadata must be a YAML mapping")
    return data if isinstance(data, dict) else None


class HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    state: HubState
    url: str

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients drop pooled keep-alive connections at exit; that is not a server error.
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


class HubServer:
    """Run the test Hub on 127.0.0.1 in a background thread; `url` is the endpoint to use as `HF_ENDPOINT`."""

    def __init__(self, port: int = 0) -> None:
        self.httpd = HubHTTPServer(("127.0.0.1", port), HubHandler)
        self.httpd.state = HubState()
        self.httpd.url = self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="test-hub", daemon=True)

    @property
    def state(self) -> HubState:
        return self.httpd.state

    def start(self) -> HubServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@contextlib.contextmanager
def hub_environment(endpoint: str, cache_dir: str | os.PathLike | None = None):
    """Point `huggingface_hub`, `datasets` and `transformers` (already imported or not) at `endpoint`.

    Sets `HF_ENDPOINT` (for subprocesses and later imports), disables Xet and telemetry, and patches the
    module-level copies the libraries made at import time; everything is restored on exit.
    """
    import huggingface_hub
    from huggingface_hub import constants, hf_api

    env = {"HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"}  # fmt: skip
    if cache_dir is not None:
        env.update({"HF_HOME": str(cache_dir), "HF_HUB_CACHE": os.path.join(cache_dir, "hub"),
                    "HF_DATASETS_CACHE": os.path.join(cache_dir, "datasets")})  # fmt: skip
    patches: list[tuple[Any, str, Any]] = [
        (constants, "ENDPOINT", endpoint),
        (constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}"),
        (constants, "HF_HUB_DISABLE_XET", True),
        (constants, "HF_HUB_OFFLINE", False),
        (hf_api.api, "endpoint", endpoint),
    ]
    if cache_dir is not None:
        patches.append((constants, "HF_HUB_CACHE", env["HF_HUB_CACHE"]))
    transformers_hub = sys.modules.get("transformers.utils.hub")
    if transformers_hub is not None and hasattr(transformers_hub, "_hf_api"):
        # transformers caches one HfApi whose endpoint is fixed at first use; let it be rebuilt here and after.
        patches.append((transformers_hub, "_hf_api", None))
    with contextlib.suppress(ImportError):
        import datasets.config

        patches += [(datasets.config, "HF_ENDPOINT", endpoint),
                    (datasets.config, "HUB_DATASETS_URL", endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}"),
                    (datasets.config, "HF_HUB_OFFLINE", False)]  # fmt: skip
        if cache_dir is not None:
            patches.append((datasets.config, "HF_DATASETS_CACHE", env["HF_DATASETS_CACHE"]))
    saved_env = {name: os.environ.get(name) for name in env}
    saved = [(obj, name, getattr(obj, name, None)) for obj, name, _ in patches]
    os.environ.update(env)
    for obj, name, value in patches:
        setattr(obj, name, value)
    huggingface_hub.HfFileSystem.clear_instance_cache()
    try:
        yield endpoint
    finally:
        for obj, name, value in saved:
            setattr(obj, name, None if name == "_hf_api" else value)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        huggingface_hub.HfFileSystem.clear_instance_cache()
