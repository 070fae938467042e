r"""Locks that hold across hosts on network filesystems, and how far a lock reaches on a given mount.

Locks (`PosixLock`, `posix_lock`, `lock_scope`): POSIX record locks (`fcntl(F_SETLK)`, whole file),
which NFS carries to the server (NLM for v3, LOCK for v4), GPFS and CephFS hold across nodes, and Lustre
holds across clients when mounted with `-o flock`. `filelock` takes BSD `flock()` locks instead, which
GPFS does not document as cluster-wide and NFS's `local_lock=flock` keeps on one host; docs/platforms.md
gives the reasoning and what each filesystem needs.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# -- locks that hold across hosts --------------------------------------------------------------------------


class LockingUnsupportedError(OSError):
    """The filesystem refuses POSIX record locks: Lustre mounted without `flock`, NFS with no lock service."""


_CONTENDED = frozenset({errno.EACCES, errno.EAGAIN})
_UNSUPPORTED = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP})


class _ThreadGate:
    """One in-process lock per lock file: POSIX record locks belong to the process, not the thread.

    Two threads of one process would both "get" a record lock, and closing any descriptor of the file
    releases the process's lock on it; so a thread opens the lock file only once it holds this gate.
    Keys are real paths (symlinks resolved) so two spellings of one file share a gate.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._gates: dict[str, tuple[threading.Lock, list[int]]] = {}

    def acquire(self, key: str, timeout: float) -> bool:
        with self._mutex:
            gate, users = self._gates.setdefault(key, (threading.Lock(), [0]))
            users[0] += 1
        if gate.acquire(True, max(0.0, timeout)):
            return True
        self._leave(key)
        return False

    def release(self, key: str) -> None:
        self._gates[key][0].release()
        self._leave(key)

    def _leave(self, key: str) -> None:
        with self._mutex:
            users = self._gates[key][1]
            users[0] -= 1
            if users[0] == 0:
                del self._gates[key]

    def reset(self) -> None:
        """Forget every gate: a forked child holds none of its parent's record locks."""
        self._mutex = threading.Lock()
        self._gates = {}


_GATE = _ThreadGate()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_GATE.reset)


class PosixLock:
    """An exclusive POSIX record lock (`fcntl(F_SETLK)` over the whole file) on `path`, with a timeout.

    It excludes other processes on this host and, on NFS, GPFS, CephFS and Lustre with `-o flock`, on
    other hosts; the OS (or the NFS server, when a client host dies, after its lease) drops it when the
    holder dies, SIGKILL included. Threads of one process exclude each other through an in-process gate.
    Not re-entrant. Waiting polls with backoff: a blocking F_SETLKW cannot time out and, on NFSv3, needs
    the server to call back, which firewalls often stop. The lock file is created (mode 0o666 less the
    umask: share a store between accounts with a umask of 002) and left in place, since removing it would
    let two processes lock two different files under one name.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._key = os.path.realpath(self.path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, timeout: float, *, poll_interval: float = 0.05, max_poll_interval: float = 0.5) -> bool:
        """Take the lock within `timeout` seconds (0: one try); False when another holder kept it."""
        if self._fd is not None:
            raise RuntimeError(f"the lock on {self.path} is already held by this object (not re-entrant)")
        deadline = time.monotonic() + max(0.0, timeout)
        if not _GATE.acquire(self._key, deadline - time.monotonic()):
            return False
        try:
            fd = self._lock_until(deadline, poll_interval, max_poll_interval)
        except BaseException:
            _GATE.release(self._key)
            raise
        if fd is None:
            _GATE.release(self._key)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        """Give the lock up (closing the descriptor drops it); a no-op when it is not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.close(fd)
        finally:
            _GATE.release(self._key)

    def _lock_until(self, deadline: float, poll_interval: float, max_poll_interval: float) -> int | None:
        import fcntl

        delay = poll_interval
        fd = -1
        try:
            while True:
                if fd < 0:
                    fd = self._open()
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as error:
                    if error.errno in _UNSUPPORTED:
                        raise self._unsupported(error) from error
                    if error.errno not in _CONTENDED:
                        raise
                else:
                    if self._still_at_path(fd):
                        locked, fd = fd, -1
                        return locked
                    # The file was removed or replaced while we waited: lock the one at the path now.
                    closing, fd = fd, -1
                    os.close(closing)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, max_poll_interval)
        finally:
            if fd >= 0:
                os.close(fd)

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)

    def _still_at_path(self, fd: int) -> bool:
        try:
            here, there = os.fstat(fd), os.stat(self.path, follow_symlinks=False)
        except OSError:
            return False
        return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)

    def _unsupported(self, error: OSError) -> LockingUnsupportedError:
        found = lock_scope(self.path)
        return LockingUnsupportedError(
            error.errno,
            f"the filesystem of {self.path} ({found.fstype} at {found.mount_point}) refuses POSIX locks "
            f"({os.strerror(error.errno or 0)}): {found.note or 'mount it with lock support'}",
            str(self.path),
        )


@contextmanager
def posix_lock(
    path: str | os.PathLike[str], *, timeout: float, poll_interval: float = 0.05
) -> Iterator[PosixLock]:
    """Hold a `PosixLock` on `path` for the body; TimeoutError after `timeout` seconds of waiting."""
    lock = PosixLock(path)
    if not lock.acquire(timeout, poll_interval=poll_interval):
        raise TimeoutError(f"timed out after {timeout:g}s waiting for the lock on {path}")
    try:
        yield lock
    finally:
        lock.release()


# -- which hosts see a lock --------------------------------------------------------------------------------

LockReach = Literal["local", "cluster", "host", "none", "unknown"]
"""How far a POSIX lock on a filesystem reaches: `local` (a disk of this host: all that is needed),
`cluster` (every host mounting it), `host` (a shared filesystem, but locks seen on this host only),
`none` (locks fail) or `unknown`."""

_LOCAL_FILESYSTEMS = frozenset({
    "ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "tmpfs", "overlay", "ramfs", "jfs", "reiserfs",
    "bcachefs", "ntfs3", "vfat", "exfat", "apfs", "hfs", "hfsplus",
})


@dataclass(frozen=True)
class MountLocking:
    """The filesystem holding a path and how far its POSIX locks reach."""

    mount_point: str
    fstype: str
    options: tuple[str, ...]
    reach: LockReach
    note: str


def classify_locking(fstype: str, options: Iterable[str]) -> tuple[LockReach, str]:
    """How far POSIX record locks reach on a filesystem of type `fstype` mounted with `options`, and why."""
    opts = set(options)
    if fstype in ("nfs", "nfs4"):
        if "nolock" in opts or "local_lock=all" in opts or "local_lock=posix" in opts:
            return "host", "mounted with nolock/local_lock: locks stay on this host; remount without it"
        return "cluster", "NFS carries POSIX locks to the server (NLM for NFSv3, LOCK for NFSv4)"
    if fstype == "lustre":
        if "flock" in opts:
            return "cluster", "mounted with -o flock: locks are coherent across clients"
        if "localflock" in opts:
            return "host", "mounted with -o localflock: locks hold on this client only; remount with -o flock"
        if "noflock" in opts:
            return "none", "mounted with -o noflock: locks fail with ENOSYS; remount with -o flock"
        return "unknown", "no flock option shown; older Lustre defaults to noflock (ENOSYS): use -o flock"
    if fstype == "gpfs":
        return "cluster", "GPFS (IBM Storage Scale) holds POSIX byte-range locks across nodes"
    if fstype in ("ceph", "fuse.ceph-fuse", "fuse.ceph"):
        return "cluster", "CephFS holds POSIX locks across clients"
    if fstype in ("cifs", "smb3"):
        if "nobrl" in opts:
            return "host", "mounted with nobrl: locks are not sent to the server; remount without it"
        return "cluster", "SMB byte-range locks are held by the server"
    if fstype == "beegfs":
        return "unknown", "BeeGFS checks locks on each client unless tuneUseGlobalFileLocks=true"
    if fstype in ("9p", "v9fs", "drvfs"):
        return "host", "a WSL or VM share: locks are seen by this Linux instance only, not by Windows"
    if fstype in _LOCAL_FILESYSTEMS:
        return "local", "a local filesystem"
    return "unknown", f"no rule for {fstype}: check that it supports fcntl locks across the hosts sharing it"


def lock_scope(path: str | os.PathLike[str], mounts: str | None = None) -> MountLocking:
    """The mount holding `path` (the longest mount point above its real path) and its lock reach.

    `mounts` is the text of /proc/self/mounts (read when not given; absent outside Linux, giving `unknown`).
    """
    if mounts is None:
        try:
            mounts = Path("/proc/self/mounts").read_text(errors="replace")
        except OSError:
            mounts = ""
    resolved = os.path.realpath(path)
    best: tuple[str, str, str] | None = None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        point = fields[1].replace("\\040", " ")
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, fields[2], fields[3])
    if best is None:
        return MountLocking("?", "unknown", (), "unknown", "the mount of this path is not known here")
    point, fstype, options = best
    reach, note = classify_locking(fstype, options.split(","))
    return MountLocking(point, fstype, tuple(options.split(",")), reach, note)
