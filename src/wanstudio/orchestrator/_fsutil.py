"""Small filesystem primitives with commit-point semantics: write to a private temp file, then rename."""

from __future__ import annotations

import json
import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import Any

from wanstudio.errors import PathInvalidError

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


# -- symlinks out of the store -------------------------------------------------------------------------------


def resolves_outside(path: Path | str, root: Path | str) -> bool:
    """Whether `path`, every symlink on the way followed, ends outside `root` (itself resolved first).

    `os.path.realpath` resolves as far as the path exists, so a path about to be created is judged by its
    folders, and a dangling link by where it points. `root` may itself be a symlink (a store moved to
    another disk); only links below it that lead out count. A symlink loop resolves to itself and counts
    as inside: opening it fails anyway.
    """
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    try:
        return os.path.commonpath([real_root, real]) != real_root
    except ValueError:  # different drives on Windows
        return True


def require_inside(path: Path, root: Path, *, what: str) -> Path:
    """`path` itself when it resolves inside `root`; PATH_INVALID when a symlink leads it out of the store.

    The store calls it before following a path it will read, link, write or hash, so that a link planted
    under MODELS_ROOT (or left by hand) cannot make it hash, publish or overwrite a file elsewhere.
    """
    if resolves_outside(path, root):
        raise PathInvalidError(
            f"{what}: {path} leads out of the store to {os.path.realpath(path)} through a symbolic link; "
            "the store does not follow links out of MODELS_ROOT",
            suggestions=[
                f"remove the link (the store keeps real files and folders under {root})",
                "to keep models on another disk, point MODELS_ROOT there (MODELS_ROOT itself may be a link)",
            ],
        )
    return path


def escaping_links(folder: Path, root: Path) -> list[str]:
    """The `/`-separated paths, relative to `folder`, of the symlinks in its tree that resolve outside `root`.

    One directory walk that follows no link, and one `realpath` per link found: committed variant folders
    hold hard links, so this costs a `scandir` per folder. `folder` itself, when it leads out, is `.`.
    """
    if resolves_outside(folder, root):
        return ["."]
    found: list[str] = []
    pending = [(str(folder), "")]
    while pending:
        current, prefix = pending.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            relative = prefix + entry.name
            if entry.is_symlink():
                if resolves_outside(entry.path, root):
                    found.append(relative)
            elif entry.is_dir(follow_symlinks=False):
                pending.append((entry.path, relative + "/"))
    return sorted(found)
