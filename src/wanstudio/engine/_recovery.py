"""What the engine does when memory runs out: recognise it, free it, say what to try, find a lighter model.

A CUDA allocator failure (``torch.OutOfMemoryError``, or a RuntimeError saying "out of memory" from
older code paths and other backends) leaves the pipeline half on the GPU and its tensors alive in the
traceback's frames; `release` drops both before the retry loads the model again with a leaner profile.
"""

from __future__ import annotations

import gc
import logging
import traceback
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from wanstudio.engine.family import IMAGE_NONE, IMAGE_REQUIRED, Limits
from wanstudio.engine.memory import PROFILES
from wanstudio.engine.params import GenerationRequest, nearest_size
from wanstudio.engine.registry import family_for, spec_of
from wanstudio.errors import OutOfMemoryError, WanError

if TYPE_CHECKING:
    from wanstudio.engine.engine import PreparedJob
    from wanstudio.orchestrator.manifest import Model, Variant
    from wanstudio.orchestrator.orchestrator import Orchestrator

log = logging.getLogger("wanstudio.engine")

# Failures after which WAN_ALLOW_MOCK=1 hands back a test pattern: the model could not be obtained or run.
# Bad input, unknown models, cancellation and interruption are never covered up.
MOCKABLE = frozenset({
    "OUT_OF_MEMORY", "GENERATION_FAILED", "SOURCE_UNAVAILABLE", "AUTH_FAIL", "RATE_LIMIT", "CHECKSUM_FAIL",
    "QUOTA_EXCEEDED", "NO_SPACE", "LOCK_TIMEOUT",
})


@dataclass(frozen=True)
class Fallback:
    """The request ran on another model than it asked for, because it allowed it (`allow_fallback`)."""

    from_model: str
    to_model: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"from": self.from_model, "to": self.to_model, "reason": self.reason}


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def first_line(error: BaseException) -> str:
    """The allocator's own words, from the first out-of-memory error in the chain (one line)."""
    for exc in chain(error):
        if not isinstance(exc, WanError) and is_out_of_memory(exc):
            return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return str(error).splitlines()[0][:200] if str(error) else type(error).__name__


def chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def drop_traceback(error: BaseException) -> None:
    """Clear the frames of `error` and its causes: their locals hold GPU tensors and the pipeline."""
    for exc in chain(error):
        if exc.__traceback__ is not None:
            traceback.clear_frames(exc.__traceback__)
            exc.__traceback__ = None


def release_memory(device: str) -> None:
    """Return freed memory: Python's cycles first, then the CUDA allocator's cached blocks."""
    gc.collect()
    if device.startswith("cuda"):
        import torch

        try:
            torch.cuda.synchronize()
        except RuntimeError as exc:  # an asynchronous error surfacing here must not hide the out-of-memory one
            log.warning("CUDA synchronize after running out of memory failed: %s", exc)
        torch.cuda.empty_cache()


def out_of_memory(job: "PreparedJob", tried: list[str], detail: str) -> OutOfMemoryError:
    """OUT_OF_MEMORY for `job`, naming the profiles tried, with what may fit instead for this model."""
    params, spec = job.params, job.spec
    smaller = [s for s in spec.trained_sizes if s[0] * s[1] < params.width * params.height]
    suggestions = []
    if smaller:
        smallest = min(smaller, key=lambda s: s[0] * s[1])
        suggestions.append(f"a smaller size: --size {smallest[0]}x{smallest[1]}")
    k = spec.limits.frame_multiple
    fewer = max(spec.limits.min_frames, params.num_frames // 2 // k * k + 1)
    if fewer < params.num_frames:
        suggestions.append(f"fewer frames than {params.num_frames}: --frames {fewer}")
    untried = list(PROFILES[PROFILES.index(tried[-1]) + 1:]) if tried else []
    if untried:
        suggestions.append(f"a leaner memory profile: --memory-profile {untried[-1]}")
    if spec.experts > 1:
        suggestions.append("the 5B model: --model ti2v-5B (fits 16 GB GPUs), "
                           "or --allow-fallback to switch to it when nothing fits")
    suggestions.append("close other programs that use the GPU (nvidia-smi lists them)")
    return OutOfMemoryError(
        f"{job.model.id} [{job.variant.name}] ran out of memory at {params.width}x{params.height}, "
        f"{params.num_frames} frames, with memory profile {' and then '.join(tried)}: {detail}",
        suggestions=suggestions,
    )


def lighter_model(orchestrator: "Orchestrator", job: "PreparedJob") -> "tuple[Model, Variant] | None":
    """The model to fall back to: of the same family, with a smaller denoiser, taking the request's inputs;
    the largest such. Its variant is the one of the same name (dev for dev), else its default."""
    has_image = job.params.image is not None
    best: tuple[int, Model] | None = None
    for model in orchestrator.manifest.models.values():
        if model.family != job.model.family or model.name == job.model.name:
            continue
        try:
            spec = spec_of(family_for(model), model)
        except WanError:
            continue
        if spec.parameters >= job.spec.parameters or not spec.parameters:
            continue
        if (has_image and spec.image == IMAGE_NONE) or (not has_image and spec.image == IMAGE_REQUIRED):
            continue
        if best is None or spec.parameters > best[0]:
            best = (spec.parameters, model)
    if best is None:
        return None
    model = best[1]
    return model, model.variant(job.variant.name if job.variant.name in model.variants else None)


def fallback_request(job: "PreparedJob", model: "Model", variant: "Variant", limits: Limits) -> GenerationRequest:
    """The job's own request, for `model`: its seed and output kept, its values snapped to the new limits,
    what only the old model takes (the second expert's guidance, the memory profile) left out."""
    asked = job.request or GenerationRequest(model=job.model.id, prompt=job.params.prompt)
    width, height = asked.width, asked.height
    if width is not None and height is not None:
        width, height = nearest_size(width, height, limits)
    frames = asked.num_frames
    if frames is not None:
        k = limits.frame_multiple
        frames = min(max(round((frames - 1) / k) * k + 1, limits.min_frames), limits.max_frames)
    steps = None if asked.steps is None else min(asked.steps, limits.max_steps)
    return replace(
        asked, model=model.id, variant=variant.name, width=width, height=height, num_frames=frames, steps=steps,
        guidance_scale_2=None, memory_profile=None, allow_fallback=False, seed=job.params.seed, output=job.output,
    )
