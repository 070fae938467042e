"""Model downloads seen from the server: `model.download.*` events with bytes, rate and ETA.

Downloads happen in two ways, reported alike: a job whose model is missing ensures it first (the
engine forwards the orchestrator's progress), and `POST /v1/models/{id}/ensure` starts one on its own
thread. The orchestrator already makes concurrent ensures of one variant download it once; here a second
request for a download in flight only gets told it is running.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from wanstudio.errors import InternalError, WanError
from wanstudio.observability import correlation
from wanstudio.orchestrator.orchestrator import DownloadProgress, Orchestrator
from wanstudio.server._http import error_object
from wanstudio.server.events import EventHub

log = logging.getLogger("wanstudio.server")

PROGRESS_INTERVAL_SECONDS = 0.25
"""At most this often a download reports progress: enough for a smooth bar, little for a busy socket."""


class DownloadReporter:
    """Turns one ensure's `DownloadProgress` reports into throttled events with a rate and an ETA."""

    def __init__(self, events: EventHub, model: str, variant: str) -> None:
        self.events, self.model, self.variant = events, model, variant
        self.started = time.monotonic()
        self._last_emit = 0.0
        self._first_bytes: tuple[float, int] | None = None
        self.latest: dict[str, Any] | None = None

    def progress(self, report: DownloadProgress) -> dict[str, Any] | None:
        """Record `report`; returns the event data when one was published (None when throttled)."""
        now = time.monotonic()
        if self._first_bytes is None:
            self._first_bytes = (now, report.bytes_done)  # bytes already on disk (a resume) are not the rate
        since, base = self._first_bytes
        rate = (report.bytes_done - base) / (now - since) if now > since else 0.0
        remaining = max(report.bytes_total - report.bytes_done, 0)
        data = {
            "model": self.model,
            "variant": self.variant,
            "file": report.file,
            "bytes_done": report.bytes_done,
            "bytes_total": report.bytes_total,
            "files_done": report.files_done,
            "files_total": report.files_total,
            "rate_bytes_per_second": round(rate, 1),
            "eta_seconds": round(remaining / rate, 1) if rate > 0 else None,
            "error": None,
        }
        self.latest = data
        finished = report.bytes_total and report.bytes_done >= report.bytes_total
        if now - self._last_emit < PROGRESS_INTERVAL_SECONDS and not finished:
            return None
        self._last_emit = now
        self.events.publish("model.download.progress", data)
        return data

    def completed(self, bytes_downloaded: int) -> None:
        data = {**(self.latest or self._empty()), "eta_seconds": 0, "bytes_downloaded": bytes_downloaded}
        self.events.publish("model.download.completed", data)

    def failed(self, error: WanError) -> None:
        self.events.publish(
            "model.download.failed", {**(self.latest or self._empty()), "error": error_object(error)}
        )

    def _empty(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "variant": self.variant,
            "file": None,
            "bytes_done": 0,
            "bytes_total": 0,
            "files_done": 0,
            "files_total": 0,
            "rate_bytes_per_second": 0.0,
            "eta_seconds": None,
            "error": None,
        }


class DownloadManager:
    """Runs `POST /v1/models/{id}/ensure` downloads, one thread per variant being fetched."""

    def __init__(self, orchestrator: Orchestrator, events: EventHub) -> None:
        self.orchestrator, self.events = orchestrator, events
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str], DownloadReporter] = {}

    def start(self, model_id: str, variant: str | None, request_id: str | None) -> dict[str, Any]:
        """Start fetching a variant (MODEL_NOT_FOUND at once for a bad id); returns what is happening."""
        model, chosen = self.orchestrator.resolve(model_id, variant)
        key = (model.id, chosen.name)
        with self._lock:
            running = self._running.get(key)
            if running is None:
                if self.orchestrator.status(model.id, chosen.name).state == "complete":
                    return self._answer(model.id, chosen.name, "complete")
                running = self._running[key] = DownloadReporter(self.events, model.id, chosen.name)
                thread = threading.Thread(
                    target=self._run,
                    args=(running, request_id),
                    daemon=True,
                    name=f"ensure {model.id} [{chosen.name}]",
                )
                thread.start()
                return self._answer(model.id, chosen.name, "started")
        return self._answer(model.id, chosen.name, "running", running.latest)

    def running(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._answer(m, v, "running", r.latest) for (m, v), r in self._running.items()]

    def _run(self, reporter: DownloadReporter, request_id: str | None) -> None:
        with correlation(request_id):
            try:
                result = self.orchestrator.ensure(
                    reporter.model, reporter.variant, progress=reporter.progress
                )
            except WanError as error:
                log.warning("download of %s [%s] failed: %s", reporter.model, reporter.variant, error)
                reporter.failed(error)
            except Exception as exc:  # a bug must still end the download visibly
                log.exception("download of %s [%s] crashed", reporter.model, reporter.variant)
                reporter.failed(
                    InternalError(f"download of {reporter.model} crashed: {type(exc).__name__}: {exc}")
                )
            else:
                reporter.completed(result.bytes_downloaded)
            finally:
                with self._lock:
                    self._running.pop((reporter.model, reporter.variant), None)

    @staticmethod
    def _answer(
        model: str, variant: str, status: str, progress: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return {
            "object": "model.download",
            "model": model,
            "variant": variant,
            "status": status,
            "progress": progress,
        }
