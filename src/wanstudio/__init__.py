"""wanstudio: run WAN 2.2 video models yourself.

The public Python API (CONTRACT section 6)::

    from wanstudio import ensure, status, check, get_wan_paths

    path = ensure("ti2v-5B@2.2.0", variant="dev")         # pathlib.Path of the ready variant folder
    st = status("ti2v-5B@2.2.0")                           # .state, .missing_files, .bytes_needed, .path
    paths = get_wan_paths("ti2v-5B@2.2.0", variant="dev")  # the variant folder and its component folders

Every failure raises a `WanError` subclass with a stable `.code` and `.suggestions`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from wanstudio.config import Settings, environment_key
from wanstudio.errors import (
    Attempt,
    AuthFailError,
    ChecksumFailError,
    GenerationFailedError,
    InvalidParamsError,
    JobCancelledError,
    LockTimeoutError,
    ManifestInvalidError,
    ModelNotFoundError,
    ModelsRootUnsetError,
    NoSpaceError,
    OperationInterruptedError,
    OutOfMemoryError,
    PathInvalidError,
    QuotaExceededError,
    RateLimitError,
    SignatureInvalidError,
    SourceUnavailableError,
    WanError,
)
from wanstudio.orchestrator.manifest import Manifest, ManifestFile, Model, Variant, load_manifest
from wanstudio.orchestrator.orchestrator import DownloadProgress, EnsureResult, Orchestrator, ProgressListener, WanPaths
from wanstudio.orchestrator.status import VariantStatus

__version__ = "0.1.0"

__all__ = [
    "Attempt",
    "AuthFailError",
    "ChecksumFailError",
    "DownloadProgress",
    "EnsureResult",
    "GenerationFailedError",
    "InvalidParamsError",
    "JobCancelledError",
    "LockTimeoutError",
    "Manifest",
    "ManifestFile",
    "ManifestInvalidError",
    "Model",
    "ModelNotFoundError",
    "ModelsRootUnsetError",
    "NoSpaceError",
    "OperationInterruptedError",
    "Orchestrator",
    "OutOfMemoryError",
    "PathInvalidError",
    "ProgressListener",
    "QuotaExceededError",
    "RateLimitError",
    "Settings",
    "SignatureInvalidError",
    "SourceUnavailableError",
    "Variant",
    "VariantStatus",
    "WanError",
    "WanPaths",
    "check",
    "ensure",
    "get_wan_paths",
    "load_manifest",
    "status",
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
