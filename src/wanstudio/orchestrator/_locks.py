"""Cross-process locks with a timeout, a "still waiting for <holder>" log line and a named holder.

The lock is an OS advisory lock: a POSIX record lock (`platform_paths.PosixLock`), which NFS, GPFS, CephFS
and Lustre (`-o flock`) hold across hosts (docs/platforms.md); `filelock`'s on Windows, and on a filesystem
that refuses POSIX locks. The OS drops it when the holding process dies, SIGKILL included, so a dead
holder never leaves a stale lock.
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
from typing import Iterator, Protocol

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


class OsLock(Protocol):
    """What `hold_lock` and gc need of a lock: take it within a timeout, give it back."""

    def acquire(self, timeout: float, *, poll_interval: float = ...) -> bool: ...

    def release(self) -> None: ...


class _FileLockAdapter:
    """filelock's lock behind `PosixLock`'s interface: on Windows, and where POSIX locks are refused."""

    def __init__(self, lock_path: Path) -> None:
        from filelock import FileLock  # imported here: the warm path takes no lock

        self._lock = FileLock(str(lock_path), thread_local=False)

    def acquire(self, timeout: float, *, poll_interval: float = 0.05) -> bool:
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=timeout, poll_interval=poll_interval)
        except Timeout:
            return False
        return True

    def release(self) -> None:
        self._lock.release()


def os_lock(lock_path: Path) -> OsLock:
    """The OS lock on `lock_path`: a POSIX record lock, or filelock's on Windows."""
    if os.name == "nt":
        return _FileLockAdapter(lock_path)
    from wanstudio.orchestrator._posix_locks import PosixLock

    return PosixLock(lock_path)


def _acquire(lock: OsLock, lock_path: Path, timeout: float, poll_interval: float) -> tuple[bool, OsLock]:
    """Try `lock` for `timeout` seconds; on a filesystem refusing POSIX locks, filelock's lock instead."""
    from wanstudio.orchestrator._posix_locks import LockingUnsupportedError

    try:
        return lock.acquire(timeout, poll_interval=poll_interval), lock
    except LockingUnsupportedError as error:
        log.warning("%s; using filelock's lock file instead", error)
        fallback = _FileLockAdapter(lock_path)
        return fallback.acquire(timeout, poll_interval=poll_interval), fallback


def try_lock(lock_path: Path) -> OsLock | None:
    """The lock at `lock_path` if it is free now, else None (for gc, which never waits for a working process)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    acquired, lock = _acquire(os_lock(lock_path), lock_path, 0.0, 0.05)
    return lock if acquired else None


@contextmanager
def hold_lock(lock_path: Path, *, timeout: float, what: str, poll_interval: float = 0.05) -> Iterator[None]:
    """Hold the lock at `lock_path` for the body; LOCK_TIMEOUT after `timeout` seconds of waiting for it."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = os_lock(lock_path)
    started = time.monotonic()
    deadline = started + timeout
    while True:
        remaining = deadline - time.monotonic()
        acquired, lock = _acquire(lock, lock_path, max(0.0, min(WAIT_LOG_INTERVAL, remaining)), poll_interval)
        if acquired:
            break
        if time.monotonic() >= deadline:
            metrics.lock_wait(lock_kind(lock_path), time.monotonic() - started)
            holder = describe_holder(lock_path)
            raise LockTimeoutError(
                f"timed out after {timeout:.0f}s waiting for the lock on {what}, held by {holder}",
                suggestions=[
                    "wait for that process to finish, or stop it if it is stuck",
                    "raise WAN_LOCK_TIMEOUT (seconds, or e.g. 2h) to wait longer",
                ],
            )
        log.info("still waiting for the lock on %s, held by %s", what, describe_holder(lock_path))
    try:
        metrics.lock_wait(lock_kind(lock_path), time.monotonic() - started)
        _holder_path(lock_path).write_text(
            json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
        )
        yield
    finally:
        lock.release()
