"""What a running server holds, built when it starts (never at import time), and how routes reach it."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Iterator

from fastapi import Depends, Request

from wanstudio.config import Settings
from wanstudio.orchestrator.orchestrator import Orchestrator
from wanstudio.server._http import check_api_key
from wanstudio.server.downloads import DownloadManager
from wanstudio.server.events import EventHub
from wanstudio.server.jobs import EngineFactory, JobQueue
from wanstudio.server.jobstore import JobStore

if TYPE_CHECKING:
    from wanstudio.engine.hardware import HardwareInfo
    from wanstudio.engine.info import Fit
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

log = logging.getLogger("wanstudio.server")


@dataclass
class ServerState:
    settings: Settings
    orchestrator: Orchestrator
    store: JobStore
    events: EventHub
    queue: JobQueue
    downloads: DownloadManager
    registry: "CollectorRegistry"
    hardware: "HardwareInfo"  # probed once at start-up (probing creates a CUDA context on every GPU)
    _fits: "list[Fit] | None" = None

    @classmethod
    def start(cls, settings: Settings, engine_factory: EngineFactory) -> "ServerState":
        """Open the job database, start the workers, and check the models on disk."""
        from wanstudio.engine.hardware import probe
        from wanstudio.observability import create_registry

        settings.require_models_root()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(settings.data_dir, 0o700)  # prompts, uploads and videos are the user's own
        orchestrator = Orchestrator(settings)
        orchestrator.manifest  # a bad manifest stops the start-up with its own error
        events = EventHub()
        store = JobStore(settings.data_dir / "jobs.sqlite3")
        queue = JobQueue(settings, store, events, engine_factory=engine_factory)
        registry = create_registry(models_root=settings.models_root)
        registry.register(_JobsCollector(store, queue, events))
        state = cls(
            settings,
            orchestrator,
            store,
            events,
            queue,
            DownloadManager(orchestrator, events),
            registry,
            probe(),
        )
        _check_models(orchestrator)
        queue.start()
        log.info(
            "serving jobs from %s with %d worker(s) on %s",
            settings.data_dir,
            len(queue.devices),
            ", ".join(queue.devices),
        )
        return state

    def fits(self, device: str) -> "list[Fit]":
        """What fits this machine on `device` (`wan doctor`'s table), from the start-up probe, computed once."""
        if self._fits is None:
            from wanstudio.engine.info import what_fits

            self._fits = what_fits(self.orchestrator, self.hardware, device)
        return self._fits

    def stop(self) -> None:
        self.queue.stop()
        self.store.close()


def _check_models(orchestrator: Orchestrator) -> None:
    """Size-check every committed variant once at start-up, so that a damaged model is reported before a
    job trips on it (a deep sha256 check stays `wan models check --deep`)."""
    for status in orchestrator.statuses():
        if status.state == "corrupt":  # (partial is an unfinished download: the next ensure resumes it)
            log.warning(
                "%s [%s] is corrupt on disk: repair it with `wan models ensure --only %s --variant %s --force`",
                status.id,
                status.variant,
                status.id,
                status.variant,
            )


class _JobsCollector:
    """`wan_jobs{status}`, `wan_queue_length`, `wan_workers_alive`, `wan_event_subscribers`, read at scrape."""

    def __init__(self, store: JobStore, queue: JobQueue, events: EventHub) -> None:
        self.store, self.queue, self.events = store, queue, events

    def describe(self) -> Iterator["Metric"]:
        return iter(self._families(None))

    def collect(self) -> Iterator["Metric"]:
        return iter(self._families(self.store.counts()))

    def _families(self, counts: dict[str, int] | None) -> list[Any]:
        from prometheus_client.core import GaugeMetricFamily

        jobs = GaugeMetricFamily("wan_jobs", "Jobs in the server's database, by status.", labels=["status"])
        length = GaugeMetricFamily("wan_queue_length", "Jobs waiting for a worker.")
        workers = GaugeMetricFamily(
            "wan_workers_alive", "Worker threads running (one per GPU, one on a CPU)."
        )
        subscribers = GaugeMetricFamily("wan_event_subscribers", "WebSocket clients connected to /v1/events.")
        if counts is not None:
            for status, count in counts.items():
                jobs.add_metric([status], count)
            length.add_metric([], counts["queued"])
            workers.add_metric([], self.queue.workers_alive())
            subscribers.add_metric([], self.events.subscriber_count)
        return [jobs, length, workers, subscribers]


# The dependencies are `async def` on purpose: they do no I/O, and a plain `def` would make FastAPI hop to
# its thread pool for each, waiting for the GIL behind a generating worker every time (docs/benchmarks.md).
async def _state(request: Request) -> ServerState:
    return request.app.state.wan  # type: ignore[no-any-return]


State = Annotated[ServerState, Depends(_state)]


async def require_api_key(request: Request) -> None:
    """The dependency of every /v1 route: a valid `Authorization: Bearer` key when WAN_API_KEYS is set."""
    check_api_key(request.app.state.wan.settings.api_keys, request.headers.get("authorization"))
