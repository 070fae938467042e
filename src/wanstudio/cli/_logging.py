"""Log configuration for the command line: level and format from the settings, `-v` for DEBUG.

Our handler sits on the root logger, so the libraries' records (urllib3's retries, botocore's requests at
DEBUG) come out through it too, and every line, traceback included, is masked of secrets on its way out.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from wanstudio._secrets import mask


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": mask(record.getMessage()),
        }
        if record.exc_info:
            document["exception"] = mask(self.formatException(record.exc_info))
        return json.dumps(document)


class _MaskingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


def configure_logging(level: str, log_format: str) -> None:
    """Send logs to stderr, wanstudio's at `level` and the libraries' at WARNING (at DEBUG, theirs too)."""
    level = level if level in logging.getLevelNamesMapping() else "WARNING"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if log_format == "json" else _MaskingFormatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel("DEBUG" if level == "DEBUG" else "WARNING")
    logger = logging.getLogger("wanstudio")
    logger.handlers.clear()
    logger.setLevel(level)
