"""The source protocol and the objects a source answers with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Protocol, runtime_checkable

from wanstudio._secrets import display_url
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
    """A file on this machine that the transfer engine copies (or, when `shared`, verifies and links).

    `shared` marks a file another tool owns, such as a blob of the Hugging Face cache: it is verified in
    place and hard-linked into the store, so the bytes exist once on disk.
    """

    path: Path
    shared: bool = False

    @property
    def display(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class RemoteObject:
    """Bytes behind an HTTP(S) URL, with the headers a GET needs (credentials among them).

    The URL may be presigned and the headers may hold tokens: neither is ever shown; `display` is the URL
    without its query string, for messages and attempts.
    """

    url: str = field(repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    auth_suggestions: tuple[str, ...] = ()
    """What to do when the server refuses the credentials (the source knows its own fix)."""

    @property
    def display(self) -> str:
        return display_url(self.url)


Located = LocalObject | RemoteObject


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
