"""The model store: content-addressed blobs, variant folders committed by one rename, and their state.

A file's bytes are kept once, under their sha256, however many variants use them; a variant folder is a
tree of hard links to blobs (copies where the filesystem cannot link). A variant becomes visible only
when a fully staged folder is renamed to its final path, after every blob was verified, so a reader
never sees half a model, whatever happens to the writer.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from wanstudio.orchestrator._fsutil import (
    atomic_write_json,
    fsync_dir,
    link_or_copy,
    owner_of,
    process_alive,
    read_json,
    remove_tree,
    require_inside,
    unique_name,
)
from wanstudio.orchestrator.layout import StoreLayout
from wanstudio.orchestrator.manifest import Model, Variant

HASH_CHUNK_BYTES = 8 * 1024 * 1024
HASH_THREADS = max(1, min(4, os.cpu_count() or 1))
"""Files `check --deep` hashes at once: hashlib drops the GIL while hashing, so each thread has a core."""
STATE_FORMAT = 1
USE_RECORD_INTERVAL = 60.0
"""Seconds between two use records of one variant: LRU needs minutes, not a disk write per warm ensure."""


@dataclass(frozen=True)
class CommittedFile:
    """A file as committed into a variant folder."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class VariantRecord:
    """What the store knows of a committed variant: its files, what was left out, and where bytes came from."""

    model_id: str
    family: str
    variant: str
    files: tuple[CommittedFile, ...]
    excluded_components: tuple[str, ...] = ()
    sources: Mapping[str, int] = field(default_factory=dict)
    committed_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "id": self.model_id,
            "family": self.family,
            "variant": self.variant,
            "files": {f.path: {"size": f.size, "sha256": f.sha256} for f in self.files},
            "excluded_components": list(self.excluded_components),
            "sources": dict(self.sources),
            "committed_at": self.committed_at,
        }

    @classmethod
    def from_json(cls, document: Any) -> "VariantRecord | None":
        try:
            return cls(
                model_id=document["id"],
                family=document["family"],
                variant=document["variant"],
                files=tuple(CommittedFile(p, int(m["size"]), m["sha256"]) for p, m in document["files"].items()),
                excluded_components=tuple(document.get("excluded_components", ())),
                sources=dict(document.get("sources", {})),
                committed_at=float(document.get("committed_at", 0.0)),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


class Store:
    """One MODELS_ROOT: blobs, committed variants and their records."""

    def __init__(self, root: Path) -> None:
        self.layout = StoreLayout(root)

    # -- blobs ------------------------------------------------------------------------------------------------

    def blob_size(self, sha256: str) -> int | None:
        """The size of the blob with this digest, or None when the store does not have it."""
        try:
            return os.stat(self.layout.blob(sha256)).st_size
        except OSError:
            return None

    def has_blob(self, sha256: str, size: int) -> bool:
        return self.blob_size(sha256) == size

    def add_blob(self, verified_file: Path, sha256: str, *, read_only: bool = True) -> Path:
        """Move a verified file into the blob store.

        Blobs are made read-only (an edit through a variant folder would corrupt every variant sharing it),
        except a file linked in from another tool's cache, whose permissions are that tool's.
        """
        target = self.layout.blob(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        if read_only:
            os.chmod(verified_file, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        os.replace(verified_file, target)
        fsync_dir(target.parent)
        return target

    def discard_blob(self, sha256: str) -> None:
        """Remove a blob found to be damaged, so that the next ensure fetches it again."""
        self.layout.blob(sha256).unlink(missing_ok=True)

    # -- variants ---------------------------------------------------------------------------------------------

    def variant_dir(self, model: Model, variant: Variant | str) -> Path:
        name = variant if isinstance(variant, str) else variant.name
        return self.layout.variant_dir(model.family, model.id, name)

    def commit_variant(self, model: Model, variant: Variant, record: VariantRecord) -> Path:
        """Stage the variant folder from blobs and make it visible with one rename; then record it."""
        final = self.variant_dir(model, variant)
        root = self.layout.root
        require_inside(final.parent, root, what=f"the folder of {model.id}")
        self.layout.tmp.mkdir(parents=True, exist_ok=True)
        staging = require_inside(self.layout.tmp, root, what="the staging folder") / unique_name("stage")
        try:
            for file in record.files:
                target = staging / file.path
                target.parent.mkdir(parents=True, exist_ok=True)
                blob = require_inside(self.layout.blob(file.sha256), root, what=f"the stored copy of {file.path}")
                link_or_copy(blob, target)
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                # Replacing a committed variant (repair, or more components): the old tree goes to the trash
                # first; readers holding files open keep them, new readers wait for the rename below.
                trash = self.layout.tmp / unique_name("trash")
                os.rename(final, trash)
                os.rename(staging, final)
                remove_tree(trash)
            else:
                os.rename(staging, final)
            fsync_dir(final.parent)
        finally:
            remove_tree(staging)
        atomic_write_json(self.layout.state_file(model.family, model.id, variant.name), record.to_json())
        return final

    def record(self, model: Model, variant: str) -> VariantRecord | None:
        """The record of a committed variant, or None."""
        document = read_json(self.layout.state_file(model.family, model.id, variant))
        return VariantRecord.from_json(document) if document is not None else None

    def committed_variants(self, model: Model) -> list[str]:
        """Names of the variants of `model` that have a folder in the store."""
        folder = self.layout.root / model.family / model.id
        try:
            return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir(follow_symlinks=False))
        except OSError:
            return []

    def is_pinned(self, model: Model, variant: str) -> bool:
        return self.layout.pin_file(model.family, model.id, variant).exists()

    def set_pinned(self, model: Model, variant: str, pinned: bool) -> bool:
        """Pin (gc never removes the variant) or unpin it; whether that changed anything.

        The pin is a file of its own beside the state record, so a commit that rewrites the record keeps it,
        and a variant can be pinned before it is downloaded.
        """
        path = self.layout.pin_file(model.family, model.id, variant)
        was = path.exists()
        if pinned and not was:
            atomic_write_json(path, {"id": model.id, "variant": variant, "pinned_at": time.time()})
        elif not pinned:
            path.unlink(missing_ok=True)
        return was != pinned

    def mark_used(self, model: Model, variant: str) -> None:
        """Record a use of the variant (for least-recently-used eviction) as the state file's mtime."""
        state_file = self.layout.state_file(model.family, model.id, variant)
        try:
            if time.time() - os.stat(state_file).st_mtime > USE_RECORD_INTERVAL:
                os.utime(state_file)
        except OSError:
            pass

    # -- housekeeping -----------------------------------------------------------------------------------------

    def sweep_tmp(self, max_age_seconds: float = 7 * 86400) -> None:
        """Remove staging folders and trash left by processes that died mid-commit."""
        try:
            entries = list(os.scandir(self.layout.tmp))
        except OSError:
            return
        now = time.time()
        for entry in entries:
            owner = owner_of(entry.name)
            dead = owner is not None and not process_alive(*owner)
            try:
                stale = now - entry.stat(follow_symlinks=False).st_mtime > max_age_seconds
            except OSError:
                continue
            if dead or stale:
                remove_tree(Path(entry.path))


def sha256_of(path: Path) -> str:
    """The sha256 of a file, read in large chunks into one reused buffer.

    `read()` would make a new 8 MiB object per chunk, mapped fresh from the kernel each time; `readinto`
    one buffer does not. Large reads, and sequential read-ahead advised, keep cold and network reads fast.
    """
    digest = hashlib.sha256()
    buffer = bytearray(HASH_CHUNK_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while size := handle.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()


def hash_files(paths: Sequence[Path], threads: int = HASH_THREADS) -> dict[Path, str | None]:
    """The sha256 of each file, several files at once; None for a file that cannot be read."""

    def one(path: Path) -> str | None:
        try:
            return sha256_of(path)
        except OSError:
            return None

    if threads <= 1 or len(paths) <= 1:
        return {path: one(path) for path in paths}
    with ThreadPoolExecutor(max_workers=min(threads, len(paths)), thread_name_prefix="wan-hash") as pool:
        return dict(zip(paths, pool.map(one, paths)))


def committed_files(pairs: Iterable[tuple[str, int, str]]) -> tuple[CommittedFile, ...]:
    return tuple(sorted((CommittedFile(p, s, d) for p, s, d in pairs), key=lambda f: f.path))
