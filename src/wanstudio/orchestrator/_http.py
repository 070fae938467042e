"""HTTP details of the transfer engine: which answers are worth a retry, and what the headers say.

Kept apart from transfer.py so that the engine reads as the download procedure; nothing here holds state.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import urllib3

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class RetryableFailure(Exception):
    """A failure worth another try of the same range: a drop, a stall, a 5xx or a 429."""

    def __init__(self, reason: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.status, self.retry_after = reason, status, retry_after


class RangesIgnored(Exception):
    """The server answered a range request with the whole body: fall back to one range from the start."""


def total_size(response: "urllib3.BaseHTTPResponse", whole: bool) -> int | None:
    """The size of the whole object as the server states it (Content-Range, or Content-Length of a 200)."""
    content_range = response.headers.get("Content-Range", "")
    if "/" in content_range:
        total = content_range.rsplit("/", 1)[1]
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    return int(length) if whole and response.status == 200 and length and length.isdigit() else None


def range_start(response: "urllib3.BaseHTTPResponse") -> int | None:
    """Where the body of a 206 starts, from its Content-Range."""
    content_range = response.headers.get("Content-Range", "")
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def short_body(response: "urllib3.BaseHTTPResponse") -> str:
    """The start of an error body, as `: text` for a message (empty when there is none)."""
    try:
        text = response.read(300, decode_content=True).decode("utf-8", "replace").strip()
    except Exception:  # the body is only a hint for the message
        return ""
    return f": {text[:200]}" if text else ""
