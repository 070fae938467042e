r"""Windows, WSL and UNC path forms: what differs between the systems a store lives on.

Pure string functions (no filesystem access), so the Windows rules are tested on Linux too.

* `to_windows_long_path`: a Win32 path of MAX_PATH (260) UTF-16 units or more only opens with the
  `\\?\` prefix (`\\?\UNC\server\share\...` for a UNC path), unless the machine opted in to long
  paths. The prefix turns Win32's normalisation off, so `.`/`..` and doubled separators are resolved
  here first.
* `wsl_to_windows` / `windows_to_wsl`: WSL mounts drive `C:` at `/mnt/c`; a UNC share `\\server\share`
  is `//server/share`; the distribution's own files are `\\wsl.localhost\<distro>\...` from Windows.
  A path with no counterpart raises ValueError saying why.
* `parse_unc`: the server, share and rest of a UNC path in any of its written forms.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

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
