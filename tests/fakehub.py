"""Loopback HTTP servers standing in for the Hugging Face Hub and for S3, with fault injection.

Tests and benchmarks must never reach the network, yet the downloader has to be exercised against the
real wire protocol. This module provides:

`FakeHub`
    A fake Hugging Face Hub: two `ThreadingHTTPServer`s on 127.0.0.1, the Hub itself (`hub.url`, to be
    used as `HF_ENDPOINT` / `endpoint=`) and a separate "CDN" origin (`hub.cdn_url`) that serves LFS
    content from signed URLs, as cdn-lfs.hf.co does. It implements what `huggingface_hub` 2.4 sends and
    parses:

    - `GET /api/models/{repo}` and `/api/models/{repo}/revision/{rev}` (model info; `blobs=true` adds
      `size`, `blobId` and `lfs` to each sibling; `expand=...` keeps only the listed properties);
    - `GET /api/models/{repo}/tree/{rev}[/{path}]` (`recursive`, `expand`), paginated with a GitHub-style
      `Link: <...&cursor=...>; rel="next"` header after `hub.page_size` entries;
    - `POST /api/models/{repo}/paths-info/{rev}` (form or JSON `paths`, `expand`; unknown paths ignored);
    - `HEAD`/`GET /{repo}/resolve/{rev}/{path}`: regular files are served directly (`ETag: "<git blob
      id>"`, `X-Repo-Commit`, `Accept-Ranges: bytes`); LFS files answer `302` to a signed CDN URL with
      `X-Linked-Etag: "<sha256>"`, `X-Linked-Size`, `X-Repo-Commit` and `ETag`;
    - `HEAD`/`GET {cdn_url}/cdn/{sha256}?X-Amz-...&X-Amz-Signature=...`: the LFS bytes; 403 with an
      S3-style XML body when the signature is missing, unknown or expired (`hub.signed_url_ttl`);
    - single byte ranges (`bytes=a-b`, `bytes=a-`, `bytes=-n`) answer 206 with `Content-Range`, an
      unsatisfiable range 416, anything else the whole body with 200;
    - errors as the Hub reports them, in the `X-Error-Code` / `X-Error-Message` headers and a JSON
      `{"error": ...}` body: `RepoNotFound` (unknown repo, or private repo without a valid token: 401
      when the request carries no token, 404 when it does), `GatedRepo` (401, content of a gated repo
      without a token; the API of a gated repo stays public, as on the Hub), `RevisionNotFound` (404),
      `EntryNotFound` (404, with `X-Repo-Commit` on resolve). A token that is not in `tokens` is
      refused on every Hub request with 401 "Invalid credentials in Authorization header" (no error
      code), as the real Hub does. The CDN ignores `Authorization`: only the signature counts.

    Repos are git-like: `add_repo` makes a commit (a real git tree id, a fake but well-formed commit id)
    on a branch; blob ids are real git blob ids, LFS files are listed with the id of their LFS pointer.
    File content lives on disk under the data dir and is sent with `os.sendfile` when no fault or
    throttle applies; connections are HTTP/1.1 keep-alive.

`FaultProxy`
    A reverse proxy on 127.0.0.1 in front of any HTTP server (e.g. moto's S3 server). It forwards every
    request unchanged, `Host` header included (so presigned S3 URLs made for the proxy's address keep
    their signature valid) and streams the response back.

Both share `FaultPlan` (`server.faults`): corrupt, truncate, rate_limit, server_error, slow and stall,
applied to the next N GET requests that would return a body whose path matches an fnmatch pattern; a
per-stream throttle (`throttle_bytes_per_second`); and thread-safe accounting of requests and body bytes
(`requests`, `bytes_served`, `get_count`, `reset_stats`).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import http.client
import io
import json
import os
import re
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO, Self
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlencode, urlsplit

__all__ = ["LFS_SUFFIXES", "FakeHub", "Fault", "FaultPlan", "FaultProxy", "RequestRecord"]

LFS_SUFFIXES = (".safetensors", ".bin", ".pt")
"""Files with these suffixes are LFS files whatever their size."""

_CHUNK = 1 << 20  # body copy size when bytes go through Python (faults, throttle, proxy)
_SENDFILE_CHUNK = 64 << 20  # bytes per os.sendfile call: accounting granularity of the fast path
_SETTLE_TIMEOUT = 0.5  # how long a stats read waits for in-progress socket writes to be counted
_CORRUPT_SPAN = 16  # bytes inverted by a "corrupt" fault, from the middle of the body
_FAKE_ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"  # AWS's documented example key id: clearly not a credential


# --------------------------------------------------------------------------------------------- faults

_FAULT_OPTIONS: dict[str, frozenset[str]] = {
    "corrupt": frozenset(),
    "truncate": frozenset({"after_bytes"}),
    "rate_limit": frozenset({"retry_after"}),
    "server_error": frozenset({"status"}),
    "slow": frozenset({"bytes_per_second"}),
    "stall": frozenset({"after_bytes", "seconds"}),
}


@dataclass
class Fault:
    """One planned misbehaviour, applied to the next `remaining` body requests matching `pattern`."""

    pattern: str
    kind: str
    remaining: int
    after_bytes: int | None = None  # truncate, stall: body bytes sent first (None: half the body)
    retry_after: int = 1  # rate_limit: seconds in `Retry-After`
    status: int = 500  # server_error: the status sent
    bytes_per_second: float | None = None  # slow: the body rate
    seconds: float = 10.0  # stall: how long the connection hangs before it is closed

    def body_limit(self, length: int) -> int:
        """How many of a `length`-byte body's bytes are sent before the connection is dropped or hangs."""
        if self.kind not in ("truncate", "stall"):
            return length
        return min(length, length // 2 if self.after_bytes is None else self.after_bytes)


class FaultPlan:
    """Faults waiting to be applied; thread-safe. `triggered` lists the (kind, path) of each applied one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._triggered: list[tuple[str, str]] = []

    def add(self, path_pattern: str, kind: str, *, times: int = 1, **options: Any) -> Fault:
        """Apply `kind` to the next `times` body requests whose path matches the fnmatch `path_pattern`.

        Options: truncate `after_bytes`; rate_limit `retry_after` (int seconds); server_error `status`;
        slow `bytes_per_second` (required); stall `after_bytes`, `seconds`.
        """
        if kind not in _FAULT_OPTIONS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(_FAULT_OPTIONS)}")
        unknown = set(options) - _FAULT_OPTIONS[kind]
        if unknown:
            raise TypeError(f"fault {kind!r} takes no option {sorted(unknown)}")
        if kind == "slow" and "bytes_per_second" not in options:
            raise TypeError("fault 'slow' needs bytes_per_second")
        if times < 1:
            raise ValueError("times must be at least 1")
        fault = Fault(path_pattern, kind, times, **options)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Drop every pending fault (the `triggered` history stays)."""
        with self._lock:
            self._faults.clear()

    def take(self, path: str) -> Fault | None:
        """Consume one use of the first pending fault matching `path` (called by the servers)."""
        with self._lock:
            for fault in self._faults:
                if fnmatch.fnmatchcase(path, fault.pattern):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    self._triggered.append((fault.kind, path))
                    return fault
        return None

    @property
    def triggered(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._triggered)


# ----------------------------------------------------------------------------------------- accounting


@dataclass
class RequestRecord:
    """One answered request, as the server saw it."""

    server: str  # "hub", "cdn" or "proxy"
    method: str
    path: str  # URL path with its query string
    status: int
    range: str | None  # the Range request header
    authorization: str | None  # the Authorization request header
    file: str | None  # hub/cdn: the repo file whose content was addressed; proxy: the URL path
    body_bytes: int = 0  # content bytes written to the socket so far

    @property
    def has_authorization(self) -> bool:
        return self.authorization is not None


class _Stats:
    """Request records and content byte counters; readers wait briefly for in-progress writes."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._records: list[RequestRecord] = []
        self._writes_in_progress = 0

    def add(self, record: RequestRecord) -> None:
        with self._cond:
            self._records.append(record)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Wrap a socket write, so that a reader never sees bytes the client has but the counters lack."""
        with self._cond:
            self._writes_in_progress += 1
        try:
            yield
        finally:
            with self._cond:
                self._writes_in_progress -= 1
                self._cond.notify_all()

    def count_bytes(self, record: RequestRecord, n: int) -> None:
        with self._cond:
            record.body_bytes += n

    def snapshot(self) -> list[RequestRecord]:
        with self._cond:
            self._cond.wait_for(lambda: self._writes_in_progress == 0, timeout=_SETTLE_TIMEOUT)
            return list(self._records)

    def reset(self) -> None:
        with self._cond:
            self._records.clear()


# --------------------------------------------------------------------------------- server machinery


class _Server(ThreadingHTTPServer):
    """A loopback server run in a daemon thread; knows its open connections to cut them on stop."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, handler: type[_Handler], service: _Service, role: str) -> None:
        self.service = service
        self.role = role
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name=f"fakehub-{role}"
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def opened(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def closed(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        with self._connections_lock:
            for connection in self._connections:
                with suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)


class _Service:
    """What FakeHub and FaultProxy share: servers, faults, throttle and accounting."""

    def __init__(self) -> None:
        self.faults = FaultPlan()
        self.throttle_bytes_per_second: float | None = None
        self._stats = _Stats()
        self._closing = threading.Event()
        self._servers: list[_Server] = []

    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        """Stop the servers and cut open connections (stalled and throttled streams end at once)."""
        self._closing.set()
        for server in self._servers:
            server.stop()
        self._servers.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _serve(self, handler: type[_Handler], role: str) -> _Server:
        server = _Server(handler, self, role)
        self._servers.append(server)
        return server

    @property
    def requests(self) -> list[RequestRecord]:
        """Every answered request so far, oldest first."""
        return self._stats.snapshot()

    def bytes_served(self, path: str | None = None) -> int:
        """Content body bytes written to sockets, in all or for one file (hub) / URL path (proxy)."""
        return sum(r.body_bytes for r in self._stats.snapshot() if path is None or r.file == path)

    def get_count(self, path: str) -> int:
        """GET requests that reached the content of `path` (redirects excluded, faulted ones included)."""
        return sum(
            1
            for r in self._stats.snapshot()
            if r.method == "GET" and r.file == path and not 300 <= r.status < 400
        )

    def reset_stats(self) -> None:
        """Forget every record: byte and request counts start again from zero."""
        self._stats.reset()


class _HttpError(Exception):
    """An error answer: status, optional Hub error code, message, extra headers."""

    def __init__(self, status: int, code: str | None, message: str, headers: Mapping[str, str] = {}) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers)


class _Unsatisfiable(Exception):
    pass


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (start, end exclusive) of a single-range header; None for the whole body.

    Multi-range or malformed headers are ignored, as RFC 9110 allows; raises _Unsatisfiable for 416.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise _Unsatisfiable
        return max(0, size - suffix), size
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise _Unsatisfiable
    return start, size if not last else min(int(last) + 1, size)


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler with request recording and fault-aware body streaming."""

    protocol_version = "HTTP/1.1"
    server: _Server
    content_file: str | None = None  # set before answering: the file (or URL path) the request addresses
    record: RequestRecord | None = None

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.closed(self.connection)

    @property
    def service(self) -> _Service:
        return self.server.service

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Called by send_response for every final answer: record it."""
        headers = getattr(self, "headers", None)
        self.record = RequestRecord(
            server=self.server.role,
            method=self.command or "",
            path=self.path if hasattr(self, "path") else "",
            status=int(code),
            range=headers.get("Range") if headers else None,
            authorization=headers.get("Authorization") if headers else None,
            file=self.content_file,
        )
        self.service._stats.add(self.record)

    def _send_bytes(
        self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] = {}
    ) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, payload: object, headers: Mapping[str, str] = {}) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), "application/json; charset=utf-8", headers)

    def _send_http_error(self, error: _HttpError) -> None:
        headers = {**error.headers, "X-Error-Message": error.message}
        if error.code is not None:
            headers["X-Error-Code"] = error.code
        self._send_json(error.status, {"error": error.message}, headers)

    def _send_fault_status(self, fault: Fault) -> None:
        """Answer a rate_limit or server_error fault instead of the body."""
        if fault.kind == "rate_limit":
            self._send_json(
                429,
                {"error": "You have been rate-limited; retry later."},
                {
                    "Retry-After": str(fault.retry_after),
                    "RateLimit": f'"resolvers";r=0;t={fault.retry_after}',
                    "RateLimit-Policy": '"fixed window";"resolvers";q=3000;w=300',
                },
            )
        else:
            self._send_json(
                fault.status,
                {"error": "Internal Error - We're working hard to fix this as soon as possible!"},
            )

    def _stream(self, source: BinaryIO, length: int, fault: Fault | None, *, counted: bool = True) -> None:
        """Write `length` body bytes from `source` (headers already sent), applying `fault` and throttle.

        Uses os.sendfile from a file when nothing slows or alters the bytes. A dropped client, a truncated
        or stalled body, or a source ending early closes the connection afterwards.
        """
        limit = fault.body_limit(length) if fault is not None else length
        rates = [self.service.throttle_bytes_per_second]
        if fault is not None and fault.kind == "slow":
            rates.append(fault.bytes_per_second)
        rate = min((r for r in rates if r is not None), default=None)
        corrupt_at = length // 2 if fault is not None and fault.kind == "corrupt" else None
        try:
            if fault is None and rate is None and isinstance(source, io.BufferedReader):
                sent = self._sendfile(source, limit, counted)
            else:
                sent = self._copy(source, limit, rate, corrupt_at, counted)
        except OSError:  # the client went away
            self.close_connection = True
            return
        if fault is not None and fault.kind == "stall":
            self.service._closing.wait(fault.seconds)
        if sent < length or (fault is not None and fault.kind in ("truncate", "stall")):
            self.close_connection = True

    def _count(self, n: int, counted: bool) -> None:
        if counted and self.record is not None:
            self.service._stats.count_bytes(self.record, n)

    def _sendfile(self, source: io.BufferedReader, limit: int, counted: bool) -> int:
        offset, out, sent = source.tell(), self.connection.fileno(), 0
        while sent < limit:
            with self.service._stats.writing():
                n = os.sendfile(out, source.fileno(), offset + sent, min(_SENDFILE_CHUNK, limit - sent))
                self._count(n, counted)
            if n == 0:
                break
            sent += n
        return sent

    def _copy(
        self, source: BinaryIO, limit: int, rate: float | None, corrupt_at: int | None, counted: bool
    ) -> int:
        chunk = _CHUNK if rate is None else max(1, min(_CHUNK, int(rate / 20)))
        started, sent = time.monotonic(), 0
        while sent < limit:
            data = source.read(min(chunk, limit - sent))
            if not data:
                break
            if corrupt_at is not None and sent < corrupt_at + _CORRUPT_SPAN and corrupt_at < sent + len(data):
                flipped = bytearray(data)
                for i in range(max(corrupt_at, sent), min(corrupt_at + _CORRUPT_SPAN, sent + len(data))):
                    flipped[i - sent] ^= 0xFF
                data = bytes(flipped)
            with self.service._stats.writing():
                self.wfile.write(data)
                self._count(len(data), counted)
            sent += len(data)
            if rate is not None:
                delay = started + sent / rate - time.monotonic()
                if delay > 0 and self.service._closing.wait(delay):
                    break
        return sent


# ------------------------------------------------------------------------------------------ fake hub


@dataclass(frozen=True)
class _Entry:
    """A file or directory of a commit."""

    path: str
    oid: str  # git blob id (of the LFS pointer for LFS files) or git tree id
    is_dir: bool
    last_commit: str
    size: int = 0
    sha256: str | None = None
    pointer_size: int | None = None  # LFS files only
    disk: Path | None = None

    @property
    def is_lfs(self) -> bool:
        return self.pointer_size is not None

    @property
    def parent(self) -> str:
        return self.path.rpartition("/")[0]


@dataclass(frozen=True)
class _Commit:
    sha: str
    title: str
    date: datetime
    entries: dict[str, _Entry]  # by path; the root directory is not an entry

    @property
    def files(self) -> list[_Entry]:
        return sorted((e for e in self.entries.values() if not e.is_dir), key=lambda e: e.path)

    def listing(self, directory: str, recursive: bool) -> list[_Entry]:
        if recursive:
            prefix = directory + "/" if directory else ""
            found = [e for e in self.entries.values() if e.path.startswith(prefix)]
        else:
            found = [e for e in self.entries.values() if e.parent == directory]
        return sorted(found, key=lambda e: e.path)


@dataclass
class _Repo:
    repo_id: str
    private: bool
    gated: bool
    created: datetime
    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, _Commit] = field(default_factory=dict)


@dataclass(frozen=True)
class _Grant:
    """A signed CDN URL handed out by a resolve redirect."""

    entry: _Entry
    expires: float


@dataclass(frozen=True)
class _StoredFile:
    size: int
    sha256: str
    git_oid: str
    pointer_size: int | None
    disk: Path


def _git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _flag(values: Mapping[str, list[str]], name: str) -> bool:
    return values.get(name, ["false"])[-1].lower() in ("1", "true")


def _tree_ids(blob_ids: Mapping[str, str]) -> dict[str, str]:
    """Git tree ids of every directory ("" for the root) holding the files `path -> blob id`."""
    children: dict[str, dict[str, str | None]] = {"": {}}  # dir -> name -> blob id (None: a directory)
    for path, oid in blob_ids.items():
        parts = path.split("/")
        for depth in range(len(parts)):
            directory = "/".join(parts[:depth])
            children.setdefault(directory, {})[parts[depth]] = oid if depth == len(parts) - 1 else None
    trees: dict[str, str] = {}

    def tree_id(directory: str) -> str:
        rows = []
        for name, oid in children[directory].items():
            child = f"{directory}/{name}" if directory else name
            if oid is None:
                rows.append((name + "/", b"40000 %s\0" % name.encode() + bytes.fromhex(tree_id(child))))
            else:
                rows.append((name, b"100644 %s\0" % name.encode() + bytes.fromhex(oid)))
        body = b"".join(row for _, row in sorted(rows))
        trees[directory] = hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()
        return trees[directory]

    tree_id("")
    return trees


def _check_repo_path(path: str) -> str:
    parts = path.strip("/").split("/")
    if not path.strip("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"invalid file path {path!r}")
    return "/".join(parts)


class FakeHub(_Service):
    """A fake Hugging Face Hub (and its LFS CDN) on loopback; see the module docstring for the protocol."""

    def __init__(self, data_dir: Path, *, tokens: set[str] | frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self._blobs = self.data_dir / "blobs"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self.tokens = set(tokens)
        self.page_size = 1000
        self.signed_url_ttl = 3600.0
        self._repos: dict[str, _Repo] = {}
        self._grants: dict[str, _Grant] = {}
        self._lock = threading.Lock()
        self._hub: _Server | None = None
        self._cdn: _Server | None = None

    def start(self) -> Self:
        self._hub = self._serve(_HubHandler, "hub")
        self._cdn = self._serve(_HubHandler, "cdn")
        return self

    @property
    def url(self) -> str:
        """The Hub endpoint, `http://127.0.0.1:PORT` (use as HF_ENDPOINT)."""
        if self._hub is None:
            raise RuntimeError("FakeHub is not started")
        return self._hub.url

    @property
    def cdn_url(self) -> str:
        """The CDN origin that LFS resolve requests redirect to (another port: another origin)."""
        if self._cdn is None:
            raise RuntimeError("FakeHub is not started")
        return self._cdn.url

    def resolve_url(self, repo_id: str, path: str, revision: str = "main") -> str:
        """The `/resolve/` URL of a file, as huggingface_hub's `hf_hub_url` builds it."""
        return f"{self.url}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes | Path],
        *,
        revision: str = "main",
        private: bool = False,
        gated: bool = False,
        lfs_threshold: int = 10_000,
    ) -> str:
        """Commit `files` (the whole file set) on branch `revision` of `repo_id`; return the commit id.

        A `Path` value is hard-linked into the data dir (copied across file systems): do not modify it
        afterwards. A repo added again gets a new commit; the branch moves, older commit ids still resolve.
        `private` and `gated` apply to the repo from now on.
        """
        namespace, _, name = repo_id.partition("/")
        if not namespace or not name or "/" in name:
            raise ValueError(f"repo_id must be 'namespace/name', got {repo_id!r}")
        stored = {
            _check_repo_path(path): self._store(path, content, lfs_threshold)
            for path, content in files.items()
        }
        trees = _tree_ids({path: f.git_oid for path, f in stored.items()})
        now = datetime.now(UTC)
        title = f"Upload {len(stored)} files"
        with self._lock:
            repo = self._repos.setdefault(repo_id, _Repo(repo_id, private, gated, created=now))
            repo.private, repo.gated = private, gated
            parent = repo.commits.get(repo.refs.get(revision, ""))
            commit_object = f"tree {trees['']}\n"
            if parent is not None:
                commit_object += f"parent {parent.sha}\n"
            stamp = f"FakeHub <fakehub@localhost> {int(now.timestamp())} +0000"
            commit_object += f"author {stamp}\ncommitter {stamp}\n\n{title}\n"
            sha = hashlib.sha1(b"commit %d\0" % len(commit_object) + commit_object.encode()).hexdigest()
            previous = parent.entries if parent is not None else {}

            def last_commit(path: str, oid: str) -> str:
                before = previous.get(path)
                return before.last_commit if before is not None and before.oid == oid else sha

            entries = {
                path: _Entry(path, oid, True, last_commit(path, oid)) for path, oid in trees.items() if path
            }
            for path, f in stored.items():
                entries[path] = _Entry(
                    path,
                    f.git_oid,
                    False,
                    last_commit(path, f.git_oid),
                    f.size,
                    f.sha256,
                    f.pointer_size,
                    f.disk,
                )
            repo.commits[sha] = _Commit(sha, title, now, entries)
            repo.refs[revision] = sha
        return sha

    def _store(self, path: str, content: bytes | Path, lfs_threshold: int) -> _StoredFile:
        """Put the content under blobs/<sha256>; compute its ids (the git blob id only for non-LFS files)."""
        size = len(content) if isinstance(content, bytes) else os.stat(content).st_size
        is_lfs = size > lfs_threshold or path.endswith(LFS_SUFFIXES)
        if isinstance(content, bytes):
            sha256 = hashlib.sha256(content).hexdigest()
            blob_id = "" if is_lfs else _git_blob_id(content)
        else:
            sha256_hash, blob_hash = hashlib.sha256(), None if is_lfs else hashlib.sha1(b"blob %d\0" % size)
            with open(content, "rb") as source:
                while chunk := source.read(8 << 20):
                    sha256_hash.update(chunk)
                    if blob_hash is not None:
                        blob_hash.update(chunk)
            sha256, blob_id = sha256_hash.hexdigest(), "" if blob_hash is None else blob_hash.hexdigest()
        disk = self._blobs / sha256
        if not disk.exists():
            partial = self._blobs / f"{sha256}.{secrets.token_hex(4)}.partial"
            if isinstance(content, bytes):
                partial.write_bytes(content)
            else:
                try:
                    os.link(content, partial)
                except OSError:
                    shutil.copyfile(content, partial)
            os.replace(partial, disk)
        if is_lfs:
            pointer = _lfs_pointer(sha256, size)
            return _StoredFile(size, sha256, _git_blob_id(pointer), len(pointer), disk)
        return _StoredFile(size, sha256, blob_id, None, disk)

    # ---- used by the handler

    def _lookup(self, repo_id: str, revision: str) -> tuple[_Repo | None, _Commit | None]:
        with self._lock:
            repo = self._repos.get(repo_id)
            if repo is None:
                return None, None
            return repo, repo.commits.get(repo.refs.get(revision, revision))

    def _sign(self, entry: _Entry) -> str:
        """A fresh signed CDN URL for an LFS file."""
        now = time.time()
        signature = secrets.token_hex(32)
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        name = entry.path.rpartition("/")[2]
        params = [
            ("response-content-disposition", f"attachment; filename*=UTF-8''{quote(name)}"),
            ("response-content-type", "application/octet-stream"),
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
            ("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD"),
            ("X-Amz-Credential", f"{_FAKE_ACCESS_KEY}/{amz_date[:8]}/us-east-1/s3/aws4_request"),
            ("X-Amz-Date", amz_date),
            ("X-Amz-Expires", str(max(0, int(self.signed_url_ttl)))),
            ("X-Amz-Signature", signature),
            ("X-Amz-SignedHeaders", "host"),
            ("x-id", "GetObject"),
        ]
        with self._lock:
            self._grants[signature] = _Grant(entry, now + self.signed_url_ttl)
        return f"{self.cdn_url}/cdn/{entry.sha256}?{urlencode(params, quote_via=quote)}"

    def _grant(self, signature: str | None) -> _Grant | None:
        with self._lock:
            return self._grants.get(signature or "")


def _entry_json(entry: _Entry, repo: _Repo, expand: bool) -> dict[str, Any]:
    """A tree / paths-info entry as the Hub returns it."""
    if entry.is_dir:
        data: dict[str, Any] = {"type": "directory", "oid": entry.oid, "size": 0, "path": entry.path}
    else:
        data = {"type": "file", "oid": entry.oid, "size": entry.size, "path": entry.path}
        if entry.is_lfs:
            data["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
    if expand:
        commit = repo.commits[entry.last_commit]
        data["lastCommit"] = {"id": commit.sha, "title": commit.title, "date": _iso(commit.date)}
        if not entry.is_dir:
            data["securityFileStatus"] = {
                "status": "safe",
                "avScan": {"virusFound": False, "virusNames": None},
                "pickleImportScan": None,
            }
    return data


class _HubHandler(_Handler):
    """Routes Hub API, resolve and CDN requests."""

    server: _Server

    @property
    def hub(self) -> FakeHub:
        service = self.server.service
        assert isinstance(service, FakeHub)
        return service

    def do_GET(self) -> None:
        self.content_file = None
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        segments = [unquote(s) for s in url.path.split("/")[1:]]
        query = parse_qs(url.query)
        try:
            if self.server.role == "cdn":
                self._cdn(segments, query)
            else:
                self._hub_route(segments, query, body)
        except _HttpError as error:
            self._send_http_error(error)

    do_HEAD = do_POST = do_GET

    def _hub_route(self, segments: list[str], query: dict[str, list[str]], body: bytes) -> None:
        method = self.command
        if segments[:2] == ["api", "models"] and len(segments) >= 4:
            repo_id, rest = f"{segments[2]}/{segments[3]}", segments[4:]
            if not rest and method in ("GET", "HEAD"):
                return self._model_info(repo_id, "main", query)
            if len(rest) >= 2 and rest[0] == "revision" and method in ("GET", "HEAD"):
                return self._model_info(repo_id, "/".join(rest[1:]), query)
            if len(rest) >= 2 and rest[0] == "tree" and method in ("GET", "HEAD"):
                return self._tree(repo_id, rest[1], "/".join(rest[2:]).strip("/"), query)
            if len(rest) >= 2 and rest[0] == "paths-info" and method == "POST":
                return self._paths_info(repo_id, "/".join(rest[1:]), body)
        if len(segments) >= 5 and segments[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(f"{segments[0]}/{segments[1]}", segments[3], "/".join(segments[4:]))
        raise _HttpError(404, None, "Sorry, we can't find the page you are looking for.")

    def _open(self, repo_id: str, revision: str, *, content: bool) -> tuple[_Repo, _Commit]:
        """The repo and commit, once the caller's token allows it; raises the Hub's errors otherwise."""
        authorization = self.headers.get("Authorization")
        authenticated = authorization is not None
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or token.strip() not in self.hub.tokens:
                raise _HttpError(401, None, "Invalid credentials in Authorization header")
        repo, commit = self.hub._lookup(repo_id, revision)
        if repo is None or (repo.private and not authenticated):
            raise _HttpError(404 if authenticated else 401, "RepoNotFound", "Repository not found")
        if repo.gated and content and not authenticated:
            raise _HttpError(
                401,
                "GatedRepo",
                f"Access to model {repo_id} is restricted. You must have access to it and be authenticated"
                " to access it. Please log in.",
            )
        if commit is None:
            raise _HttpError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return repo, commit

    def _model_info(self, repo_id: str, revision: str, query: dict[str, list[str]]) -> None:
        repo, commit = self._open(repo_id, revision, content=False)
        with_blobs = _flag(query, "blobs")
        siblings = []
        for entry in commit.files:
            sibling: dict[str, Any] = {"rfilename": entry.path}
            if with_blobs:
                sibling.update(size=entry.size, blobId=entry.oid)
                if entry.is_lfs:
                    sibling["lfs"] = {
                        "sha256": entry.sha256,
                        "size": entry.size,
                        "pointerSize": entry.pointer_size,
                    }
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.partition("/")[0],
            "sha": commit.sha,
            "lastModified": _iso(commit.date),
            "createdAt": _iso(repo.created),
            "private": repo.private,
            "disabled": False,
            "gated": "auto" if repo.gated else False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "spaces": [],
            "usedStorage": sum(e.size for e in commit.files),
        }
        expand = query.get("expand", []) + query.get("expand[]", [])
        if expand:
            info = {key: value for key, value in info.items() if key in expand or key in ("_id", "id")}
        self._send_json(200, info)

    def _tree(self, repo_id: str, revision: str, path: str, query: dict[str, list[str]]) -> None:
        repo, commit = self._open(repo_id, revision, content=False)
        if path and (path not in commit.entries or not commit.entries[path].is_dir):
            raise _HttpError(404, "EntryNotFound", f'{path} does not exist on "{revision}"')
        listing = commit.listing(path, _flag(query, "recursive"))
        try:
            start = int(base64.urlsafe_b64decode(query["cursor"][-1]).decode()) if "cursor" in query else 0
        except ValueError:
            raise _HttpError(400, None, "Invalid cursor") from None
        end = start + self.hub.page_size
        headers = {}
        if end < len(listing):
            params = [(k, v) for k, v in parse_qsl(urlsplit(self.path).query) if k != "cursor"]
            params.append(("cursor", base64.urlsafe_b64encode(str(end).encode()).decode()))
            host = self.headers.get("Host") or urlsplit(self.hub.url).netloc
            next_url = f"http://{host}{urlsplit(self.path).path}?{urlencode(params)}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        expand = _flag(query, "expand")
        self._send_json(200, [_entry_json(e, repo, expand) for e in listing[start:end]], headers)

    def _paths_info(self, repo_id: str, revision: str, body: bytes) -> None:
        repo, commit = self._open(repo_id, revision, content=False)
        if "json" in (self.headers.get("Content-Type") or ""):
            payload = json.loads(body or b"{}")
            paths, expand = list(payload.get("paths", [])), bool(payload.get("expand", False))
        else:
            form = parse_qs(body.decode())
            paths, expand = form.get("paths", []), _flag(form, "expand")
        found = [commit.entries[p.strip("/")] for p in paths if p.strip("/") in commit.entries]
        self._send_json(200, [_entry_json(e, repo, expand) for e in found])

    def _resolve(self, repo_id: str, revision: str, path: str) -> None:
        _, commit = self._open(repo_id, revision, content=True)
        entry = commit.entries.get(path)
        if entry is None or entry.is_dir:
            raise _HttpError(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit.sha})
        self.content_file = path
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{entry.oid}"', "Accept-Ranges": "bytes"}
        if not entry.is_lfs:
            return self._send_content(entry, headers)
        location = self.hub._sign(entry)
        headers.update(
            {"Location": location, "X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)}
        )
        self._send_bytes(
            302, f"Found. Redirecting to {location}".encode(), "text/plain; charset=utf-8", headers
        )

    def _cdn(self, segments: list[str], query: dict[str, list[str]]) -> None:
        if self.command not in ("GET", "HEAD") or len(segments) != 2 or segments[0] != "cdn":
            return self._send_s3_error(404, "NoSuchKey", "The specified key does not exist.")
        signature = query.get("X-Amz-Signature", [None])[-1]
        grant = self.hub._grant(signature)
        if signature is None:
            return self._send_s3_error(403, "AccessDenied", "Request is missing a signature.")
        if grant is None or grant.entry.sha256 != segments[1]:
            return self._send_s3_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        if time.time() > grant.expires:
            return self._send_s3_error(403, "AccessDenied", "Request has expired")
        self.content_file = grant.entry.path
        disposition = query.get("response-content-disposition", ["attachment"])[-1]
        headers = {
            "ETag": f'"{grant.entry.sha256}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": disposition,
        }
        self._send_content(grant.entry, headers)

    def _send_s3_error(self, status: int, code: str, message: str) -> None:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
        ).encode()
        self._send_bytes(status, body, "application/xml")

    def _send_content(self, entry: _Entry, headers: dict[str, str]) -> None:
        """Serve a file's bytes (or one range of them), applying any matching fault on GET."""
        assert entry.disk is not None
        try:
            byte_range = _parse_range(self.headers.get("Range"), entry.size)
        except _Unsatisfiable:
            return self._send_json(
                416, {"error": "Requested Range Not Satisfiable"}, {"Content-Range": f"bytes */{entry.size}"}
            )
        start, end = byte_range or (0, entry.size)
        fault = self.hub.faults.take(entry.path) if self.command == "GET" else None
        if fault is not None and fault.kind in ("rate_limit", "server_error"):
            return self._send_fault_status(fault)
        self.send_response(206 if byte_range else 200)
        for name, value in headers.items():
            self.send_header(name, value)
        if byte_range:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{entry.size}")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(entry.disk, "rb") as source:
            source.seek(start)
            self._stream(source, end - start, fault)


# ----------------------------------------------------------------------------------------- the proxy

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)


class FaultProxy(_Service):
    """A loopback reverse proxy that forwards requests unchanged (Host included) and injects faults.

    Fault patterns match the URL path without query; they apply to GET responses with a 2xx status.
    Accounting counts the body bytes of those responses, keyed by URL path.
    """

    def __init__(self, upstream: str) -> None:
        super().__init__()
        parts = urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        self.upstream = upstream.rstrip("/")
        self._upstream_address = (parts.hostname, parts.port or 80)
        self._server: _Server | None = None

    def start(self) -> Self:
        self._server = self._serve(_ProxyHandler, "proxy")
        return self

    @property
    def url(self) -> str:
        """The proxy's address, `http://127.0.0.1:PORT`: the endpoint clients should use."""
        if self._server is None:
            raise RuntimeError("FaultProxy is not started")
        return self._server.url


class _ProxyHandler(_Handler):
    """Forwards one request to the upstream and relays the answer through the fault machinery."""

    @property
    def proxy(self) -> FaultProxy:
        service = self.server.service
        assert isinstance(service, FaultProxy)
        return service

    def do_GET(self) -> None:
        self.content_file = urlsplit(self.path).path
        upstream = http.client.HTTPConnection(*self.proxy._upstream_address)
        try:
            try:
                self._send_request(upstream)
                response = upstream.getresponse()
            except (OSError, http.client.HTTPException) as error:
                self.close_connection = True
                return self._send_json(502, {"error": f"upstream unreachable: {error}"})
            try:
                self._relay(response)
            except (OSError, http.client.HTTPException):  # the upstream broke off mid-body
                self.close_connection = True
        finally:
            upstream.close()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _send_request(self, upstream: http.client.HTTPConnection) -> None:
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in self.headers.items():
            if name.lower() not in _HOP_BY_HOP:
                upstream.putheader(name, value)
        if chunked:
            upstream.putheader("Transfer-Encoding", "chunked")
        upstream.putheader("Connection", "close")
        upstream.endheaders()
        if chunked:
            self._relay_chunks(upstream)
        else:
            self._relay_exact(upstream, int(self.headers.get("Content-Length") or 0))

    def _relay_exact(self, upstream: http.client.HTTPConnection, remaining: int) -> None:
        while remaining > 0:
            data = self.rfile.read(min(_CHUNK, remaining))
            if not data:
                raise ConnectionError("client closed the connection mid-body")
            upstream.send(data)
            remaining -= len(data)

    def _relay_chunks(self, upstream: http.client.HTTPConnection) -> None:
        """Pass a chunked request body through byte for byte (trailers included)."""
        while True:
            line = self.rfile.readline(65537)
            upstream.send(line)
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            self._relay_exact(upstream, size + 2)
        while (line := self.rfile.readline(65537)) not in (b"", b"\r\n", b"\n"):
            upstream.send(line)
        upstream.send(line)

    def _relay(self, response: http.client.HTTPResponse) -> None:
        has_body = self.command != "HEAD" and response.status >= 200 and response.status not in (204, 304)
        length_header = response.getheader("Content-Length")
        body: BinaryIO = response
        if has_body and length_header is None:  # chunked or close-delimited upstream body
            data = response.read()
            body, length_header = io.BytesIO(data), str(len(data))
        counted = self.command == "GET" and 200 <= response.status < 300 and has_body
        fault = self.proxy.faults.take(self.content_file or "") if counted else None
        if fault is not None and fault.kind in ("rate_limit", "server_error"):
            response.close()
            return self._send_fault_status(fault)
        self.send_response_only(response.status, response.reason)
        self.log_request(response.status)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        if length_header is not None:
            self.send_header("Content-Length", length_header)
        self.end_headers()
        if has_body:
            self._stream(body, int(length_header or 0), fault, counted=counted)
