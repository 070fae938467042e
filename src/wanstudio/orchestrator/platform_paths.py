r"""What differs between the systems a store lives on: Windows, WSL and UNC path forms, and locks on
network filesystems.

Paths: pure string functions (no filesystem access), so the Windows rules are tested on Linux too.

* `to_windows_long_path`: a Win32 path of MAX_PATH (260) UTF-16 units or more only opens with the
  `\\?\` prefix (`\\?\UNC\server\share\...` for a UNC path), unless the machine opted in to long
  paths. The prefix turns Win32's normalisation off, so `.`/`..` and doubled separators are resolved
  here first.
* `wsl_to_windows` / `windows_to_wsl`: WSL mounts drive `C:` at `/mnt/c`; a UNC share `\\server\share`
  is `//server/share`; the distribution's own files are `\\wsl.localhost\<distro>\...` from Windows.
  A path with no counterpart raises ValueError saying why.
* `parse_unc`: the server, share and rest of a UNC path in any of its written forms.

Locks (`PosixLock`, `posix_lock`, `lock_scope`): POSIX record locks (`fcntl(F_SETLK)`, whole file),
which NFS carries to the server (NLM for v3, LOCK for v4), GPFS and CephFS hold across nodes, and Lustre
holds across clients when mounted with `-o flock`. `filelock` takes BSD `flock()` locks instead, which
GPFS does not document as cluster-wide and NFS's `local_lock=flock` keeps on one host; docs/platforms.md
gives the reasoning and what each filesystem needs.
"""

from __future__ import annotations

import errno
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from wanstudio.orchestrator._pathrules import WINDOWS_FORBIDDEN_CHARS, segment_problem

# -- Windows long paths ------------------------------------------------------------------------------------

MAX_PATH = 260
"""Win32's path limit in UTF-16 units, the terminating NUL included: a plain path holds at most 259."""

MAX_DIRECTORY_PATH = 248
"""CreateDirectoryW's limit: MAX_PATH less room for an 8.3 file name (12)."""

LONG_PREFIX = "\\\\?\\"
LONG_UNC_PREFIX = "\\\\?\\UNC\\"
_VERBATIM_PREFIXES = ("\\\\?\\", "\\\\.\\", "\\??\\")  # device/namespace paths Win32 passes on as they are
_DRIVE = re.compile(r"^([A-Za-z]):")
_SEPARATORS = re.compile(r"[\\/]")


def windows_length(path: str) -> int:
    """The length Windows measures a path in: UTF-16 code units (a character outside the BMP counts 2)."""
    return len(path.encode("utf-16-le", "surrogatepass")) // 2


def needs_long_path(path: str, *, directory: bool = False) -> bool:
    r"""Whether Win32 refuses `path` without the `\\?\` prefix (on a machine without LongPathsEnabled).

    A file path needs it from 260 units (259 characters and the NUL fill MAX_PATH), a folder to be
    created from 248.
    """
    limit = MAX_DIRECTORY_PATH if directory else MAX_PATH
    return windows_length(path.replace("/", "\\")) >= limit


def to_windows_long_path(
    path: str | os.PathLike[str], *, directory: bool = False, always: bool = False
) -> str:
    r"""`path` with `\` separators, and the `\\?\` (or `\\?\UNC\`) prefix when it is too long for Win32.

    A short path is only given backslashes. A long one must be absolute (`C:\...` or `\\server\share\...`):
    under the prefix Windows neither resolves relative paths nor `.`/`..`, so those segments are resolved
    here (`..` stops at the drive or share root, as Win32 does), and a name ending in a dot or space, whose
    meaning the prefix would change, is refused. A path already in the `\\?\` or `\\.\` namespace is
    returned as it is. Raises ValueError for a long relative or drive-relative path. `always` prefixes
    an absolute path whatever its length: a store root in that form makes every path built under it
    openable, however deep.
    """
    text = os.fspath(path)
    if text.startswith(_VERBATIM_PREFIXES):
        return text
    windows = text.replace("/", "\\")
    if windows.startswith(_VERBATIM_PREFIXES):
        return windows
    if not always and not needs_long_path(windows, directory=directory):
        return windows
    if windows.startswith("\\\\"):
        unc = parse_unc(windows)
        return LONG_UNC_PREFIX + "\\".join((unc.server, unc.share, *_resolve_dots(unc.parts, text)))
    drive = _DRIVE.match(windows)
    if drive is None or windows[2:3] != "\\":
        raise ValueError(
            f"cannot give {text!r} ({windows_length(windows)} characters) the \\\\?\\ long-path prefix: "
            "only an absolute path (C:\\... or \\\\server\\share\\...) can carry it, because Windows "
            "does not resolve relative paths under the prefix; make the path absolute first"
        )
    return LONG_PREFIX + windows[:2] + "\\" + "\\".join(_resolve_dots(windows[3:].split("\\"), text))


def strip_long_path_prefix(path: str) -> str:
    r"""The usual form of a `\\?\` path (`\\?\C:\x` -> `C:\x`, `\\?\UNC\s\sh` -> `\\s\sh`), for messages."""
    if path[: len(LONG_UNC_PREFIX)].upper() == LONG_UNC_PREFIX.upper():
        return "\\\\" + path[len(LONG_UNC_PREFIX):]
    if path.startswith(LONG_PREFIX) and _DRIVE.match(path[len(LONG_PREFIX):]):
        return path[len(LONG_PREFIX):]
    return path


def _resolve_dots(segments: Iterable[str], original: str) -> list[str]:
    resolved: list[str] = []
    for segment in segments:
        if segment in ("", "."):
            continue
        if segment == "..":
            if resolved:
                resolved.pop()
            continue
        if segment[-1] in ". ":
            raise ValueError(
                f"{original!r} has the name {segment!r}, ending in a dot or space: Win32 drops those, the "
                "\\\\?\\ prefix a long path needs keeps them, so the path would name another file"
            )
        resolved.append(segment)
    return resolved


# -- UNC paths ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UncPath:
    r"""A network path: `\\server\share\a\b` on Windows, `//server/share/a/b` on POSIX systems."""

    server: str
    share: str
    parts: tuple[str, ...] = ()

    @property
    def windows(self) -> str:
        return "\\\\" + "\\".join((self.server, self.share, *self.parts))

    @property
    def posix(self) -> str:
        return "//" + "/".join((self.server, self.share, *self.parts))

    @property
    def long(self) -> str:
        r"""The `\\?\UNC\` form, which Win32 opens whatever its length."""
        return LONG_UNC_PREFIX + "\\".join((self.server, self.share, *self.parts))


def is_unc(path: str | os.PathLike[str]) -> bool:
    r"""Whether `path` is written as a UNC path (`\\server\share`, `//server/share`, `\\?\UNC\...`)."""
    try:
        parse_unc(path)
    except ValueError:
        return False
    return True


def parse_unc(path: str | os.PathLike[str]) -> UncPath:
    r"""Split a UNC path into server, share and the rest; ValueError when `path` is not one.

    Accepts `\\server\share\rest`, `//server/share/rest` (either separator) and `\\?\UNC\server\share\rest`.
    Empty and `.` segments of the rest are dropped; `..` is kept (it cannot climb above the share).
    """
    text = os.fspath(path)
    if text[: len(LONG_UNC_PREFIX)].upper() == LONG_UNC_PREFIX.upper():
        segments = text[len(LONG_UNC_PREFIX):].split("\\")  # under \\?\ only the backslash separates
    elif text[:4].replace("/", "\\") in ("\\\\?\\", "\\\\.\\"):
        raise ValueError(f"{text!r} is a Windows device path, not a UNC path (\\\\server\\share\\...)")
    elif _starts_with_two_separators(text):
        segments = _SEPARATORS.split(text[2:])
    else:
        raise ValueError(
            f"{text!r} is not a UNC path: one starts with exactly two separators, then a server and a share "
            "(\\\\server\\share\\... or //server/share/...)"
        )
    server, share = segments[0], segments[1] if len(segments) > 1 else ""
    if not server or not share:
        raise ValueError(f"{text!r} is not a UNC path: it needs a server and a share (\\\\server\\share)")
    parts = tuple(s for s in segments[2:] if s not in ("", "."))
    for name in (server, share, *parts):
        bad = WINDOWS_FORBIDDEN_CHARS.search(name)
        if bad:
            raise ValueError(f"{text!r} has {bad.group()!r} in {name!r}, which a UNC path cannot hold")
    return UncPath(server, share, parts)


# -- WSL -------------------------------------------------------------------------------------------------

WSL_HOSTS = ("wsl.localhost", "wsl$")
"""The UNC servers under which Windows sees the files of WSL distributions (`wsl$` before Windows 11)."""


def wsl_to_windows(
    path: str | os.PathLike[str], *, mount_root: str = "/mnt", distro: str | None = None
) -> str:
    r"""The Windows form of a path seen inside WSL: `/mnt/c/Users/x` -> `C:\Users\x`.

    `//server/share/x` maps to `\\server\share\x`, a relative path keeps being relative. A path in the
    distribution's own filesystem (`/home/x`) maps to `\\wsl.localhost\<distro>\home\x` when `distro`
    is given. `mount_root` is the `[automount] root` of /etc/wsl.conf. Raises ValueError for a path with no
    Windows form: the distribution's own files without `distro`, or a name Windows cannot hold (a `\`,
    `:` or `*` in it, a trailing dot, `CON`...).
    """
    text = os.fspath(path)
    if not text:
        raise ValueError("an empty path has no Windows form")
    if text.startswith("//") and not text.startswith("///"):
        unc = parse_unc(text)
        _check_windows_names(unc.parts, text)
        return unc.windows
    posix = PurePosixPath(text)
    if not posix.is_absolute():
        _check_windows_names(posix.parts, text)
        return "\\".join(posix.parts) or "."
    parts = posix.parts[1:]
    mount = PurePosixPath(mount_root).parts[1:]
    if parts[: len(mount)] == mount and len(parts) > len(mount):
        letter, rest = parts[len(mount)], parts[len(mount) + 1:]
        if len(letter) == 1 and "a" <= letter <= "z":
            _check_windows_names(rest, text)
            return f"{letter.upper()}:\\" + "\\".join(rest)
        if len(letter) == 1 and "A" <= letter <= "Z":
            raise ValueError(
                f"{text!r} is not a drive mount: WSL mounts drive {letter}: at "
                f"{mount_root.rstrip('/')}/{letter.lower()}, in lower case"
            )
    if distro is None:
        raise ValueError(
            f"{text!r} is in the WSL distribution's own filesystem, not on a Windows drive "
            f"({mount_root.rstrip('/')}/<drive letter>/...); pass distro=<name> for its "
            "\\\\wsl.localhost\\<name>\\... form"
        )
    _check_windows_names(parts, text)
    return UncPath(WSL_HOSTS[0], distro, parts).windows


def windows_to_wsl(
    path: str | os.PathLike[str], *, mount_root: str = "/mnt", distro: str | None = None
) -> str:
    r"""The path WSL sees for a Windows path: `C:\Users\x` -> `/mnt/c/Users/x` (either separator, any case).

    `\\server\share\x` maps to `//server/share/x`, `\\wsl.localhost\<distro>\home\x` (or `\\wsl$\...`)
    to `/home/x` (when `distro` is given, only for that distribution), `\\?\` long forms like their short
    ones, and a relative path stays relative. Raises ValueError for a path with no WSL form: drive-relative
    (`C:x`, relative to a current folder WSL does not know), rooted without a drive (`\x`), a device
    (`\\.\COM1`), or another distribution's files.
    """
    text = os.fspath(path)
    if not text:
        raise ValueError("an empty path has no WSL form")
    text = strip_long_path_prefix(text)
    if text.startswith(("\\\\.\\", "//./", "\\??\\", "\\\\?\\", "//?/")):
        raise ValueError(f"{text!r} is a Windows device path; it has no WSL form")
    if len(text) > 2 and _SEPARATORS.match(text[0]) and _SEPARATORS.match(text[1]):
        unc = parse_unc(text)
        if unc.server.casefold() not in WSL_HOSTS:
            return unc.posix
        if distro is not None and unc.share.casefold() != distro.casefold():
            raise ValueError(f"{text!r} is in the WSL distribution {unc.share!r}, not in {distro!r}")
        return "/" + "/".join(unc.parts)
    drive = _DRIVE.match(text)
    if drive:
        rest = text[2:]
        if not rest or not _SEPARATORS.match(rest[0]):
            raise ValueError(
                f"{text!r} is relative to the current folder of drive {drive.group(1).upper()}:, which WSL "
                f"cannot know; write it absolute ({drive.group(1).upper()}:\\...)"
            )
        segments = [s for s in _SEPARATORS.split(rest) if s not in ("", ".")]
        return "/".join((mount_root.rstrip("/"), drive.group(1).lower(), *segments))
    if _SEPARATORS.match(text[0]):
        raise ValueError(f"{text!r} is relative to the current drive, which WSL cannot know; add its letter")
    return "/".join(s for s in _SEPARATORS.split(text) if s not in ("", ".")) or "."


def _starts_with_two_separators(text: str) -> bool:
    """`\\\\x` or `//x` (either separator), but not three separators in a row."""
    return len(text) > 2 and text[0] in "\\/" and text[1] in "\\/" and text[2] not in "\\/"


def _check_windows_names(segments: Iterable[str], original: str) -> None:
    for segment in segments:
        if segment in (".", ".."):
            continue
        problem = segment_problem(segment)
        if problem:
            raise ValueError(f"{original!r} has no Windows form: {problem}")


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
