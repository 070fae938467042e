"""`wan serve`: run the HTTP API and web UI (CONTRACT section 8) until Ctrl-C or SIGTERM."""

from __future__ import annotations

import typer

from wanstudio.cli._output import reporting
from wanstudio.config import Settings


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; 0.0.0.0 exposes it to the network."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port (0 picks a free one)."),
) -> None:
    """Serve the OpenAI-compatible video API, live events and the web UI at http://HOST:PORT/."""
    import logging

    from wanstudio.cli._logging import configure_logging

    with reporting("wan.serve/1", False):
        settings = Settings.from_env()
        settings.require_models_root()
        configure_logging(settings.log_level or "INFO", settings.log_format or "json")
        import uvicorn

        from wanstudio.server.app import create_app

        app = create_app(settings)
        if host not in ("127.0.0.1", "localhost", "::1") and not settings.api_keys:
            logging.getLogger("wanstudio.server").warning(
                "listening on %s without API keys: anyone who can reach this port can use it (set WAN_API_KEYS)", host)
        uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, ws="websockets-sansio",
                    timeout_graceful_shutdown=10)
