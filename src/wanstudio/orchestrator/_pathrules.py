"""Path safety rules applied to every path the manifest names, before anything touches the disk.

The store must behave the same on Linux, macOS, Windows and WSL, so a manifest path is held to the
strictest of their rules: relative and `/`-separated, no `.`/`..` segments, no characters or names that
Windows reserves, no trailing dot or space (Windows silently strips them), and no two paths in one folder
that differ only by case (they would overwrite each other on case-insensitive filesystems).
"""

from __future__ import annotations

import re
from typing import Iterable

_WINDOWS_RESERVED = {
    "CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$",
    *(f"{port}{digit}" for port in ("COM", "LPT") for digit in "123456789\u00b9\u00b2\u00b3"),
}
_FORBIDDEN_CHARS = re.compile(r'[<>:"\\|?*\x00-\x1f]')


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
    match = _FORBIDDEN_CHARS.search(segment)
    if match:
        return f"the name {segment!r} contains {match.group()!r}, which Windows does not allow in file names"
    if segment[-1] in ". ":
        return f"the name {segment!r} ends with a dot or space, which Windows silently drops"
    if segment.split(".")[0].upper().rstrip() in _WINDOWS_RESERVED:
        return f"the name {segment!r} is reserved on Windows ({segment.split('.')[0].upper()})"
    return None


def case_collisions(paths: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs of paths (files or their folders) that name the same entry on a case-insensitive filesystem."""
    seen: dict[str, str] = {}
    collisions: list[tuple[str, str]] = []
    for path in paths:
        parts = path.split("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            folded = prefix.casefold()
            other = seen.setdefault(folded, prefix)
            if other != prefix:
                collisions.append((other, prefix))
                break
    return collisions
