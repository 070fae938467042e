"""The transfer engine: moves a file's bytes into the store's partial area, verified as they stream.

Size and sha256 are checked on the bytes as they are written, on a hashing thread of their own (hashlib
releases the GIL), so a file is read once: never a second pass to verify. A file that does not match is
deleted and reported as CHECKSUM_FAIL, so the caller can try the next source.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from wanstudio.errors import ChecksumFailError, OperationInterruptedError, SourceUnavailableError

CHUNK_BYTES = 8 * 1024 * 1024
MAX_CHUNKS_IN_FLIGHT = 3

ProgressCallback = Callable[[int], None]
"""Called with the number of bytes just written."""


class VerifyingWriter:
    """Writes a stream of chunks to `part_path` and checks its size and sha256 at the end."""

    def __init__(self, part_path: Path, *, expected_size: int, expected_sha256: str | None, label: str) -> None:
        self.part_path = part_path
        self.expected_size = expected_size
        self.expected_sha256 = expected_sha256
        self.label = label
        self.bytes_written = 0
        self._hasher = hashlib.sha256()
        self._hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wan-hash")
        self._pending: deque[Future[None]] = deque()
        part_path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(part_path, "wb")

    def write(self, chunk: bytes) -> None:
        if self.bytes_written + len(chunk) > self.expected_size:
            self._fail(f"is larger than the {self.expected_size} bytes the manifest expects")
        self._handle.write(chunk)
        self.bytes_written += len(chunk)
        self._pending.append(self._hashing.submit(self._hasher.update, chunk))
        while len(self._pending) > MAX_CHUNKS_IN_FLIGHT:
            self._pending.popleft().result()

    def finish(self) -> str:
        """Flush, fsync and verify; returns the sha256, or raises CHECKSUM_FAIL after deleting the part."""
        while self._pending:
            self._pending.popleft().result()
        self._hashing.shutdown()
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        if self.bytes_written != self.expected_size:
            self._fail(f"has {self.bytes_written} bytes where the manifest expects {self.expected_size}")
        digest = self._hasher.hexdigest()
        if self.expected_sha256 is not None and digest != self.expected_sha256:
            self._fail(f"has sha256 {digest} where the manifest expects {self.expected_sha256}")
        return digest

    @property
    def open(self) -> bool:
        return not self._handle.closed

    def abort(self) -> None:
        """Stop and delete the part file."""
        self._hashing.shutdown(wait=True, cancel_futures=True)
        self._handle.close()
        self.part_path.unlink(missing_ok=True)

    def _fail(self, problem: str) -> None:
        self.abort()
        raise ChecksumFailError(
            f"{self.label} {problem}; the bad copy was discarded",
            suggestions=["the source holds a different file than the manifest describes: fix the source or the manifest"],
        )


def copy_local_file(
    source: Path,
    writer: VerifyingWriter,
    progress: ProgressCallback | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> str:
    """Copy a local file through `writer`; returns the verified sha256. Stops at a chunk when `cancelled()`."""
    try:
        handle = open(source, "rb")
    except OSError as exc:
        writer.abort()
        raise SourceUnavailableError(f"cannot read {source}: {exc.strerror or exc}") from None
    try:
        with handle:
            while chunk := handle.read(CHUNK_BYTES):
                if cancelled():
                    raise OperationInterruptedError(f"interrupted while copying {writer.label}")
                writer.write(chunk)
                if progress:
                    progress(len(chunk))
    except BaseException:
        if writer.open:
            writer.abort()
        raise
    return writer.finish()
