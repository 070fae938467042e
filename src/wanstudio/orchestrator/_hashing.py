"""sha256 (and the git blob id, for small Hub files) of a file being written in ranges, in file order.

A digest must see the bytes in order, but ranges arrive side by side. The hasher keeps a frontier: a
chunk written exactly at the frontier is hashed from memory as it arrives (the common case: the first
range, and each range once the frontier reaches it); bytes written ahead of the frontier are read back
from disk when it gets there. Every byte is hashed once, on a thread of its own (hashlib releases the
GIL), while the connections keep receiving.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

from wanstudio.orchestrator._partial import RangeProgress

READ_BACK_BYTES = 8 * 2**20


class OrderedHasher:
    """Digests of a file written range by range; `digests()` waits for the last byte."""

    def __init__(self, path: Path, size: int, ranges: Sequence[RangeProgress], *, git_blob_id: bool = False) -> None:
        self.size = size
        self._ranges = ranges
        self._sha256 = hashlib.sha256()
        self._git = hashlib.sha1(b"blob %d\0" % size) if git_blob_id else None
        self._frontier = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wan-hash")
        self._failure: OSError | None = None
        self._path = path
        with self._lock:
            self._catch_up()  # a resumed download: hash what is already on disk

    def chunk_written(self, offset: int, data: memoryview, release: Callable[[], None]) -> None:
        """Range bytes at `offset` are on disk; `release` is called once `data` is no longer needed."""
        with self._lock:
            if offset == self._frontier:
                self._frontier += len(data)
                self._executor.submit(self._update, data, release)
            else:
                release()
            self._catch_up()

    def digests(self) -> tuple[str, str | None]:
        """(sha256, git blob id or None) once every byte was hashed; call after all ranges completed."""
        with self._lock:
            self._catch_up()
        self._executor.shutdown(wait=True)
        if self._failure is not None:
            raise self._failure
        if self._frontier != self.size:
            raise RuntimeError(f"hashed {self._frontier} of {self.size} bytes: a range is incomplete")
        return self._sha256.hexdigest(), self._git.hexdigest() if self._git else None

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    # -- on the caller's thread, under the lock ----------------------------------------------------------------

    def _catch_up(self) -> None:
        """Queue reads of bytes written ahead of the frontier that the frontier has now reached."""
        for progress in self._ranges:
            if progress.start <= self._frontier < progress.end and progress.done > self._frontier:
                start, self._frontier = self._frontier, progress.done
                self._executor.submit(self._read_back, start, progress.done)
            if self._frontier < progress.end:
                break

    # -- on the hashing thread ---------------------------------------------------------------------------------

    def _update(self, data: memoryview, release: Callable[[], None]) -> None:
        try:
            self._sha256.update(data)
            if self._git is not None:
                self._git.update(data)
        finally:
            release()

    def _read_back(self, start: int, end: int) -> None:
        if self._failure is not None:
            return
        try:
            self._read_range(start, end)
        except OSError as exc:
            self._failure = exc

    def _read_range(self, start: int, end: int) -> None:
        fd = os.open(self._path, os.O_RDONLY)
        try:
            offset = start
            while offset < end:
                data = os.pread(fd, min(READ_BACK_BYTES, end - offset), offset)
                if not data:
                    raise OSError(f"{self._path} ends at {offset} bytes, before {end}")
                self._sha256.update(data)
                if self._git is not None:
                    self._git.update(data)
                offset += len(data)
        finally:
            os.close(fd)
