"""`wan models health` and `wan models serve-metrics`: is the store usable, and what it has been doing."""

from __future__ import annotations

import sys
import threading

import typer

from wanstudio.cli._output import EXIT_INCOMPLETE, emit_json, reporting
from wanstudio.cli.models import models_app
from wanstudio.config import Settings
from wanstudio.errors import InvalidParamsError


@models_app.command("health")
def health(
    sources: bool = typer.Option(False, "--sources", help="Also check that each configured source answers (network)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Check, without changing anything, that models can be ensured here: MODELS_ROOT set and writable,
    free space, a valid manifest and, with --sources, reachable sources. Exit 3 when a check fails."""
    from wanstudio.observability.health import run_checks

    schema = "wan.models.health/1"
    checks = []
    with reporting(schema, as_json):
        checks = run_checks(Settings.from_env(), sources=sources)
        healthy = all(check.ok for check in checks)
        if as_json:
            emit_json(schema, {"ok": healthy, "checks": [check.to_json() for check in checks]})
        else:
            for check in checks:
                print(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    if not all(check.ok for check in checks):
        raise typer.Exit(EXIT_INCOMPLETE)


@models_app.command("serve-metrics")
def serve_metrics(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(9464, "--port", help="Port to listen on (0 picks a free one, printed at start)."),
) -> None:
    """Serve this process's Prometheus metrics at http://HOST:PORT/metrics until Ctrl-C.

    Metrics are per process: this one exposes the store gauges (bytes stored, bytes free) measured at each
    scrape, and counters that stay at zero unless this process downloads; each `wan models ensure` counts
    in its own process, and `wan serve` exposes its own at /metrics (docs/observability.md)."""
    with reporting("wan.models.serve-metrics/1", False):
        from wanstudio.observability import serve_metrics as start

        if not 0 <= port <= 65535:
            raise InvalidParamsError(f"--port {port} is out of range 0-65535", param="--port")
        try:
            server, _ = start(host, port)
        except OSError as exc:
            raise InvalidParamsError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                param="--port",
                suggestions=["pick another port with --port, or --port 0 for any free one"],
            ) from None
        shown = f"[{host}]" if ":" in host else host
        sys.stderr.write(f"serving metrics on http://{shown}:{server.server_port}/metrics (Ctrl-C to stop)\n")
        sys.stderr.flush()
        try:
            threading.Event().wait()  # until Ctrl-C, or SIGTERM (which the CLI turns into KeyboardInterrupt)
        except KeyboardInterrupt:
            pass
        finally:
            server.shutdown()
            server.server_close()
