"""Sources on this machine: a mirror folder laid out like MODELS_ROOT, and the dev models in the package."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from wanstudio.errors import SourceUnavailableError
from wanstudio.orchestrator.sources.base import FileRequest, LocalObject


@dataclass(frozen=True)
class LocalMirrorSource:
    """Files at `{root}/{family}/{model_id}/{variant}/{path}`, e.g. another machine's MODELS_ROOT on a share."""

    name: str
    root: Path

    def locate(self, request: FileRequest) -> LocalObject:
        path = self.root / request.model.family / request.model.id / request.variant.name / request.file.path
        if not path.is_file():
            raise SourceUnavailableError(f"source {self.name} has no {request.label} (looked for {path})")
        return LocalObject(path)


def bundled_dev_root() -> Path:
    """The folder inside the package that holds the bundled dev variants (built by scripts/build_dev_models.py)."""
    return Path(str(resources.files("wanstudio.orchestrator") / "catalog" / "dev"))


def bundled_source() -> LocalMirrorSource:
    """The dev variants shipped in the package: always available, no network."""
    return LocalMirrorSource(name="bundled", root=bundled_dev_root())
