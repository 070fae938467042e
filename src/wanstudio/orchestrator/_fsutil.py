"""Small filesystem primitives with commit-point semantics: write to a private temp file, then rename."""

from __future__ import annotations

import json
import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import Any


_HOST = socket.gethostname().replace("@", "_").replace("-", "_") or "host"


def unique_name(prefix: str) -> str:
    """A name no other process, thread or host will pick: `prefix-pid-random@host`."""
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:12]}@{_HOST}"


def owner_of(name: str) -> tuple[int, str] | None:
    """The (pid, host) embedded in a name made by `unique_name`, or None for other names."""
    stem, _, host = name.rpartition("@")
    parts = stem.split("-")
    if not host or len(parts) < 3 or not parts[1].isdigit():
        return None
    return int(parts[1]), host


def process_alive(pid: int, host: str) -> bool:
    """Whether the process that made a name is still running; True when that cannot be known here."""
    if host != _HOST or os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_write_json(path: Path, document: Any) -> None:
    """Write `document` as JSON so that readers see the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(unique_name(f".{path.name}") + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path: Path) -> Any | None:
    """The JSON document at `path`, or None when it is absent or unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def link_or_copy(source: Path, target: Path) -> None:
    """Make `target` a hard link of `source`, or a copy where the filesystem cannot link."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def fsync_dir(path: Path) -> None:
    """Persist a rename inside `path` (a no-op where directories cannot be opened, as on Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    """Delete a folder tree, ignoring what is already gone (read-only files need only a writable folder)."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
