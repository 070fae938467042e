"""The in-process memory of warm ensures: a result trusted while what it was checked against is unchanged."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wanstudio.orchestrator.manifest import Manifest, Model
from wanstudio.orchestrator.store import USE_RECORD_INTERVAL, Store

if TYPE_CHECKING:
    from wanstudio.orchestrator.orchestrator import EnsureResult


@dataclass(frozen=True)
class WarmEntry:
    """A warm result and the fingerprint of what it was checked against.

    A repeated ensure in one process trusts the full check made before as long as the manifest object,
    the variant's state record and its folder are unchanged (two stats): every commit, repair or removal
    by wanstudio replaces the record or the folder. A file deleted by hand inside a component folder is
    noticed by the next process, by `status`/`check`, or by a full check once the record is touched again
    for use tracking (at most every USE_RECORD_INTERVAL seconds).
    """

    manifest: Manifest
    result: "EnsureResult"
    state_file: str
    folder: str
    fingerprint: tuple[int, ...]

    @classmethod
    def capture(cls, manifest: Manifest, result: "EnsureResult", store: Store, model: Model) -> "WarmEntry":
        state_file = str(store.layout.state_file(model.family, model.id, result.variant))
        folder = str(result.path)
        return cls(manifest, result, state_file, folder, _fingerprint(state_file, folder) or ())

    def still_valid(self, manifest: Manifest) -> bool:
        return manifest is self.manifest and _fingerprint(self.state_file, self.folder) == self.fingerprint


def _fingerprint(state_file: str, folder: str) -> tuple[int, ...] | None:
    try:
        state, tree = os.stat(state_file), os.stat(folder)
    except OSError:
        return None
    if time.time() - state.st_mtime > USE_RECORD_INTERVAL:
        return None  # due for a use record: take the full path, which writes it
    return (state.st_ino, state.st_mtime_ns, state.st_size, tree.st_ino, tree.st_mtime_ns)
