"""What FakeHub and FaultProxy share: request accounting, the threaded loopback servers, the base handler.

`RequestRecord` and `_Stats` keep the accounting; `_Server` runs a `ThreadingHTTPServer` in a daemon thread;
`_Service` is the base of FakeHub and FaultProxy (servers, fault plan, throttle, stats); `_Handler` is the
HTTP/1.1 keep-alive handler that records requests and writes bodies with faults and throttle applied.
`_HttpError` and `_parse_range` serve the handlers' error answers and single-range requests.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO, Self

from .faults import Fault, FaultPlan

__all__ = ["RequestRecord"]

_CHUNK = 1 << 20  # body copy size when bytes go through Python (faults, throttle, proxy)
_SENDFILE_CHUNK = 64 << 20  # bytes per os.sendfile call: accounting granularity of the fast path
_SETTLE_TIMEOUT = 0.5  # how long a stats read waits for in-progress socket writes to be counted
_CORRUPT_SPAN = 16  # bytes inverted by a "corrupt" fault, from the middle of the body


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
