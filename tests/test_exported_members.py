"""The public Python API is pinned: changing `wanstudio.__all__` is a deliberate act (CONTRACT section 6)."""

from __future__ import annotations

import importlib.metadata
from importlib import resources

import pytest

import wanstudio
from wanstudio.errors import ERRORS_BY_CODE

EXPORTED = [
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


def test_all_is_pinned() -> None:
    assert sorted(wanstudio.__all__) == EXPORTED
    assert len(set(wanstudio.__all__)) == len(wanstudio.__all__)


@pytest.mark.parametrize("name", EXPORTED)
def test_every_exported_name_is_importable(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from wanstudio import {name}", namespace)
    assert namespace[name] is getattr(wanstudio, name)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from wanstudio import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == EXPORTED


def test_the_engine_loads_only_when_used() -> None:
    """`import wanstudio` stays light for the orchestrator's warm path; engine names load on first use."""
    import subprocess
    import sys

    code = "import sys, wanstudio; assert 'wanstudio.engine' not in sys.modules; wanstudio.Engine; print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "ok"


def test_every_error_class_is_exported() -> None:
    for cls in (wanstudio.WanError, *ERRORS_BY_CODE.values()):
        assert cls.__name__ in wanstudio.__all__
        assert getattr(wanstudio, cls.__name__) is cls


def test_contract_section_6_names_are_exported() -> None:
    """`from wanstudio import ensure, status, check, gc, get_wan_paths`, and gc's report as the contract reads it."""
    for name in ("ensure", "status", "check", "gc", "get_wan_paths", "WanError"):
        assert name in wanstudio.__all__, name
        assert callable(getattr(wanstudio, name))
    report = wanstudio.gc(dry_run=True, max_bytes=50 * 2**30)
    assert (report.reclaimed_bytes, report.removed, report.kept_pinned) == (0, (), ())


def test_gc_loads_only_when_used() -> None:
    """Like the engine, gc is not imported by `import wanstudio`: a warm ensure never needs it."""
    import subprocess
    import sys

    code = (
        "import sys, wanstudio; assert 'wanstudio.orchestrator.gc' not in sys.modules; "
        "assert wanstudio.GcReport.__module__ == 'wanstudio.orchestrator.gc'; print('ok')"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "ok"


def test_py_typed_marker_ships() -> None:
    assert (resources.files("wanstudio") / "py.typed").is_file()


def test_version_matches_the_distribution() -> None:
    assert wanstudio.__version__ == importlib.metadata.version("wanstudio")
