"""`FaultProxy`: a fault-injecting reverse proxy on loopback, in front of any HTTP server (e.g. moto's S3)."""

from __future__ import annotations

import http.client
import io
from typing import BinaryIO, Self
from urllib.parse import urlsplit

from ._service import _CHUNK, _Handler, _Server, _Service

__all__ = ["FaultProxy"]

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
