"""Observability: structured logs with correlation ids and secret masking, Prometheus metrics, health checks.

What it offers (docs/observability.md describes the output):

- `correlation(id=None)`: a context manager giving everything logged inside it one correlation id;
  `ContextThreadPoolExecutor` carries the id into worker threads.
- `JsonFormatter`, `TextFormatter`: log lines with the correlation id, masked of secrets.
- `metrics`: where this process records (`metrics.retry(source, reason)`, ...); cheap, imports nothing.
- `metrics_text()`, `registry()`, `create_registry()`, `serve_metrics()`: Prometheus exposition. These
  import prometheus_client when called, never before, so that a warm `wan models ensure` never pays for it.
- `wanstudio.observability.health`: the checks behind `wan models health` (imported on its own).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wanstudio.observability._context import ContextThreadPoolExecutor, correlation, correlation_id, new_correlation_id
from wanstudio.observability._logs import JsonFormatter, TextFormatter
from wanstudio.observability._metrics import LockKind, Metrics, RetryReason, metrics

if TYPE_CHECKING:
    from threading import Thread
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.registry import CollectorRegistry

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The content type of `metrics_text()` (the Prometheus text format 0.0.4) for an HTTP `/metrics`."""

__all__ = [
    "METRICS_CONTENT_TYPE",
    "ContextThreadPoolExecutor",
    "JsonFormatter",
    "LockKind",
    "Metrics",
    "RetryReason",
    "TextFormatter",
    "correlation",
    "correlation_id",
    "create_registry",
    "metrics",
    "metrics_text",
    "new_correlation_id",
    "registry",
    "serve_metrics",
]


def metrics_text(target: "CollectorRegistry | None" = None) -> str:
    """The Prometheus text exposition of `target` (default: this process's registry); see _prometheus.py."""
    from wanstudio.observability import _prometheus

    return _prometheus.metrics_text(target)


def registry() -> "CollectorRegistry":
    """This process's registry: the metrics recorded in `metrics`, the store gauges, `process_*`."""
    from wanstudio.observability import _prometheus

    return _prometheus.registry()


def create_registry(**options: Any) -> "CollectorRegistry":
    """A new registry of our own (options: `source`, `models_root`, `process`; see _prometheus.py)."""
    from wanstudio.observability import _prometheus

    return _prometheus.create_registry(**options)


def serve_metrics(host: str, port: int, target: "CollectorRegistry | None" = None) -> "tuple[WSGIServer, Thread]":
    """Serve `target` (default: this process's registry) at http://host:port/metrics on a daemon thread."""
    from wanstudio.observability import _prometheus

    return _prometheus.serve_metrics(host, port, target)
