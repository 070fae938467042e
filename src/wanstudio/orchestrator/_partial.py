"""A download in progress under `.wan/partial`: the data file, and a journal of how far each range got.

The data file is allocated at its full size up front (a full disk fails at the start, not at 90%), and
each range of it is written by one connection. After every chunk lands, the range's line in the journal
is rewritten in place (one small `pwrite`, no fsync), so a process killed at any moment, SIGKILL
included, resumes each range from its last whole chunk: at most one chunk per range is fetched twice.
The journal never claims bytes that were not written first; after a power cut it may, and the final
sha256 check then discards the copy and starts over.

Large aligned writes go through O_DIRECT where the filesystem allows it: fresh page-cache writes are the
bottleneck of a download on a fast link (see docs/benchmarks.md), and direct writes run several times
faster. Filesystems that refuse it (tmpfs, some network filesystems) get ordinary buffered writes.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from wanstudio._units import format_bytes
from wanstudio.errors import NoSpaceError

log = logging.getLogger("wanstudio.transfer")

ALIGNMENT = 4096
_HEADER = "wan-partial 1 size={size:020d} ranges={ranges:06d}\n"
_LINE = "{start:020d} {end:020d} {done:020d}\n"
_HEADER_BYTES = len(_HEADER.format(size=0, ranges=0))
_LINE_BYTES = len(_LINE.format(start=0, end=0, done=0))


@dataclass
class RangeProgress:
    """One contiguous byte range of the file, fetched by one connection: [start, end), done up to `done`."""

    start: int
    end: int
    done: int

    @property
    def complete(self) -> bool:
        return self.done >= self.end

    @property
    def remaining(self) -> int:
        return self.end - self.done


def plan_ranges(size: int, part_size: int, max_ranges: int) -> list[RangeProgress]:
    """Split a file into at most `max_ranges` ranges of whole parts (one range for a file under two parts)."""
    parts = max(1, -(-size // part_size))
    count = max(1, min(max_ranges, parts))
    parts_per_range = -(-parts // count)
    ranges = []
    for first_part in range(0, parts, parts_per_range):
        start = first_part * part_size
        end = min(size, (first_part + parts_per_range) * part_size)
        ranges.append(RangeProgress(start, end, start))
    return ranges or [RangeProgress(0, 0, 0)]


class PartialDownload:
    """The data file and journal of one download; open() resumes a valid earlier attempt."""

    def __init__(self, data_path: Path, size: int, ranges: list[RangeProgress], *, resumed_bytes: int, label: str) -> None:
        self.data_path = data_path
        self.journal_path = data_path.with_name(data_path.name + ".journal")
        self.size = size
        self.ranges = ranges
        self.resumed_bytes = resumed_bytes
        self.label = label
        self._buffered_fd = os.open(data_path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o644)
        self._direct_fd = _open_direct(data_path)
        self._journal_fd = os.open(self.journal_path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o644)
        if resumed_bytes == 0:
            self._allocate()
            self._write_journal()

    @classmethod
    def open(cls, data_path: Path, size: int, *, part_size: int, max_ranges: int, label: str) -> "PartialDownload":
        """Resume the download at `data_path` if its journal is intact and for this size; else start afresh."""
        data_path.parent.mkdir(parents=True, exist_ok=True)
        ranges = _read_journal(data_path, size)
        if ranges is None:
            data_path.unlink(missing_ok=True)
            return cls(data_path, size, plan_ranges(size, part_size, max_ranges), resumed_bytes=0, label=label)
        resumed = sum(r.done - r.start for r in ranges)
        log.info("resuming %s: %s of %s already on disk", label, format_bytes(resumed), format_bytes(size))
        return cls(data_path, size, ranges, resumed_bytes=resumed, label=label)

    @property
    def done_bytes(self) -> int:
        return sum(r.done - r.start for r in self.ranges)

    @property
    def complete(self) -> bool:
        return all(r.complete for r in self.ranges)

    def write(self, index: int, data: memoryview) -> None:
        """Write the next chunk of range `index` at its `done` offset, then record it in the journal."""
        progress = self.ranges[index]
        offset = progress.done
        aligned = offset % ALIGNMENT == 0 and len(data) % ALIGNMENT == 0
        fd = self._direct_fd if aligned and self._direct_fd is not None else self._buffered_fd
        try:
            written = 0
            while written < len(data):
                written += os.pwrite(fd, data[written:], offset + written)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise self._no_space() from None
            raise
        progress.done = offset + len(data)
        os.pwrite(self._journal_fd, _LINE.format(**vars(progress)).encode(), _HEADER_BYTES + index * _LINE_BYTES)

    def finish(self) -> Path:
        """Flush to disk and drop the journal: the data file is whole (the caller verifies it)."""
        os.fsync(self._buffered_fd)
        self.close()
        self.journal_path.unlink(missing_ok=True)
        return self.data_path

    def close(self) -> None:
        """Close the files and keep them for a later resume."""
        for fd in (self._buffered_fd, self._direct_fd, self._journal_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._buffered_fd = self._journal_fd = -1
        self._direct_fd = None

    def discard(self) -> None:
        """Close and delete the data and its journal (a copy that failed verification)."""
        self.close()
        self.data_path.unlink(missing_ok=True)
        self.journal_path.unlink(missing_ok=True)

    def _allocate(self) -> None:
        os.ftruncate(self._journal_fd, 0)
        try:
            if hasattr(os, "posix_fallocate") and self.size:
                os.posix_fallocate(self._buffered_fd, 0, self.size)
            else:
                os.ftruncate(self._buffered_fd, self.size)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                self.discard()
                raise self._no_space() from None
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            os.ftruncate(self._buffered_fd, self.size)

    def _write_journal(self) -> None:
        text = _HEADER.format(size=self.size, ranges=len(self.ranges)) + "".join(_LINE.format(**vars(r)) for r in self.ranges)
        os.pwrite(self._journal_fd, text.encode(), 0)

    def _no_space(self) -> NoSpaceError:
        folder = self.data_path.parent
        try:
            free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
        except OSError:
            free = 0
        return NoSpaceError(
            f"the disk filled up while downloading {self.label} ({format_bytes(self.size)}) into {folder}: "
            f"{format_bytes(free)} free",
            suggestions=[
                "free space with `wan models gc --dry-run` to see what can go, then `wan models gc`",
                "the bytes downloaded so far are kept: run the same command again to resume",
            ],
        )


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
"""A symlink planted at a download's path (a shared store) must not redirect its writes elsewhere."""


def _open_direct(path: Path) -> int | None:
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    try:
        return os.open(path, os.O_WRONLY | flag | _NOFOLLOW)
    except OSError:
        return None  # tmpfs and some network filesystems refuse direct I/O


def _read_journal(data_path: Path, size: int) -> list[RangeProgress] | None:
    """The ranges recorded for a resumable download of `size` bytes, or None when there is nothing valid."""
    journal = data_path.with_name(data_path.name + ".journal")
    try:
        text = journal.read_text()
        if os.stat(data_path).st_size != size:
            return None
        header, *lines = text.splitlines()
        fields = dict(item.split("=", 1) for item in header.split()[2:])
        if header.split()[:2] != ["wan-partial", "1"] or int(fields["size"]) != size:
            return None
        ranges = [RangeProgress(*(int(v) for v in line.split())) for line in lines[: int(fields["ranges"])]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    expected_start = 0
    for r in ranges:
        if r.start != expected_start or not r.start <= r.done <= r.end or (r.done - r.start) % ALIGNMENT and r.done != r.end:
            return None
        expected_start = r.end
    return ranges if ranges and expected_start == size else None
