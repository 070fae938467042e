"""`wan serve`: an OpenAI-compatible Videos API with a persistent job queue, live events and a web UI.

Layout: `app` (the factory), `api_videos`, `api_models`, `api_system` (routes), `state` (what a running
server holds), `jobs` and `jobstore` (the queue, its workers and its SQLite table), `events` (WebSocket
fan-out), `downloads` (model download events), `video_request` and `video_object` (the OpenAI shapes),
`_http` (request ids, access logs, body limit, API keys, error bodies), `static/` (the web UI).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["create_app"]


def create_app(*args: Any, **kwargs: Any) -> "FastAPI":
    """See `wanstudio.server.app.create_app` (imported on call: FastAPI and the engine load with it)."""
    from wanstudio.server.app import create_app as factory

    return factory(*args, **kwargs)
