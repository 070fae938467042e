"""HTTP plumbing shared by every route: request ids and access logs, the body limit, API keys, error bodies.

Errors leave the server as `{"error": {"code", "message", "param", "suggestions"}}` (CONTRACT section 8)
with the status of their code (section 7), whatever raised them: our own `WanError`s, FastAPI's request
validation, Starlette's 404/405, or a bug (500 `INTERNAL_ERROR`, logged with its traceback). Each is
counted in `wan_errors_total`.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from typing import Any, Awaitable, Callable, MutableMapping

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from wanstudio.errors import (
    InternalError,
    InvalidParamsError,
    PayloadTooLargeError,
    UnauthorizedError,
    VideoNotFoundError,
    WanError,
)
from wanstudio.observability import correlation, metrics, new_correlation_id

log = logging.getLogger("wanstudio.server")
access_log = logging.getLogger("wanstudio.server.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
FORM_OVERHEAD_BYTES = 1 << 20
"""Room for the other fields and the multipart framing of a create request, above the image limit."""


def error_object(error: WanError) -> dict[str, Any]:
    """The pinned error object, wherever an error is shown: a response, a failed job, a download event
    (with the sources tried, for a download)."""
    document: dict[str, Any] = {
        "code": error.code,
        "message": error.message,
        "param": error.param,
        "suggestions": error.suggestions,
    }
    if error.attempts:
        document["attempts"] = [attempt.to_dict() for attempt in error.attempts]
    return document


def error_body(error: WanError) -> dict[str, Any]:
    return {"error": error_object(error)}


def error_response(error: WanError) -> JSONResponse:
    metrics.error(error.code)
    headers = {"Retry-After": "5"} if error.code in ("QUEUE_FULL", "RATE_LIMIT") else None
    if error.code == "UNAUTHORIZED":
        headers = {"WWW-Authenticate": "Bearer"}
    return JSONResponse(error_body(error), status_code=error.http_status or 500, headers=headers)


async def wan_error_handler(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, WanError)
    return error_response(error)


async def validation_error_handler(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    first = error.errors()[0] if error.errors() else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    param = ".".join(location) or None
    return error_response(
        InvalidParamsError(f"{param or 'request'}: {first.get('msg', 'invalid value')}", param=param)
    )


async def http_error_handler(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    if error.status_code == 404:
        wan_error: WanError = VideoNotFoundError(
            f"no endpoint at {request.url.path}",
            suggestions=["the API lives under /v1 (see GET /v1/models); the UI at /"],
        )
    else:
        wan_error = InvalidParamsError(f"{request.method} {request.url.path}: {error.detail}")
    response = error_response(wan_error)
    response.status_code = error.status_code
    return response


async def unexpected_error_handler(request: Request, error: Exception) -> JSONResponse:
    log.error("unexpected error in %s %s", request.method, request.url.path, exc_info=error)
    return error_response(
        InternalError(
            f"the server failed on {request.method} {request.url.path}: {type(error).__name__}",
            suggestions=["retry; if it persists, report it with the X-Request-ID of this response"],
        )
    )


def check_api_key(keys: tuple[str, ...], authorization: str | None, token: str | None = None) -> None:
    """UNAUTHORIZED unless `keys` is empty or the bearer token (or `token`) is one of them.

    Compares against every key in constant time, so neither the match nor its position leaks through timing.
    """
    if not keys:
        return
    given = token or ""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        given = value.strip() if scheme.lower() == "bearer" else ""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given.encode(), key.encode())
    if not matched:
        raise UnauthorizedError(
            "a valid API key is required: send the header Authorization: Bearer <key>"
            if not given
            else "the API key is not valid",
            suggestions=[
                "ask the server's operator for a key (WAN_API_KEYS)",
                "the openai client sends it as api_key=...",
            ],
        )


class RequestContext:
    """ASGI middleware: a request id for each request (the client's `X-Request-ID` when well formed), set as
    the correlation id of everything the request logs and echoed back; one access log line per request;
    and a cap on request bodies (413 `PAYLOAD_TOO_LARGE` before the body is read when its length is known)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, larger: dict[str, int] | None = None) -> None:
        self.app, self.default_max_body_bytes = app, max_body_bytes
        self.larger = larger or {}  # paths that take bigger bodies (LoRA uploads), with their own cap

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        given = headers.get(REQUEST_ID_HEADER, "")
        request_id = given if _VALID_REQUEST_ID.match(given) else new_correlation_id()
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = {"code": 0}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        with correlation(request_id):
            if scope["type"] == "http":
                limit = self.larger.get(scope["path"], self.default_max_body_bytes)
                length = headers.get("content-length", "")
                if length.isdigit() and int(length) > limit:
                    await self._too_large(limit, scope, receive, send_with_id)
                else:
                    await self.app(scope, self._limited(receive, limit), send_with_id)
            else:
                await self.app(scope, receive, send)
            if scope["type"] == "http" and scope["path"] not in ("/healthz", "/metrics"):
                access_log.info(
                    "%s %s %d",
                    scope["method"],
                    scope["path"],
                    status["code"],
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status["code"],
                        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                        "client": (scope.get("client") or ("", 0))[0],
                    },
                )

    @staticmethod
    def _limited(receive: Receive, limit: int) -> Receive:
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge()
            return message

        return limited_receive

    @staticmethod
    async def _too_large(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        error = PayloadTooLargeError(
            f"the request body is over {limit} bytes",
            suggestions=["send a smaller image (WAN_MAX_UPLOAD_BYTES on the server sets the limit)"],
        )
        await error_response(error)(scope, receive, send)


class _BodyTooLarge(PayloadTooLargeError):
    def __init__(self) -> None:
        super().__init__(
            "the request body is too large",
            suggestions=["send a smaller image (WAN_MAX_UPLOAD_BYTES on the server sets the limit)"],
        )
