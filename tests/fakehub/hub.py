"""`FakeHub`: the fake Hugging Face Hub and its LFS CDN, with the request handler that routes both.

The protocol it implements is described in the package docstring (`fakehub/__init__.py`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlencode, urlsplit

from ._repo import (
    _check_repo_path,
    _Commit,
    _Entry,
    _git_blob_id,
    _Grant,
    _lfs_pointer,
    _Repo,
    _StoredFile,
    _tree_ids,
)
from ._service import _Handler, _HttpError, _parse_range, _Server, _Service, _Unsatisfiable

__all__ = ["LFS_SUFFIXES", "FakeHub"]

LFS_SUFFIXES = (".safetensors", ".bin", ".pt")
"""Files with these suffixes are LFS files whatever their size."""

_FAKE_ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"  # AWS's documented example key id: clearly not a credential


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _flag(values: Mapping[str, list[str]], name: str) -> bool:
    return values.get(name, ["false"])[-1].lower() in ("1", "true")


class FakeHub(_Service):
    """A fake Hugging Face Hub (and its LFS CDN) on loopback; see the package docstring for the protocol."""

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
