"""Sources turn "file F of variant V of model M" into something the transfer engine can read.

A source never moves bytes itself (ARCHITECTURE.md, "One transfer engine"): it answers with a
``LocalObject`` (a path on this machine) or, for remote stores, an object the engine fetches. A source
that does not have the file raises a WanError (usually SOURCE_UNAVAILABLE) whose message names the
source and the place it looked; the orchestrator records it as an attempt and tries the next source.

The remote sources (`s3`, `hf`) and `registry.build_sources` are imported where they are used, so that
a warm ensure, which needs no source, does not load them.
"""

from __future__ import annotations

from wanstudio.orchestrator.sources.base import (
    FileRequest,
    LocalObject,
    Located,
    RemoteObject,
    Source,
    UnavailableSource,
)
from wanstudio.orchestrator.sources.local import LocalMirrorSource, bundled_source

__all__ = [
    "FileRequest",
    "LocalMirrorSource",
    "LocalObject",
    "Located",
    "RemoteObject",
    "Source",
    "UnavailableSource",
    "bundled_source",
]
