"""Loopback HTTP servers standing in for the Hugging Face Hub and for S3, with fault injection.

Tests and benchmarks must never reach the network, yet the downloader has to be exercised against the
real wire protocol. This package provides:

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

Modules: `faults` (`Fault`, `FaultPlan`), `_service` (accounting, the threaded loopback servers, the base
handler that writes bodies with faults and throttle, range parsing, HTTP errors), `_repo` (FakeHub's git-like
repo model and git ids), `hub` (`FakeHub` and its handler), `proxy` (`FaultProxy` and its handler). Import
from the package: `from fakehub import FakeHub, FaultProxy, FaultPlan, ...`.
"""

from __future__ import annotations

from ._service import RequestRecord
from .faults import Fault, FaultPlan
from .hub import LFS_SUFFIXES, FakeHub
from .proxy import FaultProxy

__all__ = ["LFS_SUFFIXES", "FakeHub", "Fault", "FaultPlan", "FaultProxy", "RequestRecord"]
