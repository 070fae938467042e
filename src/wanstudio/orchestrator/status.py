"""What is on disk for a variant, compared with what the manifest asks for: `status` and `check`.

Reads the store only: no lock, no network, no side effects, so it is safe for health checks and for
running beside an ensure in progress.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from wanstudio.orchestrator._fsutil import resolves_outside
from wanstudio.orchestrator._shards import needed_files
from wanstudio.orchestrator.manifest import ManifestFile, Model, Variant
from wanstudio.orchestrator.store import Store, VariantRecord, hash_files

State = Literal["complete", "partial", "missing", "corrupt"]


@dataclass(frozen=True)
class VariantStatus:
    """The state of one variant in the store (CONTRACT section 5, `wan.models.status/1`)."""

    id: str
    variant: str
    state: State
    path: Path
    missing_files: tuple[str, ...]
    corrupt_files: tuple[str, ...]
    bytes_present: int
    bytes_needed: int | None
    pinned: bool

    @property
    def complete(self) -> bool:
        return self.state == "complete"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "variant": self.variant,
            "state": self.state,
            "path": str(self.path),
            "missing_files": list(self.missing_files),
            "corrupt_files": list(self.corrupt_files),
            "bytes_present": self.bytes_present,
            "bytes_needed": self.bytes_needed,
            "pinned": self.pinned,
        }


def wanted_files(store: Store, model: Model, variant: Variant, excluded: frozenset[str]) -> list[ManifestFile]:
    """The files a complete copy of `variant` has: all listed, less excluded components and unused shards."""
    candidates = [f for f in variant.files if f.component not in excluded]

    def read_index(index: ManifestFile) -> bytes | None:
        if index.sha256 is None:
            return None
        try:
            return store.layout.blob(index.sha256).read_bytes()
        except OSError:
            return None

    return needed_files(candidates, read_index, model.id)


def expected_files(store: Store, model: Model, variant: Variant, record: VariantRecord | None) -> list[ManifestFile]:
    """The files a complete copy has, given the variant's record (what was left out, or the Hub's listing)."""
    if variant.lists_files:
        excluded = frozenset(record.excluded_components) if record else frozenset()
        return wanted_files(store, model, variant, excluded)
    if record is not None:  # a Hub-listed variant: its files are what was committed
        return [ManifestFile(f.path, f.size, f.sha256) for f in record.files]
    return []


def variant_status(
    store: Store,
    model: Model,
    variant: Variant,
    *,
    deep: bool = False,
    record: VariantRecord | None = None,
    wanted: list[ManifestFile] | None = None,
) -> VariantStatus:
    """Compare the store with the manifest for one variant; with `deep`, hash every present file.

    `record` and `wanted` (from `expected_files`) save reading them again when the caller has them.
    """
    folder = store.variant_dir(model, variant)
    record = record or store.record(model, variant.name)
    if wanted is None:
        wanted = expected_files(store, model, variant, record)
    committed = folder.is_dir()
    missing: list[str] = []
    corrupt: list[str] = []
    bytes_present = 0
    sizes: dict[str, int | None] = {}
    targets: dict[str, Path] = {}
    for file in wanted:
        if committed:
            targets[file.path] = folder / file.path
            sizes[file.path] = _size(targets[file.path])
        else:
            if file.sha256:
                targets[file.path] = store.layout.blob(file.sha256)
            sizes[file.path] = store.blob_size(file.sha256) if file.sha256 else None
    digests: dict[Path, str | None] = {}
    if deep:  # every file of the right size, at once; never one that a symlink leads out of the store
        root = store.layout.root
        digests = hash_files([
            targets[f.path] for f in wanted
            if f.sha256 is not None and sizes[f.path] == f.size and not resolves_outside(targets[f.path], root)
        ])
    for file in wanted:
        size = sizes[file.path]
        if size is None:
            if not file.optional:
                missing.append(file.path)
            continue
        bad = size != file.size or (
            deep and file.sha256 is not None and digests.get(targets[file.path]) != file.sha256
        )
        if bad:
            corrupt.append(file.path)
        else:
            bytes_present += size
    state: State
    if corrupt:
        state = "corrupt"
    elif committed and not missing and wanted:
        state = "complete"
    elif bytes_present or committed or _has_partials(store, wanted):
        state = "partial"
    else:
        state = "missing"
    sizes = {f.path: f.size for f in wanted}
    bytes_needed = sum(sizes[p] for p in missing + corrupt) if variant.lists_files or record else None
    return VariantStatus(
        id=model.id,
        variant=variant.name,
        state=state,
        path=folder,
        missing_files=tuple(missing),
        corrupt_files=tuple(corrupt),
        bytes_present=bytes_present,
        bytes_needed=bytes_needed,
        pinned=store.is_pinned(model, variant.name),
    )


def _size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _has_partials(store: Store, files: list[ManifestFile]) -> bool:
    return any(store.layout.partial_file(f.key).exists() for f in files)
