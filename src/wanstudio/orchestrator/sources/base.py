"""The source protocol and the objects a source answers with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from wanstudio.errors import SourceUnavailableError
from wanstudio.orchestrator.manifest import ManifestFile, Model, Variant


@dataclass(frozen=True)
class FileRequest:
    """One file wanted from a source."""

    model: Model
    variant: Variant
    file: ManifestFile

    @property
    def label(self) -> str:
        return f"{self.model.id} [{self.variant.name}] {self.file.path}"


@dataclass(frozen=True)
class LocalObject:
    """A file on this machine that the transfer engine copies."""

    path: Path


Located = LocalObject


@runtime_checkable
class Source(Protocol):
    """Something that can say where the bytes of a manifest file are."""

    name: str

    def locate(self, request: FileRequest) -> Located:
        """Where the file's bytes are; raises a WanError when this source cannot provide them."""
        ...


@dataclass(frozen=True)
class UnavailableSource:
    """A source named in WAN_SOURCES that cannot serve anything here, with the reason and the fix."""

    name: str
    reason: str

    def locate(self, request: FileRequest) -> Located:
        raise SourceUnavailableError(f"source {self.name} skipped: {self.reason}")
