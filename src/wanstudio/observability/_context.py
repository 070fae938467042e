"""Correlation ids: one id for everything a unit of work (an ensure, later an HTTP request or a job) logs.

The id lives in a `contextvars.ContextVar`, so it follows the code that runs for that unit of work and
not the thread: two ensures running side by side in one process keep their own ids. Python (before
3.14) starts every thread with an empty context and a thread pool's workers outlive the task that
submitted to them, so work handed to a pool must carry the context with it: `ContextThreadPoolExecutor`
runs each task in a copy of the submitter's context. Every pool that runs work of an ensure must be one
(the transfer engine's range workers are; the orchestrator's file workers must be too).
"""

from __future__ import annotations

import contextvars
import os
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

_T = TypeVar("_T")

_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("wan_correlation_id", default=None)


def new_correlation_id() -> str:
    """A fresh id: 16 hex digits (64 random bits), short enough to read in a log line, unique in practice."""
    return os.urandom(8).hex()


def correlation_id() -> str | None:
    """The correlation id of the running unit of work, or None outside any."""
    return _correlation_id.get()


@contextmanager
def correlation(id: str | None = None) -> Iterator[str]:  # noqa: A002  (the name callers write: correlation(id=...))
    """Tag everything logged inside the block, threads started through a `ContextThreadPoolExecutor`
    included, with one correlation id, and yield it.

    An `id` given wins (a server passes its request id). Without one, an id already set is kept, so an
    ensure called inside a request or a generation job logs under that job's id; otherwise a new one is
    made. Leaving the block restores what was there before. Costs a few microseconds: cheap enough to
    wrap a warm ensure.
    """
    value = id or _correlation_id.get() or new_correlation_id()
    token = _correlation_id.set(value)
    try:
        yield value
    finally:
        _correlation_id.reset(token)


class ContextThreadPoolExecutor(ThreadPoolExecutor):
    """A `ThreadPoolExecutor` whose tasks run in a copy of the submitting thread's context.

    So a task submitted inside `correlation(...)` logs with that id, whichever worker thread runs it. Each
    task gets its own copy: one `Context` cannot be entered by two threads at once, and a task's changes
    to context variables stay its own.
    """

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)
