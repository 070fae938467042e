"""Log formatters: one JSON object per line, or readable text; both carry the correlation id and mask secrets.

JSON lines have `ts` (UTC, milliseconds), `level`, `logger`, `message`, `thread`, `correlation_id` when one
is set (see _context.py), `exception` for a traceback, and every field given with `extra=`:

    log.info("fetched %s", path, extra={"source": "hf", "bytes": 1234})
    -> {"ts": "2026-01-02T03:04:05.678Z", "level": "INFO", "logger": "wanstudio.x", "message": "fetched a.bin",
        "thread": "wan-fetch_0", "correlation_id": "3f2a9c1d0b7e4a55", "source": "hf", "bytes": 1234}

Every string that ends up in a line, the extra fields' included, goes through `wanstudio._secrets.mask`.
Strings are masked before JSON encoding, so a registered secret is found even when it holds characters
that JSON would escape, and the mask can never break the line's JSON.

The formatters read the correlation id from the record (`correlation_id` given with `extra=` wins) or else
from the context of the thread that formats it: handlers that format in the logging thread (every
standard handler, `QueueHandler` included, since it formats in `prepare`) see the right id.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from wanstudio._secrets import mask
from wanstudio.observability._context import correlation_id

# Attributes every LogRecord has: anything else on a record came from `extra=`.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_CORE_FIELDS = ("ts", "level", "logger", "message", "thread", "correlation_id", "exception", "stack")


def record_correlation_id(record: logging.LogRecord) -> str | None:
    """The record's correlation id: one given with `extra=`, else the current context's."""
    given = getattr(record, "correlation_id", None)
    return str(given) if given else correlation_id()


def _masked(value: Any) -> Any:
    """`value` ready for JSON with every string masked; what JSON cannot encode is written as its str()."""
    if isinstance(value, str):
        return mask(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(key): _masked(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_masked(item) for item in value]
    return mask(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module doc for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "thread": record.threadName,
        }
        if cid := record_correlation_id(record):
            document["correlation_id"] = cid
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            document["exception"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and key not in _CORE_FIELDS and not key.startswith("_"):
                document[key] = value
        return json.dumps(_masked(document))


class TextFormatter(logging.Formatter):
    """`LEVEL logger [correlation id]: message`, the id only when one is set; the whole text masked."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s%(_wan_cid)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        cid = record_correlation_id(record)
        record._wan_cid = f" [{cid}]" if cid else ""
        return mask(super().format(record))
