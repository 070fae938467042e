"""Builds the ordered list of sources from the settings."""

from __future__ import annotations

from wanstudio.config import Settings
from wanstudio.orchestrator.sources.base import Source, UnavailableSource
from wanstudio.orchestrator.sources.hf import HubSource
from wanstudio.orchestrator.sources.local import LocalMirrorSource, bundled_source
from wanstudio.orchestrator.sources.s3 import S3Source


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
            sources.append(_s3_source(settings))
        elif name == "hf":
            sources.append(HubSource(settings.hf_endpoint, settings.hf_token, settings.hf_cache_dir))
    return sources


def _s3_source(settings: Settings) -> Source:
    if not settings.s3_url:
        return UnavailableSource("s3", "WAN_S3_URL is not set")
    try:
        return S3Source(settings.s3_url, settings.s3_sse_customer_key)
    except ValueError as exc:
        return UnavailableSource("s3", f"WAN_S3_URL or WAN_S3_SSE_CUSTOMER_KEY is invalid: {exc}")
