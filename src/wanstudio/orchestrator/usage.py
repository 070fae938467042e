"""What the store holds, in the bytes the filesystem allocates, and the room check before a download.

Bytes are counted as allocated (`st_blocks * 512`), not as file sizes: that is what a quota is meant to
bound and what removing a file gives back, and it is what `df` shows. A blob is counted once however
many variant folders link it. The store's bytes, for `WAN_QUOTA_BYTES`, are the allocated bytes of its
blobs; a family's bytes, for `WAN_FAMILY_QUOTAS`, are those of the blobs its committed variants use (a
blob two families use counts in each). Downloads in flight (`.wan/partial`) are not store bytes: the
file they become is counted by the plan that fetches it.

`check_room` is the preflight of a cold ensure: before any byte moves, the plan must fit the quotas and
the free space, where a download being resumed already holds its space (its data file is allocated at
full size when it starts), so a resume on a nearly full disk is not refused.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from wanstudio._units import format_bytes
from wanstudio.config import Settings
from wanstudio.errors import NoSpaceError, QuotaExceededError
from wanstudio.orchestrator._fsutil import owner_of, process_alive, read_json
from wanstudio.orchestrator.layout import StoreLayout
from wanstudio.orchestrator.manifest import ManifestFile, Model
from wanstudio.orchestrator.store import VariantRecord

BLOCK_BYTES = 4096
"""Allocation unit assumed for files not yet written (the usual block of ext4, XFS, APFS, NTFS, tmpfs)."""

_HEX = frozenset("0123456789abcdef")


def allocated(st: os.stat_result) -> int:
    """Bytes the filesystem allocated for the file (its size where the platform gives no block count)."""
    blocks = getattr(st, "st_blocks", None)
    return int(blocks) * 512 if blocks is not None else st.st_size


def allocation_of(size: int) -> int:
    """The bytes a file of `size` bytes will take once written: whole blocks."""
    return -(-size // BLOCK_BYTES) * BLOCK_BYTES


@dataclass(frozen=True)
class Blob:
    """One stored blob as the filesystem sees it."""

    digest: str
    allocated: int
    nlink: int
    inode: tuple[int, int]  # (st_dev, st_ino): what a hard link in a variant folder shares with it


@dataclass(frozen=True)
class RecordedVariant:
    """A committed variant as its state record describes it; `last_used` is the record's mtime."""

    family: str
    model_id: str
    variant: str
    record: VariantRecord | None  # None when the record cannot be read
    state_file: Path
    last_used: float
    mtime_ns: int
    state_bytes: int
    pinned: bool

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.family, self.model_id, self.variant)

    @property
    def digests(self) -> frozenset[str]:
        return frozenset(f.sha256 for f in self.record.files) if self.record else frozenset()

    @property
    def label(self) -> str:
        return f"{self.model_id} [{self.variant}]"


def scan_blobs(layout: StoreLayout) -> dict[str, Blob]:
    """Every blob of the store, by digest (one `stat` each)."""
    blobs: dict[str, Blob] = {}
    for shard in entries(layout.blobs):
        if not shard.is_dir(follow_symlinks=False):
            continue
        for entry in entries(Path(shard.path)):
            name = entry.name
            if len(name) != 64 or not _HEX.issuperset(name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            blobs[name] = Blob(name, allocated(st), st.st_nlink, (st.st_dev, st.st_ino))
    return blobs


def scan_records(layout: StoreLayout, family: str | None = None) -> list[RecordedVariant]:
    """The state record of every committed variant (of one family when given), with its last use and pin."""
    found: list[RecordedVariant] = []
    state = layout.meta / "state"
    if family is not None:
        families = [state / family]
    else:
        families = [Path(e.path) for e in entries(state) if e.is_dir(follow_symlinks=False)]
    for family_dir in families:
        for model_dir in entries(family_dir):
            if not model_dir.is_dir(follow_symlinks=False):
                continue
            names = {e.name for e in entries(Path(model_dir.path))}
            for name in sorted(names):
                if name.startswith(".") or not name.endswith(".json"):
                    continue  # atomic-write temp files start with a dot
                path = Path(model_dir.path) / name
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                variant = name[: -len(".json")]
                document = read_json(path)
                found.append(
                    RecordedVariant(
                        family=family_dir.name,
                        model_id=model_dir.name,
                        variant=variant,
                        record=VariantRecord.from_json(document) if document is not None else None,
                        state_file=path,
                        last_used=st.st_mtime,
                        mtime_ns=st.st_mtime_ns,
                        state_bytes=allocated(st),
                        pinned=f"{variant}.pin" in names,
                    )
                )
    return found


@dataclass
class Tree:
    """What a folder of the store links: blob links by digest, and the bytes that go with the folder (its
    directories, and files linked nowhere else: copies where the filesystem could not link)."""

    own_bytes: int = 0
    links: Counter[str] = field(default_factory=Counter)


def variant_folders(root: Path) -> Iterator[tuple[tuple[str, str, str], Path]]:
    """Every `{family}/{model_id}/{variant}` folder under the store root (CONTRACT section 4)."""
    for family in entries(root):
        if family.name.startswith(".") or not family.is_dir(follow_symlinks=False):
            continue
        for model in entries(Path(family.path)):
            if model.is_dir(follow_symlinks=False):
                for variant in entries(Path(model.path)):
                    if variant.is_dir(follow_symlinks=False):
                        yield (family.name, model.name, variant.name), Path(variant.path)


def scan_tree(path: Path, by_inode: Mapping[tuple[int, int], str]) -> Tree:
    """The blob links of a file or tree (`by_inode`: blob inodes to digests) and the bytes it alone holds.

    Walked with plain strings and `scandir` (no Path objects): a gc plan walks every variant folder.
    """
    tree = Tree()
    others: dict[tuple[int, int], list[int]] = {}  # inode -> [links seen here, st_nlink, allocated]

    def file(st: os.stat_result) -> None:
        inode = (st.st_dev, st.st_ino)
        digest = by_inode.get(inode)
        if digest is not None:
            tree.links[digest] += 1
        else:
            seen = others.setdefault(inode, [0, st.st_nlink, allocated(st)])
            seen[0] += 1

    try:
        top = os.lstat(path)
    except OSError:
        return tree
    if not stat.S_ISDIR(top.st_mode):
        file(top)
    else:
        tree.own_bytes += allocated(top)
        pending = [os.fspath(path)]
        while pending:
            try:
                with os.scandir(pending.pop()) as found:
                    listing = list(found)
            except OSError:
                continue
            for entry in listing:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    tree.own_bytes += allocated(st)
                    pending.append(entry.path)
                else:
                    file(st)
    tree.own_bytes += sum(size for count, nlink, size in others.values() if count >= nlink)
    return tree


@dataclass(frozen=True)
class Leftover:
    """What stopped work left behind: a download in `.wan/partial` (data file and journal) or a `.wan/tmp`
    entry (staging or trash). `bytes` is what removing it frees; `mtime_ns` tells whether it was touched."""

    kind: str  # "partial" or "tmp"
    paths: tuple[Path, ...]
    bytes: int
    mtime_ns: int
    key: str | None = None  # a download's blob-lock key

    @property
    def path(self) -> Path:
        return self.paths[0]


def stale_partials(layout: StoreLayout, now: float, age: float) -> Iterator[Leftover]:
    """Downloads (data file and journal) untouched for `age` seconds: no process is resuming them."""
    groups: dict[str, list[tuple[Path, os.stat_result]]] = {}
    for entry in entries(layout.partial):
        key = entry.name.removesuffix(".journal").removesuffix(".part")
        try:
            groups.setdefault(key, []).append((Path(entry.path), entry.stat(follow_symlinks=False)))
        except OSError:
            continue
    for key, files in sorted(groups.items()):
        newest = max(st.st_mtime_ns for _, st in files)
        if now - newest / 1e9 > age:
            size = sum(allocated(st) for _, st in files if st.st_nlink == 1)
            yield Leftover("partial", tuple(sorted(p for p, _ in files)), size, newest, key)


def stale_tmp(trees: Iterable[tuple[Path, Tree]], now: float, age: float) -> Iterator[Leftover]:
    """`.wan/tmp` entries whose process is known dead, or older than `age` with no live owner known."""
    for path, tree in trees:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        owner = owner_of(path.name)
        if owner is not None and process_alive(*owner):
            continue  # a live process's staging or trash (or one on another host, which cannot be checked)
        if owner is not None or now - st.st_mtime > age:
            yield Leftover("tmp", (path,), tree.own_bytes, st.st_mtime_ns)


def store_bytes(blobs: Mapping[str, Blob]) -> int:
    return sum(b.allocated for b in blobs.values())


def family_bytes(
    blobs: Mapping[str, Blob], records: Iterable[RecordedVariant], extra: Iterable[str] = ()
) -> int:
    """Allocated bytes of the distinct blobs that `records` (and the digests `extra`) use."""
    digests = set(extra).union(*(r.digests for r in records))
    return sum(blobs[d].allocated for d in digests if d in blobs)


def check_room(
    layout: StoreLayout,
    settings: Settings,
    model: Model,
    variant: str,
    files: list[ManifestFile],
    linked: Iterable[str],
) -> None:
    """Refuse a download that would pass a quota (QUOTA_EXCEEDED) or not fit the disk (NO_SPACE).

    `files` are the files about to be fetched; `linked` the digests the variant will link (already stored
    ones among them count toward its family's bytes once it is committed).
    """
    label = f"{model.id} [{variant}]"
    plan = sum(allocation_of(f.size) for f in files)
    family_quota = settings.family_quotas.get(model.family)
    if settings.quota_bytes is not None or family_quota is not None:
        blobs = scan_blobs(layout)
        if settings.quota_bytes is not None:
            held = store_bytes(blobs)
            if held + plan > settings.quota_bytes:
                quota = settings.quota_bytes
                raise _over_quota(label, plan, held, quota, "the store", "WAN_QUOTA_BYTES", None)
        if family_quota is not None:
            held = family_bytes(blobs, scan_records(layout, model.family), linked)
            if held + plan > family_quota:
                raise _over_quota(label, plan, held, family_quota, f"family {model.family}",
                                  f"WAN_FAMILY_QUOTAS for {model.family}", model.family)
    resumed = sum(min(allocation_of(f.size), _partial_bytes(layout, f)) for f in files)
    needed = plan - resumed
    layout.root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(layout.root).free
    if needed > free:
        held = store_bytes(scan_blobs(layout))
        target = held - (needed - free)
        gc = (
            [f"see what gc would free: `wan models gc --dry-run --max-bytes {_size_arg(target)}` "
             "(keeps the store small enough for this download), then the same without --dry-run"]
            if target > 0 else
            [f"`wan models gc --dry-run` shows what can go, but the whole store ({format_bytes(held)}) is "
             "smaller than what is missing"]
        )
        resuming = f" ({format_bytes(resumed)} already held by the downloads it resumes)" if resumed else ""
        raise NoSpaceError(
            f"not enough disk space for {label}: it needs {format_bytes(needed)} ({needed} bytes) more"
            f"{resuming}, and {layout.root} has {format_bytes(free)} ({free} bytes) free",
            suggestions=[*gc, "or point MODELS_ROOT at a disk with more room"],
        )


def _over_quota(
    label: str, plan: int, held: int, quota: int, scope: str, setting: str, family: str | None
) -> QuotaExceededError:
    room = quota - plan
    if room < 0:
        help_ = [f"{label} alone is larger than the quota: raise {setting}"]
    elif family is None:
        help_ = [
            f"see what gc would free: `wan models gc --dry-run --max-bytes {_size_arg(room)}` (leaves room "
            "for this download), then the same without --dry-run",
            f"or raise {setting}",
        ]
    else:
        help_ = [
            f"see what gc would free: `WAN_FAMILY_QUOTAS={family}={_size_arg(room)} wan models gc --dry-run` "
            "(leaves room for this download in the family), then the same without --dry-run",
            f"or raise the {family} quota in WAN_FAMILY_QUOTAS",
        ]
    return QuotaExceededError(
        f"{label} needs {format_bytes(plan)} ({plan} bytes) more, and {scope} holds {format_bytes(held)} "
        f"({held} bytes): together past the quota of {format_bytes(quota)} ({quota} bytes) set by {setting}",
        suggestions=[*help_, "`wan models pin ID` keeps a variant that gc must never remove"],
    )


def _size_arg(size: int) -> str:
    """A size for a command line, rounded down to whole MiB where that is exact enough."""
    return f"{size // 2**20}M" if size >= 2**30 else str(size)


def _partial_bytes(layout: StoreLayout, file: ManifestFile) -> int:
    """Bytes already allocated for the file by an interrupted download (kept for resume), or 0."""
    try:
        return allocated(os.stat(layout.partial_file(file.key)))
    except OSError:
        return 0


def entries(path: Path) -> Iterator[os.DirEntry[str]]:
    """The entries of a folder; none when it is absent or unreadable."""
    try:
        with os.scandir(path) as found:
            yield from found
    except OSError:
        return
