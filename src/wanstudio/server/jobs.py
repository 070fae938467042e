"""The job queue and its workers: one worker thread per GPU (one on a CPU machine), jobs from `JobStore`.

Life of a job: `submit` validates it completely through the engine (nothing is queued that would fail
validation later), stores the decoded input image and the resolved parameters (the seed included, so a
re-run makes the same video), and inserts it as queued. A worker claims the oldest queued job, runs it
with a progress listener and a cancel token, and records the outcome. Files live in
`<data dir>/videos/<job id>/` (ids are checked against their pattern before they name a folder).

Restarts: a job found in progress at start-up was cut off by a crash or a kill; it runs again once
(`MAX_ATTEMPTS`), with a warning saying so, and fails the second time with the reason. On a clean stop the
running job is cancelled at its next step and put back in the queue without counting the attempt.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from wanstudio.config import Settings
from wanstudio.engine import CancelToken, Engine, GenerationProgress, GenerationRequest
from wanstudio.engine.lora import LoraRequest
from wanstudio.errors import GenerationFailedError, InternalError, JobCancelledError, WanError
from wanstudio.observability import correlation, metrics
from wanstudio.server._http import error_object
from wanstudio.server.downloads import DownloadReporter
from wanstudio.server.events import EventHub
from wanstudio.server.jobstore import (
    CANCELLED,
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    QUEUED,
    STATUSES,
    Job,
    JobStore,
    is_job_id,
)
from wanstudio.server.video_object import video_object
from wanstudio.server.video_request import ParsedVideoRequest, as_api_error

log = logging.getLogger("wanstudio.server")

MAX_ATTEMPTS = 2
"""Runs a job gets when the server dies under it: the first interrupted run is retried once."""
SAVE_INTERVAL_SECONDS = 1.0
"""How often a running job's progress is written to the database (events and GETs see every step)."""
EVENT_INTERVAL_SECONDS = 0.1
SWEEP_INTERVAL_SECONDS = 300.0
_SHUTDOWN_REASON = "stopped because the server is shutting down"

EngineFactory = Callable[[Settings], Engine]

# What a job keeps of its GenerationResult (the rest, paths included, stays in the sidecar next to the video).
_RESULT_FIELDS = (
    "metrics",
    "warnings",
    "device",
    "dtype",
    "memory_profile",
    "memory_plan",
    "fallback",
    "mock",
    "loras",
)


class JobQueue:
    """Accepts, runs, cancels and forgets generation jobs; thread-safe."""

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        events: EventHub,
        *,
        engine_factory: EngineFactory = Engine,
        devices: list[str] | None = None,
    ) -> None:
        self.settings, self.store, self.events = settings, store, events
        self.videos_dir = settings.data_dir / "videos"
        self.devices = devices or worker_devices(settings)
        self._engine_factory = engine_factory
        self.validator = engine_factory(settings)  # prepare() only: validation loads no model
        self._live: dict[str, dict[str, Any]] = {}
        self._tokens: dict[str, CancelToken] = {}
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- life cycle ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.videos_dir.mkdir(parents=True, exist_ok=True)
        self._recover()
        self.sweep()
        for index, device in enumerate(self.devices):
            engine_settings = (
                self.settings if device == self.settings.device else replace(self.settings, device=device)
            )
            thread = threading.Thread(
                target=self._work, args=(engine_settings,), daemon=True, name=f"worker-{index}"
            )
            thread.start()
            self._threads.append(thread)
        sweeper = threading.Thread(target=self._sweep_periodically, daemon=True, name="sweeper")
        sweeper.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel running jobs at their next step (they go back in the queue) and wait for the workers."""
        self._stopping.set()
        with self._lock:
            for token in self._tokens.values():
                token.cancel(_SHUTDOWN_REASON)
            self._wakeup.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def workers_alive(self) -> int:
        return sum(thread.is_alive() for thread in self._threads)

    def alive(self) -> bool:
        """Every worker thread is running (readiness)."""
        return bool(self._threads) and self.workers_alive() == len(self._threads)

    # -- requests -----------------------------------------------------------------------------------------------

    def submit(self, parsed: ParsedVideoRequest, request_id: str | None) -> Job:
        """Validate through the engine, store the inputs, queue; INVALID_PARAMS, MODEL_NOT_FOUND, QUEUE_FULL."""
        job_id = f"video_{uuid.uuid4().hex}"
        folder = self.videos_dir / job_id
        prepared = self.validator.prepare(replace(parsed.request, output=folder / "video.mp4"))
        params = {"prompt": prepared.params.prompt, **prepared.params.to_json()}
        params["image"] = prepared.params.image is not None
        params["loras"] = [lora.to_json() for lora in prepared.loras]
        params["memory_profile"] = prepared.memory_profile
        params["allow_fallback"] = prepared.allow_fallback
        job = Job(
            id=job_id,
            status=QUEUED,
            model=prepared.model.id,
            variant=prepared.variant.name,
            created_at=time.time(),
            params=params,
            request_id=request_id,
            warnings=[*parsed.warnings, *prepared.warnings],
        )
        folder.mkdir(parents=True)
        try:
            if prepared.params.image is not None:
                prepared.params.image.save(
                    folder / "input.png"
                )  # the decoded pixels, never the uploaded bytes
            self.store.add(job, max_queued=self.settings.queue_max)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        log.info(
            "queued %s: %s [%s] %sx%s, %d frames, %d steps",
            job.id,
            job.model,
            job.variant,
            params["width"],
            params["height"],
            params["num_frames"],
            params["steps"],
        )
        self.events.publish("video.created", self.video(job))
        with self._lock:
            self._wakeup.notify()
        return job

    def video(self, job: Job) -> dict[str, Any]:
        with (
            self._lock
        ):  # a job cancelled while it runs shows the progress it was cancelled at, not its wind-down
            live = dict(self._live[job.id]) if job.id in self._live and job.status == IN_PROGRESS else None
        return video_object(job, live, self.settings.job_retention)

    def get(self, job_id: str) -> dict[str, Any]:
        return self.video(self.store.get(job_id))

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued job now, a running one at its next step; a finished job is left as it is."""
        job = self.store.get(job_id)
        error = error_object(
            JobCancelledError("cancelled by a client", suggestions=["submit the request again to run it"])
        )
        if job.status in (QUEUED, IN_PROGRESS):
            with self._lock:  # together with `_run`'s check, so that a job claimed just now is stopped too
                live = dict(self._live[job_id]) if job_id in self._live else None
                updated = self.store.finish(
                    job_id, CANCELLED, error=error, only_from=(QUEUED, IN_PROGRESS), progress=live
                )
                token = self._tokens.get(job_id)
            if token is not None:
                token.cancel("cancelled by a client")
            if updated is not None:
                job = updated
                log.info("cancelled %s (was %s)", job_id, "running" if token else "queued")
                self.events.publish("video.cancelled", self.video(job))
        return self.video(job)

    def delete(self, job_id: str) -> dict[str, Any]:
        job = self.store.get(job_id)
        if not job.finished:
            self.cancel(job_id)
        self.store.delete(job_id)
        self._remove_files(job_id)
        log.info("deleted %s", job_id)
        deleted = {"id": job_id, "object": "video.deleted", "deleted": True}
        self.events.publish("video.deleted", deleted)
        return deleted

    def output_path(self, job_id: str) -> Path:
        if not is_job_id(job_id):
            raise ValueError(job_id)
        return self.videos_dir / job_id / "video.mp4"

    # -- the workers --------------------------------------------------------------------------------------------

    def _work(self, engine_settings: Settings) -> None:
        engine = self._engine_factory(engine_settings)
        while not self._stopping.is_set():
            try:
                job = self.store.claim()
            except Exception:
                log.exception("could not read the job queue")
                job = None
            if job is None:
                with self._lock:
                    self._wakeup.wait(timeout=1.0)
                continue
            self._run(engine, job)

    def _run(self, engine: Engine, job: Job) -> None:
        token = CancelToken()
        listener = _JobListener(self, job, token)
        with self._lock:
            self._tokens[job.id] = token
            self._live[job.id] = listener.state
            # A stop or a cancel that came between the claim and now found no token to cancel.
            if self._stopping.is_set():
                token.cancel(_SHUTDOWN_REASON)
            elif (current := self._find(job.id)) is None or current.status != IN_PROGRESS:
                token.cancel("cancelled by a client")
        started = time.monotonic()
        with correlation(job.request_id):
            log.info("running %s (attempt %d): %s [%s]", job.id, job.attempts, job.model, job.variant)
            try:
                result = engine.generate(self._request(job), progress=listener, cancel=token)
            except JobCancelledError:
                if token.reason == _SHUTDOWN_REASON:
                    self.store.requeue(job.id, uncount_attempt=True)
                    log.info("%s goes back in the queue: %s", job.id, _SHUTDOWN_REASON)
                else:
                    self._end(job, CANCELLED, started, error=None)
            except WanError as error:
                log.warning("%s failed: [%s] %s", job.id, error.code, error)
                self._end(job, FAILED, started, error=error)
            except Exception as exc:
                log.exception("%s crashed", job.id)
                self._end(
                    job,
                    FAILED,
                    started,
                    error=InternalError(
                        f"the server failed while running {job.id}: {type(exc).__name__}: {exc}",
                        suggestions=[
                            "see the server log for this job's request id",
                            "submit the request again",
                        ],
                    ),
                )
            else:
                self._end(job, COMPLETED, started, result=result.to_json())
                metrics.steps(job.model, listener.step_seconds)
            finally:
                with self._lock:
                    self._tokens.pop(job.id, None)
                    self._live.pop(job.id, None)

    def _end(
        self,
        job: Job,
        status: str,
        started: float,
        *,
        result: dict[str, Any] | None = None,
        error: WanError | None = None,
    ) -> None:
        if result is not None:
            result = {key: result.get(key) for key in _RESULT_FIELDS}
        if error is not None:
            metrics.error(error.code)
        shown = error_object(as_api_error(error)) if error is not None else None
        updated = self.store.finish(
            job.id, status, result=result, error=shown, progress=self._live.get(job.id)
        )
        metrics.generation(job.model, status, time.monotonic() - started)
        if updated is None:  # cancelled or deleted by a client while it ran: its files are not wanted
            current = self._find(job.id)
            if current is None:
                self._remove_files(job.id)
            elif current.status == CANCELLED:
                self._remove_outputs(job.id)
            return
        log.info("%s %s in %.1f s", job.id, status, time.monotonic() - started)
        self.events.publish(f"video.{status}", self.video(updated))

    def _request(self, job: Job) -> GenerationRequest:
        p = job.params
        folder = self.videos_dir / job.id
        return GenerationRequest(
            model=job.model,
            variant=job.variant,
            prompt=p["prompt"],
            negative_prompt=p["negative_prompt"],
            image=folder / "input.png" if p["image"] else None,
            width=p["width"],
            height=p["height"],
            num_frames=p["num_frames"],
            fps=p["fps"],
            steps=p["steps"],
            guidance_scale=p["guidance_scale"],
            guidance_scale_2=p["guidance_scale_2"],
            flow_shift=p["flow_shift"],
            seed=p["seed"],
            output=folder / "video.mp4",
            memory_profile=p.get("memory_profile"),
            allow_fallback=bool(p.get("allow_fallback")),
            loras=tuple(LoraRequest(**lora) for lora in p.get("loras", ())),
        )

    # -- restarts and retention ---------------------------------------------------------------------------------

    def _recover(self) -> None:
        for job in self.store.with_status(IN_PROGRESS):
            if job.attempts < MAX_ATTEMPTS:
                self.store.requeue(
                    job.id,
                    uncount_attempt=False,
                    warning="the server stopped while this job ran; it was run again from the start",
                )
                log.warning("%s was running when the server stopped; it runs again", job.id)
            else:
                error = GenerationFailedError(
                    f"{job.id} was interrupted {job.attempts} times by the server stopping while it ran",
                    suggestions=[
                        "check the server log for crashes (out of memory?) around this job's request id",
                        "submit the request again, perhaps with a smaller size or fewer frames",
                    ],
                )
                self.store.finish(job.id, FAILED, error=error_object(error))
                log.warning("%s failed: interrupted %d times", job.id, job.attempts)

    def sweep(self) -> None:
        """Forget finished jobs past the retention period, then the oldest past the results size limit."""
        cutoff = time.time() - self.settings.job_retention
        finished = self.store.finished_oldest_first()  # the expired ones come first
        sizes = {job.id: _folder_bytes(self.videos_dir / job.id) for job in finished}
        total = sum(sizes.values())
        for job in finished:
            expired = (job.completed_at or job.created_at) < cutoff
            if not expired and total <= self.settings.results_max_bytes:
                break
            self._forget(
                job.id, "past its retention period" if expired else "the results passed WAN_RESULTS_MAX_BYTES"
            )
            total -= sizes[job.id]
        known = {job.id for job in self.store.with_status(*STATUSES)}
        for folder in self.videos_dir.iterdir() if self.videos_dir.is_dir() else ():
            # A folder with no job was left by a crash between its mkdir and the job's insert.
            if is_job_id(folder.name) and folder.name not in known:
                self._remove_files(folder.name)

    def _forget(self, job_id: str, why: str) -> None:
        self.store.delete(job_id)
        self._remove_files(job_id)
        log.info("removed %s: %s", job_id, why)

    def _sweep_periodically(self) -> None:
        while not self._stopping.wait(SWEEP_INTERVAL_SECONDS):
            try:
                self.sweep()
            except Exception:
                log.exception("sweeping old jobs failed")

    def _find(self, job_id: str) -> Job | None:
        try:
            return self.store.get(job_id)
        except WanError:
            return None

    def _remove_files(self, job_id: str) -> None:
        if is_job_id(job_id):
            shutil.rmtree(self.videos_dir / job_id, ignore_errors=True)

    def _remove_outputs(self, job_id: str) -> None:
        if is_job_id(job_id):
            for name in ("video.mp4", "video.json"):
                (self.videos_dir / job_id / name).unlink(missing_ok=True)


class _JobListener:
    """Progress of one running job: the live state, throttled events and database writes, step times."""

    def __init__(self, queue: JobQueue, job: Job, token: CancelToken) -> None:
        self.queue, self.job, self.token = queue, job, token
        self.state: dict[str, Any] = {"stage": "ensuring", "step": 0, "percent": 0.0, "eta_seconds": None}
        self.step_seconds: list[float] = []
        self._download: DownloadReporter | None = None
        self._last_event = self._last_save = 0.0
        self._last_step: tuple[int, float] | None = None

    def __call__(self, report: GenerationProgress) -> None:
        now = time.monotonic()
        stage_changed = report.stage != self.state["stage"]
        if report.stage == "denoising" and stage_changed:  # the first step is timed from here
            self._last_step = (0, report.elapsed_seconds)
        if (
            report.stage == "denoising"
            and report.step
            and (self._last_step is None or report.step > self._last_step[0])
        ):
            if self._last_step is not None:
                self.step_seconds.append(report.elapsed_seconds - self._last_step[1])
            self._last_step = (report.step, report.elapsed_seconds)
        state = {
            "stage": report.stage,
            "step": report.step,
            "percent": max(report.percent, self.state["percent"]),
            "eta_seconds": None if report.eta_seconds is None else round(report.eta_seconds, 1),
            "elapsed_seconds": round(report.elapsed_seconds, 2),
            "download": self.state.get("download"),
        }
        if report.download is not None:
            if self._download is None:
                self._download = DownloadReporter(self.queue.events, report.model, report.variant)
            data = self._download.progress(report.download)
            state["download"] = self._download.latest
            if data is None and not stage_changed:
                self._replace(state)
                return
        elif self._download is not None and report.stage != "ensuring":
            self._download.completed(self._download.latest["bytes_done"] if self._download.latest else 0)
            self._download, state["download"] = None, None
        self._replace(state)
        if stage_changed or now - self._last_save >= SAVE_INTERVAL_SECONDS:
            self._last_save = now
            self.queue.store.save_progress(self.job.id, state)
        if (
            stage_changed
            or now - self._last_event >= EVENT_INTERVAL_SECONDS
            or report.step == report.total_steps
        ):
            self._last_event = now
            # The claimed job, as the database holds it while it runs; once it is cancelled (or deleted, which
            # cancels it first) `video.cancelled` was its last event.
            if not self.token.cancelled:
                self.queue.events.publish("video.progress", self.queue.video(self.job))

    def _replace(self, state: dict[str, Any]) -> None:
        with self.queue._lock:
            self.state.clear()
            self.state.update(state)


def worker_devices(settings: Settings) -> list[str]:
    """One device per worker: every CUDA GPU when the device is `auto` or `cuda`, else the one configured."""
    if settings.device in ("auto", "cuda"):
        try:
            import torch

            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        except ImportError:
            count = 0
        if count:
            return [f"cuda:{index}" for index in range(count)]
    return [settings.device]


def _folder_bytes(folder: Path) -> int:
    try:
        return sum(entry.stat().st_size for entry in folder.iterdir() if entry.is_file())
    except OSError:
        return 0
