"""Progress of one generation: stages, real denoising steps, ETA from measured step times; cancellation.

``percent`` covers the whole job: 0 until denoising starts, then the steps fill 0-95, decoding the latents
takes it to 97, encoding the MP4 to 99, and 100 means done. It only moves forward.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from wanstudio.errors import JobCancelledError
from wanstudio.orchestrator.orchestrator import DownloadProgress

# The stages in order, with the percent each starts at (denoising then counts steps up to 95).
_STAGE_PERCENT = {"ensuring": 0.0, "loading": 0.0, "denoising": 0.0, "decoding": 95.0, "encoding": 97.0, "done": 100.0}
STAGES = tuple(_STAGE_PERCENT)
_DENOISING_SHARE = 95.0


@dataclass(frozen=True)
class GenerationProgress:
    """One progress report. ``download`` is set while the model's files are being fetched."""

    model: str
    variant: str
    stage: str
    step: int
    total_steps: int
    percent: float
    eta_seconds: float | None
    elapsed_seconds: float
    download: DownloadProgress | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "model": self.model,
            "variant": self.variant,
            "stage": self.stage,
            "step": self.step,
            "total_steps": self.total_steps,
            "percent": round(self.percent, 1),
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds, 2),
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }


GenerationListener = Callable[[GenerationProgress], None]


class CancelToken:
    """Asks a running generation to stop; it does so at the next step boundary with CANCELLED."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = "cancelled"

    def cancel(self, reason: str = "cancelled") -> None:
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self, model: str) -> None:
        if self._event.is_set():
            raise JobCancelledError(
                f"generation with {model} was {self.reason}", suggestions=["submit the request again to run it"]
            )


class ProgressTracker:
    """Turns stage changes and step ticks into GenerationProgress reports, and keeps the step times."""

    def __init__(self, model: str, variant: str, total_steps: int, listener: GenerationListener | None) -> None:
        self.model, self.variant, self.total_steps = model, variant, total_steps
        self.listener = listener
        self.started = time.perf_counter()
        self.stage = "ensuring"
        self.step = 0
        self.step_seconds: list[float] = []
        self.stage_seconds: dict[str, float] = {}
        self._stage_started = self.started
        self._last_step_at = self.started

    def enter(self, stage: str) -> None:
        now = time.perf_counter()
        self.stage_seconds[self.stage] = self.stage_seconds.get(self.stage, 0.0) + now - self._stage_started
        self.stage, self._stage_started = stage, now
        if stage == "denoising":
            self._last_step_at = now
        self._emit()

    def download(self, event: DownloadProgress) -> None:
        self._emit(download=event)

    def tick(self, step: int) -> None:
        """Step `step` (1-based) of the denoising loop has finished."""
        now = time.perf_counter()
        self.step_seconds.append(now - self._last_step_at)
        self._last_step_at = now
        self.step = step
        self._emit()

    def eta(self) -> float | None:
        if self.stage != "denoising" or not self.step_seconds:
            return None
        recent = self.step_seconds[-5:]  # the latest steps say most about the next ones
        return sum(recent) / len(recent) * (self.total_steps - self.step)

    def percent(self) -> float:
        if self.stage == "denoising":
            return _DENOISING_SHARE * self.step / max(self.total_steps, 1)
        return _STAGE_PERCENT[self.stage]

    def _emit(self, download: DownloadProgress | None = None) -> None:
        if self.listener is None:
            return
        self.listener(
            GenerationProgress(
                model=self.model,
                variant=self.variant,
                stage=self.stage,
                step=self.step,
                total_steps=self.total_steps,
                percent=self.percent(),
                eta_seconds=self.eta(),
                elapsed_seconds=time.perf_counter() - self.started,
                download=download,
            )
        )
