"""Garbage collection of the store: a frozen plan, then its execution (CONTRACT `wan.models.gc/1`).

`plan_gc` reads the store and decides, touching nothing (that is `--dry-run`); `execute_gc` carries a
plan out. The plan, in this order (docs/disk.md):

1. blobs no variant uses (orphans) and leftovers of dead or long-stopped work (`.wan/partial` downloads
   untouched for a day, `.wan/tmp` entries of dead processes or older than a day) go first;
2. variants unused for longer than `ttl`;
3. in each family over its quota (`WAN_FAMILY_QUOTAS`), that family's least recently used variants
   until it fits;
4. while the store is over `max_bytes` (default `WAN_QUOTA_BYTES`), the least recently used variants.

A variant's last use is its state record's mtime (`Store.mark_used`: every ensure, warm ones too, and
so every generation). Pinned variants are never removed. Bytes are allocated bytes, a blob counted once:
removing a variant gives back its folder, its record and the blobs no remaining variant uses.

Execution is safe beside running ensures: each variant is removed only under its lock, taken without
waiting (a variant being ensured is skipped and reported), and only if its record is unchanged since the
plan (not used, not pinned meanwhile). Its folder is first renamed into `.wan/tmp`, so a reader sees the
whole variant or none of it; then its record and the renamed tree go. Blobs go last, each under its own
lock, once no record uses it and no new link to it appeared. Every removed inode's blocks are counted
when its last link goes, so `reclaimed_bytes` is what the filesystem got back.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from wanstudio.errors import InvalidParamsError, ModelNotFoundError
from wanstudio.orchestrator._remove import remove_blob, remove_leftover, remove_variant
from wanstudio.orchestrator.layout import StoreLayout
from wanstudio.orchestrator.manifest import Manifest
from wanstudio.orchestrator.usage import (
    Blob,
    Leftover,
    RecordedVariant,
    Tree,
    entries,
    family_bytes,
    scan_blobs,
    scan_records,
    scan_tree,
    stale_partials,
    stale_tmp,
    store_bytes,
    variant_folders,
)

if TYPE_CHECKING:
    from wanstudio.orchestrator.store import Store

log = logging.getLogger("wanstudio.gc")

LEFTOVER_AGE_SECONDS = 86400.0
"""Downloads untouched, and tmp entries without a live owner, for this long are leftovers."""

Key = tuple[str, str, str]  # family, model id, variant


# -- the report ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GcVariant:
    """A variant removed (planned, on a dry run), why, and the allocated bytes that gives back."""

    id: str
    variant: str
    family: str
    bytes: int
    last_used: float
    reason: str  # "ttl", "family_quota" or "max_bytes"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "last_used": _iso(self.last_used)}


@dataclass(frozen=True)
class GcKept:
    """A pinned variant, kept; `would_remove_for` names the rule that would have removed it unpinned."""

    id: str
    variant: str
    family: str
    last_used: float
    would_remove_for: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "last_used": _iso(self.last_used)}


@dataclass(frozen=True)
class GcSkipped:
    """A planned removal that execution left alone, and why (in use, used or pinned since the plan)."""

    id: str
    variant: str
    family: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GcLeftover:
    """A stale download (`partial`) or tmp entry (`tmp`), relative to MODELS_ROOT."""

    path: str
    kind: str
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GcLimit:
    """A size limit gc worked to: the store's (`max_bytes`) or a family's quota, before and after."""

    scope: str  # "store" or "family"
    family: str | None
    max_bytes: int
    bytes_before: int
    bytes_after: int

    @property
    def met(self) -> bool:
        return self.bytes_after <= self.max_bytes

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}


@dataclass(frozen=True)
class GcReport:
    """What gc removed, or on a dry run would remove (CONTRACT `wan.models.gc/1`, plus the fields after
    `kept_pinned`). `reclaimed_bytes` is the total: removed variants, orphan blobs and leftovers."""

    dry_run: bool
    reclaimed_bytes: int
    removed: tuple[GcVariant, ...]
    kept_pinned: tuple[GcKept, ...]
    skipped: tuple[GcSkipped, ...] = ()
    orphan_blobs: int = 0
    orphan_bytes: int = 0
    leftovers: tuple[GcLeftover, ...] = ()
    limits: tuple[GcLimit, ...] = ()
    store_bytes_before: int = 0
    store_bytes_after: int = 0
    ttl: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "reclaimed_bytes": self.reclaimed_bytes,
            "removed": [r.to_json() for r in self.removed],
            "kept_pinned": [k.to_json() for k in self.kept_pinned],
            "skipped": [s.to_json() for s in self.skipped],
            "orphan_blobs": {"count": self.orphan_blobs, "bytes": self.orphan_bytes},
            "leftovers": [item.to_json() for item in self.leftovers],
            "store_bytes": {"before": self.store_bytes_before, "after": self.store_bytes_after},
            "limits": [limit.to_json() for limit in self.limits],
            "ttl_seconds": self.ttl,
        }


# -- the plan ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedRemoval:
    """One variant to remove: its folder and record (`own_bytes`), then the blobs only it still used."""

    entry: RecordedVariant
    reason: str
    own_bytes: int
    blobs: tuple[str, ...]
    blob_bytes: int

    def as_report(self, bytes_: int | None = None) -> GcVariant:
        e = self.entry
        total = self.own_bytes + self.blob_bytes if bytes_ is None else bytes_
        return GcVariant(e.model_id, e.variant, e.family, total, e.last_used, self.reason)


@dataclass(frozen=True)
class PlannedBlob:
    """A blob to remove; it goes only if it has no more links than `expected_nlink` by then."""

    digest: str
    bytes: int  # what removing it frees: 0 when another tool's cache links the same file
    expected_nlink: int


@dataclass(frozen=True)
class GcPlan:
    """A frozen decision: what to remove and what that is expected to give back. Nothing is touched."""

    layout: StoreLayout
    removals: tuple[PlannedRemoval, ...]
    blobs: Mapping[str, PlannedBlob]
    orphans: tuple[str, ...]
    leftovers: tuple[Leftover, ...]
    kept_pinned: tuple[GcKept, ...]
    limits: tuple[GcLimit, ...]
    store_bytes_before: int
    store_bytes_after: int
    ttl: float | None = None

    @property
    def reclaimed_bytes(self) -> int:
        variants = sum(r.own_bytes + r.blob_bytes for r in self.removals)
        orphans = sum(self.blobs[d].bytes for d in self.orphans)
        return variants + orphans + sum(x.bytes for x in self.leftovers)

    def report(self) -> GcReport:
        """The plan as a dry-run report."""
        return GcReport(
            dry_run=True,
            reclaimed_bytes=self.reclaimed_bytes,
            removed=tuple(r.as_report() for r in self.removals),
            kept_pinned=self.kept_pinned,
            orphan_blobs=len(self.orphans),
            orphan_bytes=sum(self.blobs[d].bytes for d in self.orphans),
            leftovers=tuple(_leftover_report(self.layout, x, x.bytes) for x in self.leftovers),
            limits=self.limits,
            store_bytes_before=self.store_bytes_before,
            store_bytes_after=self.store_bytes_after,
            ttl=self.ttl,
        )


def plan_gc(
    store: "Store",
    manifest: Manifest | None = None,
    *,
    max_bytes: int | None = None,
    ttl: float | None = None,
    variant: str | None = None,
    family_quotas: Mapping[str, int] | None = None,
    now: float | None = None,
) -> GcPlan:
    """Decide what gc removes (see the module doc); reads the store, changes nothing.

    `variant` limits the candidates to variants of that name (orphans and leftovers are then left for a
    gc without it); `manifest`, when given, lets a misspelt `variant` fail with the valid names.
    """
    quotas = dict(family_quotas or {})
    _check_limits(max_bytes, ttl, quotas)
    layout, now = store.layout, time.time() if now is None else now
    blobs = scan_blobs(layout)
    records = {e.key: e for e in scan_records(layout)}
    if variant is not None and manifest is not None:
        _check_variant(variant, manifest, records)
    holds = _Holds.scan(layout, blobs, records)
    state = _Planning(blobs, holds, quotas)
    orphans = tuple(sorted(d for d in blobs if holds.refcount[d] == 0)) if variant is None else ()
    state.store_bytes -= sum(blobs[d].allocated for d in orphans)
    order = sorted((e for e in records.values() if e.record is not None and variant in (None, e.variant)),
                   key=lambda e: (e.last_used, e.model_id, e.variant))
    if ttl is not None:
        for entry in order:
            if now - entry.last_used > ttl:
                state.drop(entry, "ttl")
    for family, quota in sorted(quotas.items()):
        for entry in (e for e in order if e.family == family):
            if state.family_bytes[family] <= quota:
                break
            state.drop(entry, "family_quota")
    if max_bytes is not None:
        for entry in order:
            if state.store_bytes <= max_bytes:
                break
            state.drop(entry, "max_bytes")

    removals: list[PlannedRemoval] = []
    removed_links: Counter[str] = Counter()
    for key, (reason, freed) in state.removed.items():
        entry, tree = records[key], holds.folders.get(key, Tree())
        removed_links.update(tree.links)
        own = tree.own_bytes + entry.state_bytes
        removals.append(PlannedRemoval(entry, reason, own, tuple(freed), sum(map(holds.frees, freed))))
    planned = {d: PlannedBlob(d, holds.frees(d), blobs[d].nlink - removed_links[d])
               for d in (*orphans, *(d for r in removals for d in r.blobs))}
    total = store_bytes(blobs)
    limits = [GcLimit("store", None, max_bytes, total, state.store_bytes)] if max_bytes is not None else []
    limits += [GcLimit("family", f, q, state.family_before[f], state.family_bytes[f])
               for f, q in sorted(quotas.items())]
    kept = tuple(GcKept(e.model_id, e.variant, e.family, e.last_used, state.would_remove.get(e.key))
                 for e in order if e.pinned)
    leftovers = () if variant is not None else (
        *stale_partials(layout, now, LEFTOVER_AGE_SECONDS), *stale_tmp(holds.tmp, now, LEFTOVER_AGE_SECONDS)
    )
    return GcPlan(layout, tuple(removals), planned, orphans, tuple(leftovers), kept, tuple(limits),
                  total, state.store_bytes, ttl)


@dataclass
class _Holds:
    """Who holds each blob: recorded variants (`refs`), and folders gc leaves alone (a variant folder with
    no record, `.wan/tmp` staging) which hold theirs for good. `linked` counts every link found in the
    store, so a blob with more links than that is also kept by another tool's cache (the HF cache)."""

    blobs: Mapping[str, Blob]
    folders: dict[Key, Tree]
    tmp: list[tuple[Path, Tree]]
    refs: dict[Key, frozenset[str]]
    refcount: Counter[str]
    linked: Counter[str]

    @classmethod
    def scan(
        cls, layout: StoreLayout, blobs: Mapping[str, Blob], records: Mapping[Key, RecordedVariant]
    ) -> "_Holds":
        by_inode = {b.inode: d for d, b in blobs.items()}
        folders = {key: scan_tree(path, by_inode) for key, path in variant_folders(layout.root)}
        tmp = [(Path(e.path), scan_tree(Path(e.path), by_inode)) for e in entries(layout.tmp)]
        refs = {key: e.digests | frozenset(folders[key].links if key in folders else ())
                for key, e in records.items()}
        refcount: Counter[str] = Counter()
        linked: Counter[str] = Counter()
        for key, tree in folders.items():
            linked.update(tree.links)
            if key not in records:  # a folder with no record is not gc's to remove: what it links stays
                refcount.update(tree.links.keys())
        for _, tree in tmp:  # an ensure staging a variant (or a leftover): its blobs stay this time
            linked.update(tree.links)
            refcount.update(tree.links.keys())
        for digests in refs.values():
            refcount.update(digests)
        return cls(blobs, folders, tmp, refs, refcount, linked)

    def frees(self, digest: str) -> int:
        """What removing the blob frees once no variant links it: 0 when a link outside the store keeps it."""
        blob = self.blobs[digest]
        return blob.allocated if blob.nlink <= 1 + self.linked[digest] else 0


class _Planning:
    """The running totals of a plan: who still holds each blob, and the bytes of the store and families."""

    def __init__(self, blobs: Mapping[str, Blob], holds: _Holds, family_quotas: Mapping[str, int]) -> None:
        self.blobs, self.holds = blobs, holds
        self.store_bytes = store_bytes(blobs)
        self.family_refs: dict[str, Counter[str]] = {}
        for key, digests in holds.refs.items():
            self.family_refs.setdefault(key[0], Counter()).update(digests)
        self.family_bytes = {
            f: sum(blobs[d].allocated for d, n in self.family_refs.get(f, Counter()).items() if n)
            for f in family_quotas
        }
        self.family_before = dict(self.family_bytes)
        self.removed: dict[Key, tuple[str, list[str]]] = {}
        self.would_remove: dict[Key, str] = {}

    def drop(self, entry: RecordedVariant, reason: str) -> None:
        """Plan the removal of `entry` (a pinned one is only noted), releasing its hold on its blobs."""
        if entry.key in self.removed:
            return
        if entry.pinned:
            self.would_remove.setdefault(entry.key, reason)
            return
        freed: list[str] = []
        family = self.family_refs[entry.family]
        for digest in sorted(self.holds.refs[entry.key]):
            size = self.blobs[digest].allocated if digest in self.blobs else 0
            self.holds.refcount[digest] -= 1
            family[digest] -= 1
            if family[digest] == 0 and entry.family in self.family_bytes:
                self.family_bytes[entry.family] -= size
            if self.holds.refcount[digest] == 0 and digest in self.blobs:
                freed.append(digest)
                self.store_bytes -= size
        self.removed[entry.key] = (reason, freed)


def _check_limits(max_bytes: int | None, ttl: float | None, family_quotas: Mapping[str, int]) -> None:
    for name, value in (("max_bytes", max_bytes), ("ttl", ttl), *family_quotas.items()):
        if value is not None and value < 0:
            raise InvalidParamsError(f"{name} must be 0 or more, not {value}", param=name)


def _check_variant(variant: str, manifest: Manifest, records: Mapping[Key, RecordedVariant]) -> None:
    known = {key[2] for key in records} | {name for m in manifest.models.values() for name in m.variants}
    if variant not in known:
        raise ModelNotFoundError(
            f"no model has a variant {variant!r}; variants: {', '.join(sorted(known))}", param="variant"
        )


# -- execution -----------------------------------------------------------------------------------------------


def execute_gc(store: "Store", plan: GcPlan) -> GcReport:
    """Carry out `plan`, skipping what is in use or changed since; the report counts what was freed."""
    layout = store.layout
    done: dict[Key, int] = {}
    skipped: list[GcSkipped] = []
    for item in plan.removals:
        e = item.entry
        outcome = remove_variant(layout, e)
        if isinstance(outcome, str):
            log.info("gc: kept %s: %s", e.label, outcome)
            skipped.append(GcSkipped(e.model_id, e.variant, e.family, outcome))
        else:
            log.info("gc: removed %s (%s)", e.label, item.reason)
            done[e.key] = outcome
    in_use = frozenset().union(*(e.digests for e in scan_records(layout)))  # records written meanwhile too
    freed: dict[str, int] = {}
    for digest, blob in plan.blobs.items():
        got = None if digest in in_use else remove_blob(layout, digest, blob.expected_nlink)
        if got is not None:
            freed[digest] = got
    removed = tuple(r.as_report(done[r.entry.key] + sum(freed.get(d, 0) for d in r.blobs))
                    for r in plan.removals if r.entry.key in done)
    orphans = [d for d in plan.orphans if d in freed]
    leftovers = []
    for leftover in plan.leftovers:
        if (got := remove_leftover(layout, leftover)) is not None:
            leftovers.append(_leftover_report(layout, leftover, got))
    blobs, records = scan_blobs(layout), scan_records(layout)
    after = store_bytes(blobs)

    def now_holds(limit: GcLimit) -> int:
        family = [r for r in records if r.family == limit.family]
        return after if limit.family is None else family_bytes(blobs, family)

    limits = tuple(GcLimit(x.scope, x.family, x.max_bytes, x.bytes_before, now_holds(x)) for x in plan.limits)
    orphan_bytes = sum(freed[d] for d in orphans)
    total = sum(r.bytes for r in removed) + orphan_bytes + sum(x.bytes for x in leftovers)
    return GcReport(False, total, removed, plan.kept_pinned, tuple(skipped), len(orphans), orphan_bytes,
                    tuple(leftovers), limits, plan.store_bytes_before, after, plan.ttl)


def _leftover_report(layout: StoreLayout, leftover: Leftover, size: int) -> GcLeftover:
    return GcLeftover(leftover.path.relative_to(layout.root).as_posix(), leftover.kind, size)


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
