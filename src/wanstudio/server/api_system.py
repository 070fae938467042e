"""Everything around the API: live events (WebSocket), health, readiness, metrics, and the web UI."""

from __future__ import annotations

import asyncio
import os
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse, Response

from wanstudio.errors import UnauthorizedError
from wanstudio.observability import METRICS_CONTENT_TYPE, metrics_text
from wanstudio.observability.health import Check, run_checks
from wanstudio.server._http import check_api_key
from wanstudio.server.events import OVERFLOW
from wanstudio.server.state import ServerState, State

router = APIRouter()

STATIC_DIR = resources.files("wanstudio.server") / "static"

_POLICY_VIOLATION, _TRY_AGAIN_LATER = 1008, 1013


@router.websocket("/v1/events")
async def events(websocket: WebSocket) -> None:
    """Every event from now on, as JSON text frames. Browsers, which cannot set headers on a WebSocket,
    may pass the API key as `?api_key=`."""
    state: ServerState = websocket.app.state.wan
    try:
        check_api_key(
            state.settings.api_keys,
            websocket.headers.get("authorization"),
            websocket.query_params.get("api_key"),
        )
    except UnauthorizedError as error:
        await websocket.close(code=_POLICY_VIOLATION, reason=error.message[:120])
        return
    await websocket.accept()
    with state.events.subscribe() as queue:
        closed = asyncio.ensure_future(_until_closed(websocket))
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
                if closed in done:
                    getter.cancel()
                    return
                event = getter.result()
                if event is OVERFLOW:
                    await websocket.close(code=_TRY_AGAIN_LATER, reason="too far behind; reconnect")
                    return
                await websocket.send_json(event)
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            closed.cancel()


async def _until_closed(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends until it disconnects."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


@router.get("/healthz", tags=["system"])
def healthz() -> dict[str, str]:
    """Liveness: the process answers. Reads nothing, writes nothing."""
    return {"status": "ok"}


@router.get("/readyz", tags=["system"])
def readyz(state: State) -> JSONResponse:
    """Readiness: the store is writable with room, the manifest loads, the job database answers, the
    workers run."""
    checks = run_checks(state.settings)
    data_dir = state.settings.data_dir
    checks.append(Check("data_dir_writable", os.access(data_dir, os.W_OK), str(data_dir)))
    try:
        counts = state.store.counts()
        checks.append(Check("job_database", True, f"{sum(counts.values())} jobs", {"jobs": counts}))
    except Exception as exc:  # a broken database is exactly what readiness is for
        checks.append(Check("job_database", False, f"{type(exc).__name__}: {exc}"))
    alive, total = state.queue.workers_alive(), len(state.queue.devices)
    checks.append(
        Check("workers", state.queue.alive(), f"{alive} of {total} running", {"devices": state.queue.devices})
    )
    ready = all(check.ok for check in checks)
    body: dict[str, Any] = {
        "status": "ready" if ready else "not_ready",
        "checks": [c.to_json() for c in checks],
        "hardware": state.hardware.to_json(),
        "devices": state.queue.devices,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", tags=["system"])
def prometheus_metrics(state: State) -> Response:
    return Response(metrics_text(state.registry), media_type=METRICS_CONTENT_TYPE)


@router.get("/", include_in_schema=False)
def web_ui(_request: Request) -> FileResponse:
    return FileResponse(str(STATIC_DIR / "index.html"), media_type="text/html")
