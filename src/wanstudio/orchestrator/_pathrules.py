"""Path safety rules applied to every path the manifest names, before anything touches the disk.

The store must behave the same on Linux, macOS, Windows and WSL, so a manifest path is held to the
strictest of their rules: relative and `/`-separated, no `.`/`..` segments, no characters or names that
Windows reserves, no trailing dot or space (Windows silently strips them), no name longer than 255 bytes,
and no two paths in one folder that differ only by case or Unicode normalisation (they would overwrite
each other on case-insensitive or normalising filesystems: NTFS, APFS, HFS+).

The rules for whole local paths (Windows long paths, WSL and UNC forms) are in `platform_paths`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

WINDOWS_RESERVED_NAMES = frozenset({
    "CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$",
    # Microsoft's list names COM0/LPT0 and the Latin-1 superscript digits too; stricter is safer.
    *(f"{port}{digit}" for port in ("COM", "LPT") for digit in "0123456789\u00b9\u00b2\u00b3"),
})
"""Device names Windows resolves in every folder, whatever the extension: `nul.txt` is the null device."""

WINDOWS_FORBIDDEN_CHARS = re.compile(r'[<>:"\\|?*\x00-\x1f]')
"""Characters no Windows file name may contain (the backslash is the separator)."""

MAX_NAME_BYTES = 255
"""The longest file name, in UTF-8 bytes, on ext4, XFS, APFS and (in UTF-16 units, never more) NTFS."""


def path_problem(path: str) -> str | None:
    """Why `path` is not a safe relative manifest path, or None when it is."""
    if not path:
        return "the path is empty"
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return "the path is absolute; manifest paths are relative to the variant folder"
    if "\\" in path:
        return "the path contains a backslash; use '/' as the separator"
    for segment in path.split("/"):
        problem = segment_problem(segment)
        if problem:
            return problem
    return None


def segment_problem(segment: str) -> str | None:
    """Why one path segment (a file or folder name) is unsafe, or None."""
    if segment in ("", ".", ".."):
        return f"the segment {segment!r} would leave or confuse the variant folder"
    match = WINDOWS_FORBIDDEN_CHARS.search(segment)
    if match:
        return f"the name {segment!r} contains {match.group()!r}, which Windows does not allow in file names"
    if segment[-1] in ". ":
        return f"the name {segment!r} ends with a dot or space, which Windows silently drops"
    device = windows_device_name(segment)
    if device:
        return f"the name {segment!r} is reserved on Windows ({device})"
    if len(segment.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"the name {segment[:40]!r}... is longer than {MAX_NAME_BYTES} bytes, the limit of filesystems"
    return None


def windows_device_name(segment: str) -> str | None:
    """The device a file name stands for on Windows (`nul.tar.gz` -> `NUL`, `COM1 .txt` -> `COM1`), or None.

    Windows ignores everything from the first dot, and spaces before it, when it looks for device names.
    """
    base = segment.split(".")[0].rstrip(" ").upper()
    return base if base in WINDOWS_RESERVED_NAMES else None


def fold_name(name: str) -> str:
    """The form under which case-insensitive, normalising filesystems compare names.

    Canonical caseless matching (the Unicode standard, section 3.13): `café` typed as NFC and as NFD,
    or `Straße` and `STRASSE`, fold to one key. It is stricter than NTFS's simple upper-casing, which
    is the safe side.
    """
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", name).casefold())


def case_collisions(paths: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs of paths (files or their folders) that name the same entry on a case-insensitive filesystem.

    Names that differ only in Unicode normalisation collide too: APFS and HFS+ treat them as one.
    """
    seen: dict[str, str] = {}
    collisions: list[tuple[str, str]] = []
    for path in paths:
        parts = path.split("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            folded = fold_name(prefix)
            other = seen.setdefault(folded, prefix)
            if other != prefix:
                collisions.append((other, prefix))
                break
    return collisions
