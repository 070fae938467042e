"""wanstudio: run WAN 2.2 video models yourself.

The public Python API (CONTRACT section 6)::

    from wanstudio import ensure, status, check, gc, get_wan_paths, pin

    path = ensure("ti2v-5B@2.2.0", variant="dev")         # pathlib.Path of the ready variant folder
    st = status("ti2v-5B@2.2.0")                           # .state, .missing_files, .bytes_needed, .path
    report = gc(dry_run=True, max_bytes=50 * 2**30)        # .reclaimed_bytes, .removed, .kept_pinned
    paths = get_wan_paths("ti2v-5B@2.2.0", variant="dev")  # the variant folder and its component folders
    pin("ti2v-5B@2.2.0", variant="dev")                    # gc never removes it (unpin to undo)

    result = generate("ti2v-5B", prompt="a fox in snow", variant="dev", seed=7)  # an MP4 and its sidecar

Every failure raises a `WanError` subclass with a stable `.code` and `.suggestions`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from wanstudio.config import Settings, environment_key
from wanstudio.errors import (
    Attempt,
    AuthFailError,
    ChecksumFailError,
    GenerationFailedError,
    InternalError,
    InvalidParamsError,
    JobCancelledError,
    LockTimeoutError,
    ManifestInvalidError,
    ModelNotFoundError,
    ModelsRootUnsetError,
    NoSpaceError,
    NotReadyError,
    OperationInterruptedError,
    OutOfMemoryError,
    PathInvalidError,
    PayloadTooLargeError,
    QueueFullError,
    QuotaExceededError,
    RateLimitError,
    SignatureInvalidError,
    SourceUnavailableError,
    UnauthorizedError,
    VideoNotFoundError,
    WanError,
)
from wanstudio.orchestrator.manifest import Manifest, ManifestFile, Model, Variant, load_manifest
from wanstudio.orchestrator.orchestrator import DownloadProgress, EnsureResult, Orchestrator, ProgressListener, WanPaths
from wanstudio.orchestrator.status import VariantStatus

if TYPE_CHECKING:
    from wanstudio.engine import (
        CancelToken,
        Engine,
        GenerationProgress,
        GenerationRequest,
        GenerationResult,
        ModelFamily,
        ModelSpec,
        Recommendation,
    )
    from wanstudio.engine.progress import GenerationListener
    from wanstudio.orchestrator.gc import GcReport

__version__ = "0.1.0"

# The engine's names load on first use: the orchestrator's warm path (a `wan models ensure` that finds
# everything present) must not pay for importing the engine.
_ENGINE_EXPORTS = (
    "CancelToken",
    "Engine",
    "GenerationProgress",
    "GenerationRequest",
    "GenerationResult",
    "ModelFamily",
    "ModelSpec",
    "Recommendation",
)


def __getattr__(name: str) -> Any:
    if name in _ENGINE_EXPORTS:
        import wanstudio.engine

        return getattr(wanstudio.engine, name)
    if name == "GcReport":  # loads with gc, which a warm ensure never needs
        from wanstudio.orchestrator.gc import GcReport

        return GcReport
    raise AttributeError(f"module 'wanstudio' has no attribute {name!r}")

__all__ = [
    "Attempt",
    "AuthFailError",
    "CancelToken",
    "ChecksumFailError",
    "DownloadProgress",
    "Engine",
    "EnsureResult",
    "GcReport",
    "GenerationFailedError",
    "GenerationProgress",
    "GenerationRequest",
    "GenerationResult",
    "InternalError",
    "InvalidParamsError",
    "JobCancelledError",
    "LockTimeoutError",
    "Manifest",
    "ManifestFile",
    "ManifestInvalidError",
    "Model",
    "ModelFamily",
    "ModelNotFoundError",
    "ModelSpec",
    "ModelsRootUnsetError",
    "NoSpaceError",
    "NotReadyError",
    "OperationInterruptedError",
    "Orchestrator",
    "OutOfMemoryError",
    "PathInvalidError",
    "PayloadTooLargeError",
    "ProgressListener",
    "QueueFullError",
    "QuotaExceededError",
    "RateLimitError",
    "Recommendation",
    "Settings",
    "SignatureInvalidError",
    "SourceUnavailableError",
    "UnauthorizedError",
    "Variant",
    "VariantStatus",
    "VideoNotFoundError",
    "WanError",
    "WanPaths",
    "check",
    "ensure",
    "gc",
    "generate",
    "get_wan_paths",
    "load_manifest",
    "model_info",
    "pin",
    "recommend",
    "status",
    "unpin",
]


_ORCHESTRATORS: dict[tuple[str | None, ...], Orchestrator] = {}
_MAX_ORCHESTRATORS = 8


def _orchestrator() -> Orchestrator:
    """An orchestrator for the current environment, reused while the environment stays the same, so that
    repeated calls share the parsed manifest and the warm results."""
    key = environment_key()
    orchestrator = _ORCHESTRATORS.get(key)
    if orchestrator is None:
        orchestrator = Orchestrator(Settings.from_env())
        if len(_ORCHESTRATORS) >= _MAX_ORCHESTRATORS:
            _ORCHESTRATORS.pop(next(iter(_ORCHESTRATORS)))
        _ORCHESTRATORS[key] = orchestrator
    return orchestrator


def ensure(
    model_id: str,
    variant: str | None = None,
    *,
    without: Iterable[str] = (),
    force: bool = False,
    progress: ProgressListener | None = None,
) -> Path:
    """Make the variant complete on disk (downloading what is missing) and return its folder."""
    return _orchestrator().ensure(model_id, variant, without=without, force=force, progress=progress).path


def status(model_id: str, variant: str | None = None) -> VariantStatus:
    """What is on disk for the variant: state, missing files, bytes present and needed. Reads only."""
    return _orchestrator().status(model_id, variant)


def check(model_id: str, variant: str | None = None, *, deep: bool = False) -> VariantStatus:
    """Verify the variant's files: sizes, and with `deep` their sha256. Reads only, never the network."""
    return _orchestrator().status(model_id, variant, deep=deep)


def get_wan_paths(model_id: str, variant: str | None = None) -> WanPaths:
    """Ensure the variant, then return its folder and each component's folder."""
    return _orchestrator().get_wan_paths(model_id, variant)


def gc(
    dry_run: bool = False,
    max_bytes: int | str | None = None,
    ttl: float | str | timedelta | None = None,
    *,
    variant: str | None = None,
) -> "GcReport":
    """Remove least recently used variants: those unused for longer than `ttl` (seconds, or `"30d"`), then
    down to `max_bytes` (bytes, or `"500G"`; default WAN_QUOTA_BYTES) and the family quotas, with orphan
    blobs and day-old leftovers. Pinned variants stay. With `dry_run`, only report what would go."""
    from wanstudio._units import parse_duration, parse_size

    try:
        size = parse_size(max_bytes) if isinstance(max_bytes, str) else max_bytes
    except ValueError as exc:
        raise InvalidParamsError(f"max_bytes: {exc}", param="max_bytes") from None
    try:
        seconds = parse_duration(ttl) if isinstance(ttl, str) else ttl
    except ValueError as exc:
        raise InvalidParamsError(f"ttl: {exc}", param="ttl") from None
    if isinstance(seconds, timedelta):
        seconds = seconds.total_seconds()
    return _orchestrator().gc(dry_run=dry_run, max_bytes=size, ttl=seconds, variant=variant)


def pin(model_id: str, variant: str | None = None) -> VariantStatus:
    """Keep the variant (default: the model's default variant) from gc, even before it is downloaded."""
    return _orchestrator().pin(model_id, variant)


def unpin(model_id: str, variant: str | None = None) -> VariantStatus:
    """Let gc remove the variant again when it is least recently used."""
    return _orchestrator().pin(model_id, variant, pinned=False)


_ENGINES: dict[tuple[str | None, ...], "Engine"] = {}


def _engine() -> "Engine":
    """One engine per environment, so that pipelines stay loaded between calls of `generate`."""
    from wanstudio.engine import Engine

    key = environment_key()
    engine = _ENGINES.get(key)
    if engine is None:
        _ENGINES.clear()  # one engine at a time: each keeps models loaded in memory
        engine = _ENGINES[key] = Engine(orchestrator=_orchestrator())
    return engine


def generate(
    model_id: str,
    prompt: str,
    *,
    variant: str | None = None,
    progress: "GenerationListener | None" = None,
    cancel: "CancelToken | None" = None,
    **params: Any,
) -> "GenerationResult":
    """Generate a video with `model_id` and write the MP4; `params` are the fields of GenerationRequest
    (image, size parameters, num_frames, steps, guidance_scale, seed, output, ...)."""
    from wanstudio.engine import GenerationRequest

    request = GenerationRequest(model=model_id, prompt=prompt, variant=variant, **params)
    return _engine().generate(request, progress=progress, cancel=cancel)


def model_info(model_id: str) -> dict[str, Any]:
    """Capabilities, limits, defaults, estimated VRAM per resolution and local status of a model."""
    from wanstudio.engine import model_info as describe

    orchestrator = _orchestrator()
    model, _ = orchestrator.resolve(model_id)
    return describe(orchestrator, model, with_status=orchestrator.settings.models_root is not None)


def recommend(
    task: str = "t2v", *, has_image: bool = False, vram_bytes: int | None = None, preference: str = "balanced"
) -> "Recommendation":
    """The model, variant and memory profile for a task, inputs, GPU memory (None: CPU only) and a
    preference (speed, balanced, quality), with the reason."""
    from wanstudio.engine import recommend as choose

    return choose(_orchestrator(), task=task, has_image=has_image, vram_bytes=vram_bytes, preference=preference)  # type: ignore[arg-type]
