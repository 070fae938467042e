"""Every path under MODELS_ROOT (CONTRACT section 4), computed in one place so no two parts can drift.

    {root}/{family}/{model_id}/{variant}/...      committed variants: what diffusers loads
    {root}/.wan/blobs/sha256/{ab}/{digest}        content-addressed files, each stored once
    {root}/.wan/partial/{key}.part[.journal]      in-flight downloads and their progress (kept for resume)
    {root}/.wan/tmp/                              staging folders and trash, never read by users
    {root}/.wan/locks/...                         cross-process locks (one per variant, one per blob)
    {root}/.wan/state/{family}/{model_id}/{variant}.json   what was committed, from where, when; its mtime
                                                          is the variant's last use (gc: docs/disk.md)
    {root}/.wan/state/{family}/{model_id}/{variant}.pin    present while the variant is pinned
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StoreLayout:
    """The deterministic paths of one store."""

    root: Path

    @property
    def meta(self) -> Path:
        return self.root / ".wan"

    @property
    def blobs(self) -> Path:
        return self.meta / "blobs" / "sha256"

    @property
    def partial(self) -> Path:
        return self.meta / "partial"

    @property
    def tmp(self) -> Path:
        return self.meta / "tmp"

    @property
    def locks(self) -> Path:
        return self.meta / "locks"

    def variant_dir(self, family: str, model_id: str, variant: str) -> Path:
        return self.root / family / model_id / variant

    def blob(self, sha256: str) -> Path:
        return self.blobs / sha256[:2] / sha256

    def partial_file(self, key: str) -> Path:
        """Where a download in progress lives; `key` is the file's sha256 or, before that is known, its Hub digest."""
        return self.partial / f"{key}.part"

    def state_file(self, family: str, model_id: str, variant: str) -> Path:
        return self.meta / "state" / family / model_id / f"{variant}.json"

    def pin_file(self, family: str, model_id: str, variant: str) -> Path:
        return self.meta / "state" / family / model_id / f"{variant}.pin"

    def variant_lock(self, family: str, model_id: str, variant: str) -> Path:
        return self.locks / "variants" / family / model_id / f"{variant}.lock"

    def blob_lock(self, key: str) -> Path:
        return self.locks / "blobs" / f"{key}.lock"
