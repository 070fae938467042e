"""One generation, end to end: validate -> ensure the files -> load (cached) -> denoise -> decode -> MP4.

The engine owns everything around a family plugin: parameter validation against the plugin's spec,
the model files (through the orchestrator, which also records the use for GC), device and memory plan,
the pipeline cache, progress and cancellation, error categories, and the MP4 with its sidecar.

When memory runs out, the job is retried once with the next leaner memory profile (a warning says so);
when that fails too, or nothing could fit, it is OUT_OF_MEMORY, or, if the request allows it, the job
runs on a lighter model of the family (``fallback`` on the result). With WAN_ALLOW_MOCK=1, a job whose
model could not be obtained or run gives a test pattern marked ``mock`` instead of an error.
"""

from __future__ import annotations

import errno
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

from wanstudio.config import Settings
from wanstudio.engine import _recovery
from wanstudio.engine._cache import PipelineCache
from wanstudio.engine._resources import PeakMemory
from wanstudio.engine.family import GenerationParams, ModelFamily, ModelSpec, Placement
from wanstudio.engine.hardware import free_vram, ram_budget
from wanstudio.engine.memory import (
    Footprint,
    MemoryPlan,
    Workload,
    check_profile,
    detect_device,
    dtype_for,
    leaner_profile,
    plan_memory,
)
from wanstudio.engine.lora import AppliedLora, LoraRequest, check_lora_requests, find_lora, loras_applied
from wanstudio.engine.params import GenerationRequest, resolve_params
from wanstudio.engine.progress import CancelToken, GenerationListener, ProgressTracker
from wanstudio.engine.registry import family_for, spec_of
from wanstudio.engine.video import write_mp4
from wanstudio.errors import GenerationFailedError, InvalidParamsError, NoSpaceError, OutOfMemoryError, WanError
from wanstudio.orchestrator._fsutil import atomic_write_json
from wanstudio.orchestrator.manifest import Model, Variant
from wanstudio.orchestrator.orchestrator import Orchestrator

log = logging.getLogger("wanstudio.engine")

SIDECAR_SCHEMA = "wan.generate.sidecar/1"


@dataclass(frozen=True)
class PreparedJob:
    """A request that passed validation: everything needed to run it, nothing loaded yet."""

    model: Model
    variant: Variant
    family: ModelFamily
    spec: ModelSpec
    params: GenerationParams
    warnings: tuple[str, ...]
    output: Path
    memory_profile: str | None = None
    allow_fallback: bool = False
    request: GenerationRequest | None = None  # as asked: a fallback resolves it again for another model
    loras: tuple[LoraRequest, ...] = ()


@dataclass(frozen=True)
class GenerationMetrics:
    elapsed_seconds: float
    step_seconds: float | None  # mean seconds per denoising step
    stage_seconds: dict[str, float]
    peak_rss_bytes: int
    peak_vram_bytes: int | None
    pipeline_cached: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "elapsed_seconds": round(self.elapsed_seconds, 4),
            "step_seconds": None if self.step_seconds is None else round(self.step_seconds, 4),
            "stage_seconds": {k: round(v, 4) for k, v in self.stage_seconds.items()},
            "peak_rss_bytes": self.peak_rss_bytes,
            "peak_vram_bytes": self.peak_vram_bytes,
            "pipeline_cached": self.pipeline_cached,
        }


@dataclass(frozen=True)
class GenerationResult:
    """A finished video (CONTRACT `wan.generate/1`)."""

    output: Path
    sidecar: Path
    model: str
    variant: str
    params: GenerationParams
    placement: Placement
    metrics: GenerationMetrics
    warnings: tuple[str, ...] = field(default_factory=tuple)
    plan: MemoryPlan | None = None  # None for a mock video
    fallback: _recovery.Fallback | None = None  # set when a lighter model made the video (allow_fallback)
    mock: bool = False  # a test pattern, not a generated video (WAN_ALLOW_MOCK=1)
    loras: tuple[AppliedLora, ...] = ()  # the LoRAs applied, with their weight per expert

    def to_json(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "sidecar": str(self.sidecar),
            "model": self.model,
            "variant": self.variant,
            "seed": self.params.seed,
            "frames": self.params.num_frames,
            "fps": self.params.fps,
            "width": self.params.width,
            "height": self.params.height,
            "device": self.placement.device,
            "dtype": self.placement.dtype,
            "memory_profile": self.placement.memory_profile,
            "memory_plan": self.plan.to_json() if self.plan else None,
            "metrics": self.metrics.to_json(),
            "warnings": list(self.warnings),
            "fallback": self.fallback.to_json() if self.fallback else None,
            "mock": self.mock,
            "loras": [lora.to_json() for lora in self.loras],
        }


class Engine:
    """Runs generations; one engine per process keeps the loaded pipelines between jobs."""

    def __init__(self, settings: Settings | None = None, *, orchestrator: Orchestrator | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.orchestrator = orchestrator or Orchestrator(self.settings)
        self.cache = PipelineCache(self.settings.pipeline_cache_size)
        self._device: str | None = None
        # The plan each (model, variant, folder, asked profile) was loaded with: see _plan.
        self._plans: dict[tuple[str, str, str, str | None], MemoryPlan] = {}

    @property
    def device(self) -> str:
        if self._device is None:
            self._device = detect_device(self.settings.device)
        return self._device

    def prepare(self, request: GenerationRequest) -> PreparedJob:
        """Validate `request` against its model without loading anything (INVALID_PARAMS, MODEL_NOT_FOUND)."""
        model, variant = self.orchestrator.resolve(request.model, request.variant)
        family = family_for(model)
        spec = spec_of(family, model)
        params, warnings = resolve_params(spec, request, model_id=model.id, variant=variant.name)
        check_profile(request.memory_profile)
        loras = check_lora_requests(request.loras)
        for lora in loras:  # a name that is not in the catalogue is bad input, refused before anything loads
            find_lora(lora.name, self.settings)
        output = _output_path(request.output, model, params.seed)
        return PreparedJob(model, variant, family, spec, params, tuple(warnings), output, request.memory_profile,
                           bool(request.allow_fallback), request, loras)

    def plan(self, job: PreparedJob, *, profile: str | None = None) -> MemoryPlan:
        """The memory plan `job` would get now (`profile` or the job's own, else the automatic choice)."""
        device = self.device
        dtype = dtype_for(job.variant.dtype, device)
        params = job.params
        return plan_memory(
            job.spec,
            Footprint.of(job.spec, job.variant, dtype),
            Workload.of(job.spec, params.width, params.height, params.num_frames),
            device=device, dtype=dtype, vram_budget=free_vram(device), ram_budget=ram_budget(),
            profile=profile or job.memory_profile,
        )

    def generate(
        self,
        request: GenerationRequest | PreparedJob,
        *,
        progress: GenerationListener | None = None,
        cancel: CancelToken | None = None,
    ) -> GenerationResult:
        """Make the video; raises CANCELLED, OUT_OF_MEMORY, GENERATION_FAILED or an orchestrator error."""
        job = request if isinstance(request, PreparedJob) else self.prepare(request)
        cancel = cancel or CancelToken()
        tracker = ProgressTracker(job.model.id, job.variant.name, job.params.steps, progress)
        try:
            return self._generate(job, tracker, cancel, progress)
        except WanError as error:
            if not self.settings.allow_mock or error.code not in _recovery.MOCKABLE:
                raise
            _recovery.drop_traceback(error)
            return self._mock(job, tracker, error)

    def _generate(self, job: PreparedJob, tracker: ProgressTracker, cancel: CancelToken,
                  progress: GenerationListener | None, fallback: _recovery.Fallback | None = None) -> GenerationResult:
        model, variant = job.model, job.variant
        tracker.enter("ensuring")
        folder = self.orchestrator.ensure(model.id, variant.name, progress=tracker.download).path
        cancel.raise_if_cancelled(model.id)

        plan = self._plan(job, folder)
        warnings = list(job.warnings)
        if not plan.fits:
            if job.allow_fallback and job.memory_profile is None:
                lighter = self._fallback(job, tracker, cancel, progress, warnings,
                                         f"{model.id} does not fit: {plan.reason}")
                if lighter is not None:
                    return lighter
            warnings.append(f"{plan.profile} may not fit this machine ({plan.reason}); trying it anyway")
        tried: list[str] = []
        while True:
            try:
                return self._attempt(job, folder, plan, tracker, cancel, warnings, fallback)
            except OutOfMemoryError as error:
                detail = _recovery.first_line(error)
                _recovery.drop_traceback(error)
            tried.append(plan.profile)
            self._forget(job, folder, plan)
            log.warning("%s [%s] ran out of memory with %s: %s", model.id, variant.name, plan.profile, detail)
            leaner = leaner_profile(plan.profile) if len(tried) == 1 else None
            if leaner is None:
                if job.allow_fallback:
                    lighter = self._fallback(job, tracker, cancel, progress, warnings,
                                             f"{model.id} ran out of memory with {' and '.join(tried)}")
                    if lighter is not None:
                        return lighter
                raise _recovery.out_of_memory(job, tried, detail)
            plan = self._plan(job, folder, profile=leaner)
            if job.memory_profile is None:  # later automatic jobs keep to the profile that fitted, while it is cached
                self._plans[(model.id, variant.name, str(folder), None)] = plan
            warnings.append(f"ran out of memory with memory profile {tried[-1]} ({detail}); "
                            f"retried with the leaner {leaner}")
            tracker.step, tracker.step_seconds = 0, []

    def _attempt(self, job: PreparedJob, folder: Path, plan: MemoryPlan, tracker: ProgressTracker, cancel: CancelToken,
                 warnings: list[str], fallback: _recovery.Fallback | None) -> GenerationResult:
        """Load (or reuse) the pipeline for `plan` and make the video once."""
        model, variant, params = job.model, job.variant, job.params
        tracker.enter("loading")
        placement = plan.placement
        entry, cached = self.cache.get_or_load(self._key(job, folder, plan), lambda: self._load(job, folder, placement))
        cancel.raise_if_cancelled(model.id)

        memory = PeakMemory(placement.device)
        # LoRAs live on the cached pipeline's modules: applied, run and unloaded under its lock, so that no
        # LoRA ever leaks into another job (unloaded on failure and cancellation too).
        with entry.lock, loras_applied(entry.value, job.loras, self.settings, model=f"{model.id} [{variant.name}]",
                                       max_bytes=self.settings.max_lora_bytes,
                                       orchestrator=self.orchestrator) as loras:
            memory.start()
            tracker.enter("denoising")

            def on_step(step: int, total: int) -> None:
                tracker.tick(step)
                cancel.raise_if_cancelled(model.id)
                if step >= total:
                    tracker.enter("decoding")

            frames = self._run(job, entry.value, on_step)
        warnings = [*warnings, *loras.warnings]
        if tracker.stage != "decoding":  # a family whose last step did not report
            tracker.enter("decoding")
        tracker.enter("encoding")
        _write_output(frames, job)
        memory.stop()
        tracker.enter("done")

        step_times = tracker.step_seconds
        metrics = GenerationMetrics(
            elapsed_seconds=time.perf_counter() - tracker.started,
            step_seconds=sum(step_times) / len(step_times) if step_times else None,
            stage_seconds=tracker.stage_seconds,
            peak_rss_bytes=memory.peak_rss_bytes,
            peak_vram_bytes=memory.peak_vram_bytes,
            pipeline_cached=cached,
        )
        sidecar = job.output.with_suffix(".json")
        result = GenerationResult(job.output, sidecar, model.id, variant.name, params, placement, metrics,
                                  tuple(warnings), plan, fallback, loras=tuple(loras.applied))
        with _writing(sidecar):
            atomic_write_json(sidecar, _sidecar_document(result))
        log.info("%s [%s] wrote %s in %.1f s (seed %d, %s on %s)", model.id, variant.name, job.output,
                 metrics.elapsed_seconds, params.seed, placement.memory_profile, placement.device)
        return result

    def _plan(self, job: PreparedJob, folder: Path, *, profile: str | None = None) -> MemoryPlan:
        """The plan loaded for this model and profile while it stays cached, else a new one.

        Once a model is resident its own weights fill the GPU, so planning again from the free VRAM would
        pick a leaner profile and load a second copy: a plan sticks while its pipeline stays cached. A new
        one is made after unloading what must go to make room, so that the free VRAM it reads is real.
        """
        asked = profile or job.memory_profile
        known_key = (job.model.id, job.variant.name, str(folder), asked)
        known = self._plans.get(known_key)
        if known is not None and self._key(job, folder, known) in self.cache:
            return known
        self.cache.make_room()
        plan = self.plan(job, profile=asked)
        self._plans[known_key] = plan
        log.info("%s [%s]: memory profile %s (%s)", job.model.id, job.variant.name, plan.profile, plan.reason)
        return plan

    def _key(self, job: PreparedJob, folder: Path, plan: MemoryPlan) -> tuple[Any, ...]:
        return (job.model.id, job.variant.name, str(folder), plan.placement)

    def _forget(self, job: PreparedJob, folder: Path, plan: MemoryPlan) -> None:
        """Drop the pipeline that ran out of memory and give its memory back before the next attempt."""
        self.cache.discard(self._key(job, folder, plan))
        for key in [k for k, p in self._plans.items() if p == plan]:
            del self._plans[key]
        _recovery.release_memory(plan.device)

    def _fallback(self, job: PreparedJob, tracker: ProgressTracker, cancel: CancelToken,
                  progress: GenerationListener | None, warnings: list[str], reason: str) -> GenerationResult | None:
        """Run the job on the lighter model of the family (the request allowed it); None when there is none."""
        found = _recovery.lighter_model(self.orchestrator, job)
        if found is None:
            return None
        model, variant = found
        lighter = self.prepare(_recovery.fallback_request(job, model, variant, spec_of(family_for(model), model).limits))
        note = f"fell back from {job.model.id} to {model.id} [{variant.name}] (allow_fallback): {reason}"
        log.warning("%s", note)
        lighter = replace(lighter, warnings=(*warnings, note, *lighter.warnings))
        next_tracker = ProgressTracker(model.id, variant.name, lighter.params.steps, progress)
        next_tracker.started = tracker.started
        return self._generate(lighter, next_tracker, cancel, progress, _recovery.Fallback(job.model.id, model.id, reason))

    def _mock(self, job: PreparedJob, tracker: ProgressTracker, error: WanError) -> GenerationResult:
        """The test pattern of WAN_ALLOW_MOCK=1 in place of the video the model could not make."""
        from wanstudio.engine._mock import mock_frames

        params = job.params
        note = (f"MOCK VIDEO: a synthetic test pattern, not made by {job.model.id} [{job.variant.name}], which "
                f"could not run ({error.code}: {error.message}); WAN_ALLOW_MOCK=1 allows this")
        log.warning("%s", note)
        tracker.enter("encoding")
        _write_output(mock_frames(params.width, params.height, params.num_frames), job)
        tracker.enter("done")
        metrics = GenerationMetrics(time.perf_counter() - tracker.started, None, tracker.stage_seconds, 0, None, False)
        sidecar = job.output.with_suffix(".json")
        result = GenerationResult(job.output, sidecar, job.model.id, job.variant.name, params,
                                  Placement("cpu", "float32", "none"), metrics, (*job.warnings, note), mock=True)
        with _writing(sidecar):
            atomic_write_json(sidecar, _sidecar_document(result))
        return result

    def _load(self, job: PreparedJob, folder: Path, placement: Placement) -> Any:
        with _plugin_errors(job, "loading"):
            return job.family.load(folder, job.model, job.variant, placement)

    def _run(self, job: PreparedJob, loaded: Any, on_step: Any) -> Any:
        with _plugin_errors(job, "generating"):
            frames = job.family.run(loaded, job.params, on_step)
        shape = getattr(frames, "shape", None)
        if shape is None or len(shape) != 4 or shape[-1] != 3 or shape[0] < 1 or shape[1] % 2 or shape[2] % 2:
            raise GenerationFailedError(
                f"the {job.model.family!r} family returned frames of shape {shape} for {job.model.id}; "
                "expected (frames, height, width, 3) with even height and width",
                suggestions=["report this to the maintainers of the family plugin"],
            )
        return frames


@contextmanager
def _plugin_errors(job: PreparedJob, activity: str) -> Iterator[None]:
    """Whatever a family raises while loading or running becomes one of our codes, naming the model."""
    try:
        yield
    except WanError:
        raise
    except Exception as exc:
        if _recovery.is_out_of_memory(exc):
            raise OutOfMemoryError(
                f"{job.model.id} [{job.variant.name}] ran out of memory while {activity}: {_recovery.first_line(exc)}"
            ) from exc
        raise GenerationFailedError(
            f"{job.model.id} [{job.variant.name}] failed while {activity}: {type(exc).__name__}: {str(exc)[:500]}",
            suggestions=[
                "run again with -v to see the full log",
                f"wan models check {job.model.id} --variant {job.variant.name} --deep   # rule out damaged files",
            ],
        ) from exc


def _write_output(frames: Any, job: PreparedJob) -> None:
    with _writing(job.output):
        write_mp4(frames, job.output, job.params.fps)


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Report a failed write of an output file with its path: NO_SPACE for a full disk."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpaceError(
                f"no space left to write {path}", suggestions=["free some space, or choose another folder with --output"]
            ) from exc
        raise GenerationFailedError(
            f"could not write {path}: {exc.strerror or exc}",
            suggestions=["check that the folder exists and is writable, or choose another with --output"],
        ) from exc


def _output_path(requested: Path | None, model: Model, seed: int) -> Path:
    """The MP4 to write. A path ending in ``.mp4`` is the file; an existing folder or a path without a
    suffix is a folder that gets a new name (model, time, seed), like a camera never overwriting a clip;
    nothing given means the current folder."""
    if requested is not None and requested.suffix and not requested.is_dir():
        if requested.suffix.lower() != ".mp4":
            raise InvalidParamsError(
                f"output {requested} must end in .mp4 (the video is H.264 in MP4), or name a folder",
                param="output",
                suggestions=[f"--output {requested.with_suffix('.mp4')}"],
            )
        return requested.expanduser().absolute()
    folder = (requested or Path.cwd()).expanduser().absolute()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return folder / f"{model.name}_{stamp}_{seed}.mp4"


def _sidecar_document(result: GenerationResult) -> dict[str, Any]:
    from wanstudio import __version__

    return {
        "schema": SIDECAR_SCHEMA,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wanstudio_version": __version__,
        "video": result.output.name,
        "parameters": result.params.to_json(),
        **result.to_json(),
    }

