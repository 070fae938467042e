"""The FastAPI application factory: settings in, app out; the workers start with the app, not at import."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from wanstudio.config import Settings
from wanstudio.engine import Engine
from wanstudio.errors import WanError
from wanstudio.server import api_loras, api_models, api_system, api_videos
from wanstudio.server._http import (
    FORM_OVERHEAD_BYTES,
    RequestContext,
    http_error_handler,
    unexpected_error_handler,
    validation_error_handler,
    wan_error_handler,
)
from wanstudio.server.jobs import EngineFactory
from wanstudio.server.state import ServerState


def create_app(settings: Settings | None = None, *, engine_factory: EngineFactory = Engine) -> FastAPI:
    """The `wan serve` application for `settings` (default: from the environment).

    Nothing starts until the app does (its lifespan): then the job database opens, interrupted jobs are
    recovered, the models on disk are size-checked and the workers start; they stop with the app.
    """
    from wanstudio import __version__

    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await run_in_threadpool(ServerState.start, settings, engine_factory)
        app.state.wan = state
        try:
            yield
        finally:
            await run_in_threadpool(state.stop)

    app = FastAPI(
        title="wanstudio",
        version=__version__,
        summary="WAN 2.2 video generation behind an OpenAI-compatible Videos API.",
        lifespan=lifespan,
    )
    # An image may come inline as base64 in JSON, a third larger than the file itself.
    app.add_middleware(
        RequestContext,
        max_body_bytes=settings.max_upload_bytes * 4 // 3 + FORM_OVERHEAD_BYTES,
        larger={"/v1/loras": settings.max_lora_bytes + FORM_OVERHEAD_BYTES},
    )
    app.add_exception_handler(WanError, wan_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
    app.include_router(api_videos.router)
    app.include_router(api_models.router)
    app.include_router(api_loras.router)
    app.include_router(api_system.router)
    app.mount("/static", StaticFiles(directory=str(api_system.STATIC_DIR)), name="static")
    return app
