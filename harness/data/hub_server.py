"""A local Hugging Face hub: real HTTP on loopback, serving tiny checkpoints under real repo names.

It serves one snapshot (harness.data.hub: which repos existed at a point in time). Each repo is served from a
checkpoint folder the caller provides per kind (``checkpoints(kind)``; harness.lab's ``standins`` makes them from
one base checkpoint): "16bit", or the name of a real repo's quantization. The server speaks the part of the hub
protocol that huggingface_hub and transformers use to load models:

- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` (ETag, X-Repo-Commit, X-Linked-Etag/-Size for LFS
  files, Range requests)
- ``GET /api/models/{repo}[/revision/{rev}]`` (model info with siblings)
- ``GET /api/models/{repo}/tree/{rev}[/{path}]`` (listing, ``recursive``, ``expand``)
- ``POST /api/models/{repo}/paths-info/{rev}``

and answers errors with the ``X-Error-Code`` headers the real hub sends, so the real clients raise
RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError and GatedRepoError. Repo ids
match case-insensitively, as on huggingface.co. ``pointed_at(hub)`` makes this process's clients
use a hub; ``qvl-harness hub serve`` serves one to other processes.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from harness.core.errors import HarnessError
from harness.data.hub import HubRepo, Snapshot, load_snapshot

# The token that opens private and gated repos (any other token is refused).
ACCESS_TOKEN = "hf_qvl_local_access"
# Files stored through git-lfs on the hub; the generated .gitattributes says the same.
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.gguf", "*.msgpack", "*.h5")
GITATTRIBUTES = "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in LFS_PATTERNS)
# What a gated repo shows without access, as on huggingface.co.
UNGATED_FILES = {".gitattributes", "README.md"}


# --- repo contents -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RepoFile:
    path: str
    data: bytes
    git_oid: str  # sha1 of the git blob (of the LFS pointer for LFS files)
    sha256: str
    lfs_pointer_size: int | None  # None: a plain git file

    @classmethod
    def of(cls, path: str, data: bytes) -> RepoFile:
        sha256 = hashlib.sha256(data).hexdigest()
        is_lfs = any(fnmatch.fnmatch(path.rsplit("/", 1)[-1], p) for p in LFS_PATTERNS)
        blob = (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
            if is_lfs
            else data
        )
        git_oid = hashlib.sha1(b"blob %d\0" % len(blob) + blob).hexdigest()
        return cls(path, data, git_oid, sha256, len(blob) if is_lfs else None)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs_pointer_size is not None else self.git_oid

    def tree_entry(self) -> dict:
        entry = {"type": "file", "oid": self.git_oid, "size": len(self.data), "path": self.path}
        if self.lfs_pointer_size is not None:
            entry["lfs"] = {"oid": self.sha256, "size": len(self.data), "pointerSize": self.lfs_pointer_size}
        return entry


def checkpoint_files(directory: Path) -> dict[str, RepoFile]:
    """The files a repo backed by ``directory`` serves: its files (no dotfiles) and a .gitattributes."""
    files = {".gitattributes": RepoFile.of(".gitattributes", GITATTRIBUTES.encode())}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).as_posix()
        if path.is_file() and not any(part.startswith(".") for part in relative.split("/")):
            files[relative] = RepoFile.of(relative, path.read_bytes())
    return files


@dataclass(frozen=True)
class ServedRepo:
    repo: HubRepo
    files: dict[str, RepoFile]
    folders: frozenset[str]
    sha: str  # the commit every revision request resolves to

    @classmethod
    def of(cls, repo: HubRepo, files: dict[str, RepoFile]) -> ServedRepo:
        digest = hashlib.sha1(repo.id.encode())
        for path in sorted(files):
            digest.update(f"\0{path}\0{files[path].git_oid}".encode())
        folders = set()
        for path in files:
            parts = path.split("/")[:-1]
            folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return cls(repo, files, frozenset(folders), digest.hexdigest())

    def folder_entry(self, folder: str) -> dict:
        inside = sorted(f.git_oid for p, f in self.files.items() if p.startswith(folder + "/"))
        return {
            "type": "directory",
            "oid": hashlib.sha1("".join(inside).encode()).hexdigest(),
            "size": 0,
            "path": folder,
        }


# --- the server --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str  # as sent, percent-encoded, without the query
    status: int


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict


def _json(status: int, payload, **headers) -> Reply:
    return Reply(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **headers})


def _error(status: int, code: str | None, message: str, **headers) -> Reply:
    if code:
        headers["X-Error-Code"] = code
    headers["X-Error-Message"] = message
    return _json(status, {"error": message}, **headers)


class LocalHub:
    """A hub serving one snapshot on 127.0.0.1 (a free port unless ``port`` is given).

    ``with LocalHub("2024-12", checkpoints) as hub: ... hub.url ...``; ``hub.requests`` lists what
    clients asked. ``checkpoints(kind)`` is the folder served for repos of a kind ("16bit" or a
    quantization name of the snapshot's repos).
    """

    def __init__(self, snapshot: Snapshot | str | Path, checkpoints, port: int = 0):
        self.snapshot = snapshot if isinstance(snapshot, Snapshot) else load_snapshot(snapshot)
        self.checkpoints = checkpoints
        self.port = port
        self._repos: dict[str, ServedRepo] = {}
        self._log: list[LoggedRequest] = []
        self._log_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> LocalHub:
        if self._server is not None:
            return self
        by_kind = {kind: checkpoint_files(self.checkpoints(kind)) for kind in {r.kind for r in self.snapshot.repos}}
        self._repos = {r.id.lower(): ServedRepo.of(r, by_kind[r.kind]) for r in self.snapshot.repos}
        try:
            server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        except OSError as exc:
            raise HarnessError(f"cannot serve the hub on 127.0.0.1:{self.port}: {exc.strerror}") from None
        server.daemon_threads = True
        server.hub = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name=f"local-hub-{self.snapshot.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise HarnessError("the local hub is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # request log

    @property
    def requests(self) -> list[LoggedRequest]:
        with self._log_lock:
            return list(self._log)

    def clear_requests(self) -> None:
        with self._log_lock:
            self._log.clear()

    def _record(self, method: str, path: str, status: int) -> None:
        with self._log_lock:
            self._log.append(LoggedRequest(method, path, status))

    # protocol

    def answer(self, method: str, target: str, headers, body: bytes = b"") -> Reply:
        """The reply to one request (``target`` is the request line's path and query)."""
        url = urlsplit(target)
        parts = [unquote(p) for p in url.path.split("/")[1:]]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        authorized = headers.get("Authorization", "") == f"Bearer {ACCESS_TOKEN}"
        if method == "GET" and parts == ["api", "agent-harnesses"]:  # client telemetry registry: none here
            return _json(200, {"standardEnvVars": [], "harnesses": {}})
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id, route = "/".join(parts[2:4]), parts[4:]
            if method == "GET" and not route:
                return self._api(repo_id, "main", ["info"], query, body, authorized)
            if (
                route
                and (method, route[0]) in {("GET", "revision"), ("GET", "tree"), ("POST", "paths-info")}
                and len(route) >= 2
            ):
                return self._api(repo_id, route[1], [route[0], *route[2:]], query, body, authorized)
        elif len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]), headers, authorized)
        return _error(404, None, f"the qvl-harness local hub does not serve {method} {url.path}")

    def _access(self, repo_id: str, revision: str, authorized: bool) -> ServedRepo | Reply:
        served = self._repos.get(repo_id.lower())
        if served is None:
            return _error(404, "RepoNotFound", "Repository Not Found")
        if served.repo.private and not authorized:
            return _error(401, "RepoNotFound", "Repository Not Found")  # the hub hides private repos
        if revision not in ("main", served.sha):
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return served

    def _api(self, repo_id: str, revision: str, route: list[str], query: dict, body: bytes, authorized: bool) -> Reply:
        served = self._access(repo_id, revision, authorized)
        if isinstance(served, Reply):
            return served
        verb, path = route[0], "/".join(route[1:])
        if verb in ("info", "revision"):
            return _json(200, self._model_info(served, with_blobs=query.get("blobs", "").lower() == "true"))
        expand = query.get("expand", "").lower() == "true"
        if verb == "tree":
            entries = self._tree(served, path, recursive=query.get("recursive", "").lower() == "true")
            if entries is None:
                return _error(
                    404, "EntryNotFound", f'{path} does not exist on "{revision}"', **{"X-Repo-Commit": served.sha}
                )
            return _json(200, [self._with_commit(e, served) if expand else e for e in entries])
        form = parse_qs(body.decode())
        expand = form.get("expand", ["false"])[-1].lower() == "true"
        found = []
        for path in form.get("paths", []):
            path = path.strip("/")
            entry = (
                served.files[path].tree_entry()
                if path in served.files
                else (served.folder_entry(path) if path in served.folders else None)
            )
            if entry:
                found.append(self._with_commit(entry, served) if expand else entry)
        return _json(200, found)

    def _timestamp(self) -> str:
        return f"{self.snapshot.date.isoformat()}T00:00:00.000Z"

    def _with_commit(self, entry: dict, served: ServedRepo) -> dict:
        return {
            **entry,
            "lastCommit": {"id": served.sha, "title": "Upload folder using huggingface_hub", "date": self._timestamp()},
        }

    def _tree(self, served: ServedRepo, folder: str, recursive: bool) -> list[dict] | None:
        folder = folder.strip("/")
        folders = served.folders
        if folder and folder not in folders:
            return None
        prefix = folder + "/" if folder else ""

        def listed(path: str) -> bool:
            rest = path[len(prefix) :]
            return path.startswith(prefix) and bool(rest) and (recursive or "/" not in rest)

        entries = [served.folder_entry(f) for f in sorted(folders) if listed(f)]
        return entries + [served.files[p].tree_entry() for p in sorted(served.files) if listed(p)]

    def _model_info(self, served: ServedRepo, with_blobs: bool) -> dict:
        repo = served.repo
        siblings = []
        for file in served.files.values():
            sibling = {"rfilename": file.path}
            if with_blobs:
                sibling |= {"size": len(file.data), "blobId": file.git_oid}
                if file.lfs_pointer_size is not None:
                    sibling["lfs"] = {
                        "size": len(file.data),
                        "sha256": file.sha256,
                        "pointerSize": file.lfs_pointer_size,
                    }
            siblings.append(sibling)
        config = json.loads(served.files["config.json"].data) if "config.json" in served.files else {}
        return {
            "_id": served.sha[:24],
            "id": repo.id,
            "modelId": repo.id,
            "author": repo.id.split("/")[0],
            "sha": served.sha,
            "lastModified": self._timestamp(),
            "createdAt": self._timestamp(),
            "private": repo.private,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "library_name": "transformers",
            "pipeline_tag": "image-text-to-text",
            "tags": ["transformers", "safetensors", config.get("model_type", "unknown")],
            "config": {k: config[k] for k in ("architectures", "model_type", "quantization_config") if k in config},
            "siblings": siblings,
            "usedStorage": sum(len(f.data) for f in served.files.values()),
        }

    def _resolve(self, repo_id: str, revision: str, path: str, headers, authorized: bool) -> Reply:
        served = self._access(repo_id, revision, authorized)
        if isinstance(served, Reply):
            return served
        commit = {"X-Repo-Commit": served.sha}
        if served.repo.gated and not authorized and path not in UNGATED_FILES:
            message = (
                f"Access to model {served.repo.id} is restricted. You must have access to it and be "
                "authenticated to access it. Please log in."
            )
            return _error(403 if headers.get("Authorization") else 401, "GatedRepo", message, **commit)
        file = served.files.get(path)
        if file is None:
            return _error(404, "EntryNotFound", "Entry not found", **commit)
        meta = {
            **commit,
            "ETag": f'"{file.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/json" if path.endswith(".json") else "application/octet-stream",
        }
        if file.lfs_pointer_size is not None:
            meta |= {"X-Linked-Etag": f'"{file.sha256}"', "X-Linked-Size": str(len(file.data))}
        if not headers.get("Range"):
            return Reply(200, file.data, meta)
        window = _byte_range(headers["Range"], len(file.data))
        if window is None:
            return Reply(416, b"", {**meta, "Content-Range": f"bytes */{len(file.data)}"})
        start, end = window
        return Reply(206, file.data[start:end], {**meta, "Content-Range": f"bytes {start}-{end - 1}/{len(file.data)}"})


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """``(start, end)`` of a ``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` range; None if unsatisfiable."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":
        start, end = max(size - int(last), 0), size
    else:
        start, end = int(first), min(int(last) + 1, size) if last else size
    return (start, end) if start < end else None


class _Handler(BaseHTTPRequestHandler):
    server_version = "qvl-harness-hub"

    def _serve(self, method: str) -> None:
        hub: LocalHub = self.server.hub
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method == "POST" else b""
        try:
            reply = hub.answer(method, self.path, self.headers, body)
        except Exception as exc:  # a server bug must show up as a 500 in the client, not a hang
            reply = _error(500, None, f"local hub error: {exc!r}")
        hub._record(method, self.path.split("?", 1)[0], reply.status)  # before replying: clients may look at once
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))  # a HEAD reply tells the GET's length
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(reply.body)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def log_message(self, format, *args) -> None:  # the request log is in LocalHub.requests
        pass


# --- pointing this process's clients at a hub ----------------------------------------------------


@contextmanager
def pointed_at(hub: LocalHub):
    """Make huggingface_hub and transformers in this process talk to ``hub``, with an empty cache.

    huggingface_hub copies HF_ENDPOINT and HF_HUB_CACHE into module constants at import (and its
    module-level ``HfApi`` keeps the endpoint), so those are patched along with the environment and
    restored on exit. Yields the fresh cache directory. Process-wide: not for concurrent use.
    """
    from huggingface_hub import HfFileSystem, constants, hf_api

    cache = Path(tempfile.mkdtemp(prefix="qvl-hub-cache-"))
    patched = {
        "ENDPOINT": hub.url,
        "HUGGINGFACE_CO_URL_TEMPLATE": hub.url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_CACHE": str(cache),
        "HUGGINGFACE_HUB_CACHE": str(cache),
    }
    if hasattr(constants, "HF_URL_HOSTS"):  # huggingface_hub >= 1.0 only
        patched["HF_URL_HOSTS"] = constants.HF_URL_HOSTS | {"127.0.0.1"}
    # Older huggingface_hub (0.x) and transformers also bind some constants by name at import:
    # patch every loaded copy that still holds the constant's value.
    modules = [
        m for n, m in list(sys.modules.items()) if n.startswith(("huggingface_hub", "transformers.utils.hub")) and m
    ]
    saved = [
        (m, name, getattr(m, name))
        for m in modules
        for name in patched
        if name in vars(m) and (m is constants or getattr(m, name) == getattr(constants, name))
    ]
    saved_env = {name: os.environ.get(name) for name in ("HF_ENDPOINT", "HF_HUB_CACHE")}
    saved_api_endpoint = hf_api.api.endpoint
    for module, name, _ in saved:
        setattr(module, name, patched[name])
    os.environ["HF_ENDPOINT"], os.environ["HF_HUB_CACHE"] = hub.url, str(cache)
    hf_api.api.endpoint = hub.url
    HfFileSystem.clear_instance_cache()  # instances remember their endpoint and listings
    try:
        yield cache
    finally:
        for module, name, value in saved:
            setattr(module, name, value)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        hf_api.api.endpoint = saved_api_endpoint
        HfFileSystem.clear_instance_cache()
        shutil.rmtree(cache, ignore_errors=True)
