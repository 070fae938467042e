"""Builds the ordered list of sources from the settings."""

from __future__ import annotations

from wanstudio.config import Settings
from wanstudio.orchestrator.sources.base import Source, UnavailableSource
from wanstudio.orchestrator.sources.local import LocalMirrorSource, bundled_source


def build_sources(settings: Settings) -> list[Source]:
    """The bundled dev models first (they never need a network), then WAN_SOURCES in its order."""
    sources: list[Source] = [bundled_source()]
    for name in settings.sources:
        if name == "local":
            sources.append(
                LocalMirrorSource("local", settings.local_mirror)
                if settings.local_mirror
                else UnavailableSource("local", "WAN_LOCAL_MIRROR is not set")
            )
        elif name == "s3":
            sources.append(UnavailableSource("s3", "the S3 source is not part of this release yet"))
        elif name == "hf":
            sources.append(UnavailableSource("hf", "the Hugging Face Hub source is not part of this release yet"))
    return sources
