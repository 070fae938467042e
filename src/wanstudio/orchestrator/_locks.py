"""Cross-process locks with a timeout, a "still waiting for <holder>" log line and a named holder.

The lock is an OS advisory lock (``fcntl`` on POSIX, ``msvcrt`` on Windows, through `filelock`): the OS
drops it when the holding process dies, SIGKILL included, so a dead holder never leaves a stale lock.
Correctness never rests on the lock alone: every writer also works in a file of its own and commits by
rename. Who holds a lock is written beside it, so waiters and LOCK_TIMEOUT can name the holder.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from wanstudio.errors import LockTimeoutError
from wanstudio.observability import metrics

log = logging.getLogger("wanstudio.locks")

WAIT_LOG_INTERVAL = 10.0


def _holder_path(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + ".holder")


def describe_holder(lock_path: Path) -> str:
    """Who holds (or last held) the lock, as `pid 123 on host since 12:00:00`, for messages."""
    try:
        info = json.loads(_holder_path(lock_path).read_text())
        since = time.strftime("%H:%M:%S", time.localtime(info["since"]))
        return f"pid {info['pid']} on {info['host']} since {since}"
    except (OSError, ValueError, KeyError):
        return "another process"


def lock_kind(lock_path: Path) -> str:
    """What a lock guards, from its place under `.wan/locks/`: `variant`, `blob` (or that folder's name)."""
    for parent in lock_path.parents:
        if parent.parent.name == "locks":
            return {"variants": "variant", "blobs": "blob"}.get(parent.name, parent.name)
    return "other"


@contextmanager
def hold_lock(lock_path: Path, *, timeout: float, what: str, poll_interval: float = 0.05) -> Iterator[None]:
    """Hold the lock at `lock_path` for the body; LOCK_TIMEOUT after `timeout` seconds of waiting for it."""
    from filelock import FileLock, Timeout  # imported here: the warm path takes no lock

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path), thread_local=False)
    started = time.monotonic()
    deadline = started + timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            lock.acquire(timeout=max(0.0, min(WAIT_LOG_INTERVAL, remaining)), poll_interval=poll_interval)
            break
        except Timeout:
            if time.monotonic() >= deadline:
                metrics.lock_wait(lock_kind(lock_path), time.monotonic() - started)
                holder = describe_holder(lock_path)
                raise LockTimeoutError(
                    f"timed out after {timeout:.0f}s waiting for the lock on {what}, held by {holder}",
                    suggestions=[
                        "wait for that process to finish, or stop it if it is stuck",
                        "raise WAN_LOCK_TIMEOUT (seconds, or e.g. 2h) to wait longer",
                    ],
                ) from None
            log.info("still waiting for the lock on %s, held by %s", what, describe_holder(lock_path))
    try:
        metrics.lock_wait(lock_kind(lock_path), time.monotonic() - started)
        _holder_path(lock_path).write_text(
            json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
        )
        yield
    finally:
        lock.release()
