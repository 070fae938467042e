"""Prometheus exposition: collectors over `Metrics` and the store, registries, text, and an HTTP endpoint.

This is the only module that imports prometheus_client, and nothing imports it until something asks for
metrics (a scrape, `metrics_text()`, `wan models serve-metrics`), so recording stays free of it.

Metrics live on registries of our own, never on prometheus_client's global default: a test, the CLI's
`serve-metrics` and the future HTTP server each build or take the registry they expose, and no library
that registers on the default registry leaks into ours.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from wanstudio.observability._metrics import SPECS, Metrics, Snapshot, metrics

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

RootFinder = Callable[[], "Path | None"]

_registry: "CollectorRegistry | None" = None
_registry_lock = threading.Lock()


def models_root_from_env() -> Path | None:
    """MODELS_ROOT as the settings read it now, or None when unset or when the settings are invalid."""
    from wanstudio.config import Settings
    from wanstudio.errors import WanError

    try:
        return Settings.from_env().models_root
    except WanError:
        return None


class OrchestratorCollector:
    """Counters and histograms recorded into a `Metrics`, exposed as they stand at scrape time."""

    def __init__(self, source: Metrics) -> None:
        self.source = source

    def collect(self) -> Iterator["Metric"]:
        return self._families(self.source.snapshot())

    def describe(self) -> Iterator["Metric"]:
        """The families without samples: lets a registry check names without taking a snapshot."""
        return self._families(None)

    def _families(self, snapshot: Snapshot | None) -> Iterator["Metric"]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        for spec in SPECS:
            if spec.kind == "counter":
                counter = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
                for labels, value in sorted(snapshot.counters[spec.name].items()) if snapshot else ():
                    counter.add_metric(list(labels), value)
                yield counter
            else:
                histogram = HistogramMetricFamily(spec.name, spec.help, labels=spec.labels)
                for labels, observed in sorted(snapshot.histograms[spec.name].items()) if snapshot else ():
                    histogram.add_metric(list(labels), observed.cumulative(spec.buckets), observed.sum)
                yield histogram


class StoreCollector:
    """`wan_store_bytes` and `wan_store_free_bytes`, measured on disk at scrape time.

    Store bytes are the space allocated to `.wan/blobs` (blocks, not apparent sizes): every file of every
    variant is a hard link to a blob, so this is what the models take on disk, each shared file once.
    Free bytes are what an unprivileged process may still write on the filesystem of MODELS_ROOT.
    Without a MODELS_ROOT (or when it does not exist yet) the gauges have no sample.
    """

    def __init__(self, root: RootFinder) -> None:
        self.root = root

    def describe(self) -> Iterator["Metric"]:
        """The two gauges without samples: no disk is read when the collector is registered."""
        return iter(self._gauges())

    def collect(self) -> Iterator["Metric"]:
        stored, free = self._gauges()
        root = self.root()
        if root is not None and root.is_dir():
            stored.add_metric([], allocated_bytes(root / ".wan" / "blobs"))
            stat = os.statvfs(root) if hasattr(os, "statvfs") else None
            if stat is not None:
                free.add_metric([], stat.f_bavail * stat.f_frsize)
            else:  # pragma: no cover - Windows
                import shutil

                free.add_metric([], shutil.disk_usage(root).free)
        yield stored
        yield free

    @staticmethod
    def _gauges() -> "tuple[GaugeMetricFamily, GaugeMetricFamily]":
        from prometheus_client.core import GaugeMetricFamily

        return (
            GaugeMetricFamily("wan_store_bytes", "Bytes allocated on disk to the blob store under MODELS_ROOT."),
            GaugeMetricFamily("wan_store_free_bytes", "Bytes free for wanstudio on the filesystem of MODELS_ROOT."),
        )


def allocated_bytes(folder: Path) -> int:
    """Bytes allocated to the files under `folder` (st_blocks where the OS reports them, else sizes)."""
    total = 0
    pending = [str(folder)]
    while pending:
        try:
            entries = os.scandir(pending.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        stat = entry.stat(follow_symlinks=False)
                        total += stat.st_blocks * 512 if hasattr(stat, "st_blocks") else stat.st_size
                except OSError:
                    continue  # removed while we walked (gc, a commit): it is simply not counted
    return total


def create_registry(
    *, source: Metrics | None = None, models_root: "Path | RootFinder | None" = models_root_from_env,
    process: bool = True,
) -> "CollectorRegistry":
    """A new registry exposing `source` (default: this process's `metrics`), the store gauges for
    `models_root` (a path, a function giving one at scrape time, or None for no store gauges) and, with
    `process`, the standard `process_*` metrics (memory, CPU, open files)."""
    from prometheus_client import CollectorRegistry, ProcessCollector

    registry = CollectorRegistry()
    registry.register(OrchestratorCollector(source or metrics))
    if models_root is not None:
        finder: RootFinder = (lambda: models_root) if isinstance(models_root, Path) else models_root
        registry.register(StoreCollector(finder))
    if process:
        ProcessCollector(registry=registry)
    return registry


def registry() -> "CollectorRegistry":
    """This process's registry (created on first use): what `metrics_text()` and serve-metrics expose."""
    global _registry
    with _registry_lock:
        if _registry is None:
            _registry = create_registry()
        return _registry


def metrics_text(target: "CollectorRegistry | None" = None) -> str:
    """The Prometheus text exposition (format 0.0.4) of `target`, by default this process's registry:
    what an HTTP `/metrics` returns, with the content type `METRICS_CONTENT_TYPE`."""
    from prometheus_client import generate_latest

    return generate_latest(target or registry()).decode("utf-8")


def serve_metrics(host: str, port: int, target: "CollectorRegistry | None" = None) -> "tuple[WSGIServer, threading.Thread]":
    """Serve `target` (default: this process's registry) at http://host:port/metrics on a daemon thread.

    Port 0 picks a free port: read it from `server.server_port`. Stop with `server.shutdown()`.
    """
    from prometheus_client import start_http_server

    return start_http_server(port, addr=host, registry=target or registry())
