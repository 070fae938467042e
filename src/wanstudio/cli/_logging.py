"""Log configuration for the command line: level and format from the settings, `-v` for DEBUG.

Our handler sits on the root logger, so the libraries' records (urllib3's retries, botocore's requests at
DEBUG) come out through it too, and every line, traceback included, is masked of secrets on its way out.
The formatters (JSON lines or text, both with the correlation id) live in `wanstudio.observability`,
shared with the server; this module only decides where logs go and at which level.
"""

from __future__ import annotations

import logging
import sys

from wanstudio.observability import JsonFormatter, TextFormatter


def configure_logging(level: str, log_format: str) -> None:
    """Send logs to stderr, wanstudio's at `level` and the libraries' at WARNING (at DEBUG, theirs too).

    `log_format` is `json` (one object per line: docs/observability.md) or anything else for text.
    """
    level = level if level in logging.getLevelNamesMapping() else "WARNING"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel("DEBUG" if level == "DEBUG" else "WARNING")
    logger = logging.getLogger("wanstudio")
    logger.handlers.clear()
    logger.setLevel(level)
    if level != "DEBUG":
        # torchao (the optional int8 profile) warns on import about GPU kernels a machine lacks (no triton,
        # CUDA-only libraries), whatever profile runs: noise for a user, kept at DEBUG.
        logging.getLogger("torchao").setLevel(logging.ERROR)
