"""One generation, end to end: validate -> ensure the files -> load (cached) -> denoise -> decode -> MP4.

The engine owns everything around a family plugin: parameter validation against the plugin's spec,
the model files (through the orchestrator, which also records the use for GC), device and memory
profile, the pipeline cache, progress and cancellation, error categories, and the MP4 with its sidecar.
"""

from __future__ import annotations

import errno
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from wanstudio.config import Settings
from wanstudio.engine._cache import PipelineCache
from wanstudio.engine._resources import PeakMemory
from wanstudio.engine.family import GenerationParams, ModelFamily, ModelSpec, Placement
from wanstudio.engine.memory import check_profile, detect_device, placement_for
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
            "metrics": self.metrics.to_json(),
            "warnings": list(self.warnings),
        }


class Engine:
    """Runs generations; one engine per process keeps the loaded pipelines between jobs."""

    def __init__(self, settings: Settings | None = None, *, orchestrator: Orchestrator | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.orchestrator = orchestrator or Orchestrator(self.settings)
        self.cache = PipelineCache(self.settings.pipeline_cache_size)
        self._device: str | None = None
        self._auto_placements: dict[tuple[str, str, str], Placement] = {}

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
        output = _output_path(request.output, model, params.seed)
        return PreparedJob(model, variant, family, spec, params, tuple(warnings), output, request.memory_profile)

    def generate(
        self,
        request: GenerationRequest | PreparedJob,
        *,
        progress: GenerationListener | None = None,
        cancel: CancelToken | None = None,
    ) -> GenerationResult:
        """Make the video; raises CANCELLED, OUT_OF_MEMORY, GENERATION_FAILED or an orchestrator error."""
        job = request if isinstance(request, PreparedJob) else self.prepare(request)
        model, variant, params = job.model, job.variant, job.params
        cancel = cancel or CancelToken()
        tracker = ProgressTracker(model.id, variant.name, params.steps, progress)
        tracker.enter("ensuring")
        folder = self.orchestrator.ensure(model.id, variant.name, progress=tracker.download).path
        cancel.raise_if_cancelled(model.id)

        tracker.enter("loading")
        placement = self._placement(job, folder)
        key = (model.id, variant.name, str(folder), placement)
        entry, cached = self.cache.get_or_load(key, lambda: self._load(job, folder, placement))
        cancel.raise_if_cancelled(model.id)

        memory = PeakMemory(placement.device)
        with entry.lock:
            memory.start()
            tracker.enter("denoising")

            def on_step(step: int, total: int) -> None:
                tracker.tick(step)
                cancel.raise_if_cancelled(model.id)
                if step >= total:
                    tracker.enter("decoding")

            frames = self._run(job, entry.value, on_step)
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
        result = GenerationResult(job.output, sidecar, model.id, variant.name, params, placement, metrics, job.warnings)
        with _writing(sidecar):
            atomic_write_json(sidecar, _sidecar_document(result))
        log.info("%s [%s] wrote %s in %.1f s (seed %d, %s on %s)", model.id, variant.name, job.output,
                 metrics.elapsed_seconds, params.seed, placement.memory_profile, placement.device)
        return result

    def _placement(self, job: PreparedJob, folder: Path) -> Placement:
        """The requested profile, or the one already loaded for this variant, or the fastest that fits.

        Once a model is resident its own weights fill the GPU, so choosing again from the free VRAM would
        pick a leaner profile and load a second copy: an automatic choice sticks while it stays cached.
        """
        params, variant = job.params, job.variant
        loaded = self._auto_placements.get((job.model.id, variant.name, str(folder)))
        if job.memory_profile is None and loaded is not None and (job.model.id, variant.name, str(folder), loaded) in self.cache:
            return loaded
        placement = placement_for(
            job.spec, variant.dtype, self.device, job.memory_profile, params.width, params.height, params.num_frames,
            _free_vram(self.device),
        )
        if job.memory_profile is None:
            self._auto_placements[(job.model.id, variant.name, str(folder))] = placement
        return placement

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
        if _is_out_of_memory(exc):
            raise _out_of_memory(job) from exc
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


def _free_vram(device: str) -> int | None:
    if not device.startswith("cuda"):
        return None
    import torch

    free, _total = torch.cuda.mem_get_info()
    return int(free)


def _is_out_of_memory(exc: Exception) -> bool:
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _out_of_memory(job: PreparedJob) -> OutOfMemoryError:
    params = job.params
    smaller = [s for s in job.spec.trained_sizes if s[0] * s[1] < params.width * params.height]
    suggestions = []
    if smaller:
        suggestions.append(f"a smaller size: --size {smaller[-1][0]}x{smaller[-1][1]}")
    suggestions.append(f"fewer frames than {params.num_frames}: --frames {max(job.spec.limits.min_frames, params.num_frames // 2 // 4 * 4 + 1)}")
    suggestions.append("a leaner memory profile: --memory-profile sequential_offload")
    if job.spec.experts > 1:
        suggestions.append("the 5B model: --model ti2v-5B (fits consumer GPUs)")
    return OutOfMemoryError(
        f"{job.model.id} [{job.variant.name}] ran out of memory at {params.width}x{params.height}, "
        f"{params.num_frames} frames",
        suggestions=suggestions,
    )


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

