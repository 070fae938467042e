"""How commands speak: exactly one JSON document on stdout with --json, readable text otherwise.

Errors become `{"schema": ..., "error": {code, message, attempts, suggestions}}` with --json, or a short
block on stderr that names the code and says what to do next; either way the exit code is the one the
contract gives the error code.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any, Iterator

import typer

from wanstudio.errors import OperationInterruptedError, WanError
from wanstudio.observability import metrics

EXIT_INCOMPLETE = 3


def emit_json(schema: str, document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"schema": schema, **document}, indent=2) + "\n")
    sys.stdout.flush()


def print_error(error: WanError) -> None:
    lines = [f"error [{error.code}]: {error.message}"]
    lines += [f"  tried {a.source}: {a.code}: {a.message}" for a in error.attempts]
    lines += [f"  hint: {s}" for s in error.suggestions]
    sys.stderr.write("\n".join(lines) + "\n")


@contextmanager
def reporting(schema: str, as_json: bool, partial: dict[str, Any] | None = None) -> Iterator[None]:
    """Turn a WanError (or Ctrl-C) raised by the body into the contract's output and exit code.

    `partial` holds what the command finished before failing; it is included in the error document.
    """
    try:
        yield
    except KeyboardInterrupt:
        error: WanError = OperationInterruptedError(
            "interrupted; files already verified are kept", suggestions=["run the same command again to finish"]
        )
        _fail(schema, as_json, error, partial)
    except WanError as error:
        _fail(schema, as_json, error, partial)


def _fail(schema: str, as_json: bool, error: WanError, partial: dict[str, Any] | None) -> None:
    metrics.error(error.code)  # wan_errors_total{code}: seen by a process that serves its metrics
    if as_json:
        emit_json(schema, {**(partial or {}), "error": error.to_dict()})
    else:
        print_error(error)
    raise typer.Exit(error.exit_code)
