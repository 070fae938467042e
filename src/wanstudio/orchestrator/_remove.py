"""Removing things from the store beside processes that may be using them (for gc).

Each removal takes the lock of what it removes without waiting (a process working on it wins, and the
thing stays), checks that nothing changed since gc decided, and counts the allocated bytes of every inode
whose last link it removes, so that the bytes reported are the bytes the filesystem got back. A variant
folder leaves by one rename into `.wan/tmp` before anything in it is deleted: a reader sees all of it or
none of it.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from wanstudio.orchestrator._fsutil import owner_of, process_alive, unique_name
from wanstudio.orchestrator._locks import describe_holder, try_lock
from wanstudio.orchestrator.layout import StoreLayout
from wanstudio.orchestrator.usage import Leftover, RecordedVariant, allocated, entries

if TYPE_CHECKING:
    from wanstudio.orchestrator._locks import OsLock

log = logging.getLogger("wanstudio.gc")


def remove_variant(layout: StoreLayout, entry: RecordedVariant) -> int | str:
    """Remove one variant under its lock; the bytes freed, or why it was left alone."""
    family, model_id, variant = entry.key
    lock_path = layout.variant_lock(family, model_id, variant)
    lock = _try_lock(lock_path)
    if lock is None:
        return f"in use: its lock is held by {describe_holder(lock_path)}"
    try:
        try:
            st = os.stat(entry.state_file)
        except FileNotFoundError:
            return "removed meanwhile by another process"
        if st.st_mtime_ns != entry.mtime_ns:
            return "used since gc planned its removal"
        if layout.pin_file(family, model_id, variant).exists():
            return "pinned since gc planned its removal"
        folder = layout.variant_dir(family, model_id, variant)
        trash = None
        if folder.is_dir():
            # One rename takes the whole folder away: readers see the variant or nothing, never half of it.
            # No fsync: a crash that undoes it leaves a whole folder, with or without its record, which
            # the next ensure takes as it is or commits again.
            layout.tmp.mkdir(parents=True, exist_ok=True)
            trash = layout.tmp / unique_name("gc")
            os.rename(folder, trash)
        os.unlink(entry.state_file)
        return allocated(st) + (_remove_counting(trash) if trash else 0)
    finally:
        lock.release()


def remove_blob(layout: StoreLayout, digest: str, expected_nlink: int) -> int | None:
    """Remove a blob under its lock unless it has more links than `expected_nlink` now; the bytes freed,
    or None when it stays."""
    lock = _try_lock(layout.blob_lock(digest))
    if lock is None:
        return None  # an ensure is fetching or checking it
    try:
        path = layout.blob(digest)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if st.st_nlink > expected_nlink:
            return None  # linked since the plan: an ensure is staging a variant from it
        return (allocated(st) if st.st_nlink == 1 else 0) if _quietly(os.unlink, path) else None
    finally:
        lock.release()


def remove_leftover(layout: StoreLayout, leftover: Leftover) -> int | None:
    """Remove a leftover unless its owner came back to it (the bytes freed, or None)."""
    if leftover.kind == "tmp":
        owner = owner_of(leftover.path.name)
        return None if owner is not None and process_alive(*owner) else _remove_counting(leftover.path)
    lock = _try_lock(layout.blob_lock(leftover.key or leftover.path.name))
    if lock is None:
        return None  # a download is resuming it right now
    try:
        newest = max((os.lstat(p).st_mtime_ns for p in leftover.paths if os.path.lexists(p)), default=None)
        if newest != leftover.mtime_ns:
            return None  # written since the plan
        return sum(_remove_counting(p) for p in leftover.paths)
    finally:
        lock.release()


def _remove_counting(path: Path) -> int:
    """Delete a file or tree; the allocated bytes of each inode whose last link went (directories too)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    if stat.S_ISDIR(st.st_mode):
        freed = sum(_remove_counting(Path(e.path)) for e in list(entries(path)))
        return freed + (allocated(st) if _quietly(os.rmdir, path) else 0)
    return (allocated(st) if st.st_nlink == 1 else 0) if _quietly(os.unlink, path) else 0


def _quietly(remove: Callable[[Path], None], path: Path) -> bool:
    """Whether `remove(path)` removed it; a failure is logged, and what stays is swept by a later gc."""
    try:
        remove(path)
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("gc: could not remove %s: %s", path, exc.strerror or exc)
        return False


def _try_lock(path: Path) -> "OsLock | None":
    """The lock at `path` if it is free now, else None: gc never waits for a process that is working."""
    return try_lock(path)
