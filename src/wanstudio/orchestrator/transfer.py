"""The one transfer engine: every byte a source provides reaches the store through here.

A file goes into `.wan/partial` as one or more ranges, each streamed by one connection (a small file, a
local copy, or a busy engine: one range; a large file while connections are free: up to one per part,
bounded by WAN_MAX_CONCURRENT_DOWNLOADS). Bytes are hashed as they land, so a file is verified without a
second pass. A connection that drops, stalls (no byte for WAN_DOWNLOAD_STALL_TIMEOUT) or meets a 5xx or
429 resumes its range from the last chunk on disk after an exponential backoff with full jitter (or the
server's Retry-After). A process that dies resumes from the journal (see _partial.py). A copy whose
size or digest is wrong is deleted and reported as CHECKSUM_FAIL, so the caller tries the next source.

Metrics (docs/observability.md) are recorded per file, per range attempt and per retry, never per chunk:
bytes from a range's progress when the attempt ends, the file's time once verified. Range workers run in
a copy of the caller's context, so their log lines carry the caller's correlation id.
"""

from __future__ import annotations

import logging
import mmap
import os
import queue
import random
import threading
import time
from concurrent.futures import Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from wanstudio._units import format_bytes
from wanstudio.config import Settings
from wanstudio.errors import (
    Attempt,
    AuthFailError,
    ChecksumFailError,
    OperationInterruptedError,
    RateLimitError,
    SourceUnavailableError,
    WanError,
)
from wanstudio.observability import ContextThreadPoolExecutor, RetryReason, metrics
from wanstudio.orchestrator._hashing import OrderedHasher
from wanstudio.orchestrator._http import (
    RETRYABLE_STATUS,
    RangesIgnored,
    RetryableFailure,
    range_start,
    retry_after_seconds,
    short_body,
    total_size,
)
from wanstudio.orchestrator._partial import ALIGNMENT, PartialDownload, RangeProgress
from wanstudio.orchestrator.sources.base import LocalObject, Located, RemoteObject

if TYPE_CHECKING:
    import urllib3

log = logging.getLogger("wanstudio.transfer")

MAX_CHUNK_BYTES = 4 * 2**20
MIN_CHUNK_BYTES = 256 * 2**10
READ_BYTES = 512 * 2**10
"""Bytes asked of the connection at a time: what a stall can strand inside the HTTP library's buffer."""
BUFFERS_PER_RANGE = 3
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0
MAX_RETRY_AFTER_SECONDS = 300.0

ProgressCallback = Callable[[int], None]
"""Called with the number of bytes just written (or found already on disk when resuming)."""


@dataclass(frozen=True)
class Expected:
    """What a fetched file must be: its size and at least one digest (sha256, else the Hub's git blob id)."""

    size: int
    sha256: str | None
    git_blob_id: str | None
    label: str
    source: str
    file: str


@dataclass(frozen=True)
class Fetched:
    """A verified file: in `.wan/partial` (ours to move), or a shared file linked there (not ours to change)."""

    path: Path
    sha256: str
    shared: bool = False


class _Stopped(Exception):
    """Another range of the same file failed: this one stops too."""


class TransferEngine:
    """Fetches located files into the store's partial area; shared by every source and thread of a process."""

    def __init__(self, settings: Settings) -> None:
        self.part_size = settings.download_part_size
        self.max_connections = settings.max_concurrent_downloads
        self.retries = settings.download_retries
        self.stall_timeout = settings.download_stall_timeout
        self.connections = threading.BoundedSemaphore(self.max_connections)
        self.range_workers = ContextThreadPoolExecutor(max_workers=self.max_connections, thread_name_prefix="wan-range")
        self._pool: urllib3.PoolManager | None = None
        self._pool_lock = threading.Lock()

    def fetch(
        self,
        located: Located,
        partial_path: Path,
        expected: Expected,
        *,
        progress: ProgressCallback | None = None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Fetched:
        """Bring the file into `partial_path` (resuming what is there) and verify it; see the module doc."""
        started = time.monotonic()
        if isinstance(located, LocalObject) and located.shared and _link(located.path, partial_path):
            job = _Job(self, located, None, expected, progress, cancelled)
            try:
                fetched = Fetched(partial_path, job.verify_in_place(partial_path), shared=True)
            except BaseException as error:
                if isinstance(error, ChecksumFailError):
                    metrics.checksum_failure(expected.source)
                partial_path.unlink(missing_ok=True)
                raise
            metrics.file_verified(expected.source, time.monotonic() - started)
            return fetched
        max_ranges = 1 if isinstance(located, LocalObject) else self.max_connections
        for last_try in (False, True):
            partial = PartialDownload.open(partial_path, expected.size, part_size=self.part_size, max_ranges=max_ranges,
                                           label=expected.label)
            job = _Job(self, located, partial, expected, progress, cancelled)
            try:
                fetched = Fetched(job.run(), job.sha256)
                metrics.file_verified(expected.source, time.monotonic() - started)
                return fetched
            except RangesIgnored:
                partial.discard()
                max_ranges = 1
            except ChecksumFailError:
                metrics.checksum_failure(expected.source)
                partial.discard()
                if last_try or not partial.resumed_bytes:
                    raise
                log.warning("resumed copy of %s failed verification; downloading it again from the start", expected.label)
            except BaseException:
                if partial.done_bytes:
                    partial.close()  # kept for resume
                else:
                    partial.discard()  # nothing arrived: do not leave a preallocated file behind
                raise
        raise AssertionError("unreachable")

    @property
    def pool(self) -> "urllib3.PoolManager":
        with self._pool_lock:
            if self._pool is None:
                import urllib3  # here: a warm ensure never needs HTTP

                self._pool = urllib3.PoolManager(
                    num_pools=16,
                    maxsize=self.max_connections,
                    retries=False,
                    timeout=urllib3.Timeout(connect=self.stall_timeout, read=self.stall_timeout),
                )
            return self._pool


class _Job:
    """One attempt at one file from one located object."""

    def __init__(
        self,
        engine: TransferEngine,
        located: Located,
        partial: PartialDownload | None,
        expected: Expected,
        progress: ProgressCallback | None,
        cancelled: Callable[[], bool],
    ) -> None:
        self.engine, self.located, self._partial, self.expected = engine, located, partial, expected
        self.progress, self.cancelled = progress, cancelled
        self.stop = threading.Event()
        self.sha256 = ""
        self.wants_git_blob_id = expected.sha256 is None and expected.git_blob_id is not None
        self.chunk_bytes = max(MIN_CHUNK_BYTES, min(MAX_CHUNK_BYTES, engine.part_size // 16))

    @property
    def partial(self) -> PartialDownload:
        assert self._partial is not None
        return self._partial

    def run(self) -> Path:
        expected, partial = self.expected, self.partial
        if partial.resumed_bytes and self.progress:
            self.progress(partial.resumed_bytes)
        hasher = OrderedHasher(partial.data_path, expected.size, partial.ranges, git_blob_id=self.wants_git_blob_id)
        try:
            pending = [i for i, r in enumerate(partial.ranges) if not r.complete]
            self._buffers: queue.Queue[memoryview] = queue.Queue()
            for _ in range(BUFFERS_PER_RANGE * max(1, len(pending))):
                self._buffers.put(memoryview(mmap.mmap(-1, self.chunk_bytes)))
            self._run_ranges(pending, hasher)
            self.sha256 = self.verify(hasher)
        finally:
            hasher.close()
        return partial.finish()

    def verify_in_place(self, path: Path) -> str:
        """Verify a complete file where it is (a file linked in from another tool's cache), reading it once."""
        size = os.stat(path).st_size
        if size != self.expected.size:
            raise self._checksum_fail(f"is {size} bytes, where {self.expected.size} are expected")
        hasher = OrderedHasher(path, size, [RangeProgress(0, size, size)], git_blob_id=self.wants_git_blob_id)
        sha256 = self.verify(hasher)
        if self.progress:
            self.progress(size)
        return sha256

    def verify(self, hasher: OrderedHasher) -> str:
        """The sha256 of the finished file, or CHECKSUM_FAIL when it is not the file expected."""
        sha256, git_blob_id = hasher.digests()
        expected = self.expected
        if expected.sha256 is not None and sha256 != expected.sha256:
            raise self._checksum_fail(f"has sha256 {sha256} where {expected.sha256} is expected")
        if self.wants_git_blob_id and git_blob_id != expected.git_blob_id:
            raise self._checksum_fail(f"has git blob id {git_blob_id} where {expected.git_blob_id} is expected")
        if expected.sha256 is None and expected.git_blob_id is None:
            log.warning("%s has no digest to check against; only its size was verified", expected.label)
        return sha256

    # -- ranges -----------------------------------------------------------------------------------------------

    def _run_ranges(self, pending: list[int], hasher: OrderedHasher) -> None:
        engine = self.engine
        work: queue.SimpleQueue[int] = queue.SimpleQueue()
        for index in pending:
            work.put(index)
        helpers: list[Future[None]] = []
        for _ in range(len(pending) - 1):
            if not engine.connections.acquire(blocking=False):
                break
            helpers.append(engine.range_workers.submit(self._drain, work, hasher, True))
        own_error: BaseException | None = None
        try:
            with engine.connections:
                self._drain(work, hasher, False)
        except BaseException as error:
            own_error = error
            self.stop.set()
        wait(helpers)
        errors = [own_error, *(future.exception() for future in helpers)]
        # The range that failed first names the problem; the others only stopped because of it.
        real = [error for error in errors if error is not None and not isinstance(error, _Stopped)]
        if real:
            raise real[0]
        if own_error is not None:
            raise own_error

    def _drain(self, work: "queue.SimpleQueue[int]", hasher: OrderedHasher, holds_slot: bool) -> None:
        try:
            while True:
                try:
                    index = work.get_nowait()
                except queue.Empty:
                    return
                before = self.partial.ranges[index].done
                try:
                    self._fetch_range(index, hasher)
                except BaseException:
                    self.stop.set()
                    raise
                finally:
                    metrics.download_bytes(self.expected.source, self.partial.ranges[index].done - before)
        finally:
            if holds_slot:
                self.engine.connections.release()

    def _fetch_range(self, index: int, hasher: OrderedHasher) -> None:
        if isinstance(self.located, LocalObject):
            self._copy_local(self.located.path, index, hasher)
            return
        failures = 0
        while not self.partial.ranges[index].complete:
            before = self.partial.ranges[index].done
            try:
                self._stream(self.located, index, hasher)
            except RetryableFailure as problem:
                if self.partial.ranges[index].done > before:
                    failures = 0  # it moved: a long download may meet many unrelated drops
                failures += 1
                if failures > self.engine.retries:
                    raise self._give_up(problem) from None
                delay = self._delay(problem, failures)
                metrics.retry(self.expected.source, _retry_reason(problem))
                log.warning(
                    "%s from %s: %s; retry %d of %d in %.1fs", self.expected.label, self.located.display,
                    problem.reason, failures, self.engine.retries, delay,
                )
                self._sleep(delay)

    def _delay(self, problem: RetryableFailure, failures: int) -> float:
        if problem.retry_after is not None:
            if problem.retry_after > MAX_RETRY_AFTER_SECONDS:
                raise self._give_up(problem)
            return problem.retry_after
        return random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (failures - 1)))

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._check_running()
            time.sleep(min(left, 0.1))

    def _check_running(self) -> None:
        if self.cancelled():
            raise OperationInterruptedError(
                f"interrupted while fetching {self.expected.label}; the bytes on disk are kept for resume",
                suggestions=["run the same command again to resume"],
            )
        if self.stop.is_set():
            raise _Stopped()

    # -- HTTP -------------------------------------------------------------------------------------------------

    def _stream(self, remote: RemoteObject, index: int, hasher: OrderedHasher) -> None:
        import urllib3

        range_ = self.partial.ranges[index]
        whole = range_.start == 0 and range_.done == 0 and range_.end == self.expected.size
        headers = dict(remote.headers)
        if not whole:
            headers["Range"] = f"bytes={range_.done}-{range_.end - 1}"
        self._check_running()
        try:
            response = self.engine.pool.request(
                "GET", remote.url, headers=headers, preload_content=False, decode_content=False,
                redirect=True, retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=10),
            )
        except urllib3.exceptions.HTTPError as exc:
            raise RetryableFailure(f"cannot connect ({type(exc).__name__}: {exc})") from None
        try:
            self._check_response(response, remote, index, whole)
            self._receive(lambda view: response.readinto(view), index, hasher, urllib3.exceptions.HTTPError)
            response.release_conn()
        finally:
            response.close()

    def _check_response(self, response: "urllib3.BaseHTTPResponse", remote: RemoteObject, index: int, whole: bool) -> None:
        status = response.status
        if status in (200, 206):
            total = total_size(response, whole)
            if total is not None and total != self.expected.size:
                raise self._checksum_fail(f"is {total} bytes at the source, where {self.expected.size} are expected",
                                          status=status)
            if status == 200 and not whole:
                raise RangesIgnored()
            if status == 206 and range_start(response) != self.partial.ranges[index].done:
                raise RetryableFailure("the server answered with another range than asked", status=status)
            return
        body = short_body(response)
        if status in RETRYABLE_STATUS:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            raise RetryableFailure(f"HTTP {status}{body}", status=status, retry_after=retry_after)
        if status in (401, 403):
            raise AuthFailError(
                f"source {self.expected.source} refused access to {self.expected.label} at {remote.display} "
                f"(HTTP {status}{body})",
                suggestions=list(remote.auth_suggestions) or ["check the credentials configured for this source"],
                attempts=[self._attempt("AUTH_FAIL", f"HTTP {status}", status)],
            )
        if status == 416:
            raise self._checksum_fail("is shorter at the source than expected (HTTP 416)", status=status)
        raise SourceUnavailableError(
            f"source {self.expected.source} has no {self.expected.label} at {remote.display} (HTTP {status}{body})",
            attempts=[self._attempt("SOURCE_UNAVAILABLE", f"HTTP {status}", status)],
        )

    def _give_up(self, problem: RetryableFailure) -> WanError:
        where = self.located.display
        if problem.status == 429:
            return RateLimitError(
                f"source {self.expected.source} kept rate-limiting {self.expected.label} at {where} past "
                f"{self.engine.retries} retries (last: {problem.reason})",
                suggestions=["wait a few minutes and run the command again; the bytes fetched so far are kept",
                             "or set a Hub token (HF_TOKEN, or `keyring set wanstudio hf_token`): anonymous limits are lower"],
                attempts=[self._attempt("RATE_LIMIT", problem.reason, problem.status)],
            )
        return SourceUnavailableError(
            f"source {self.expected.source} failed to deliver {self.expected.label} from {where} after "
            f"{self.engine.retries} retries (last: {problem.reason})",
            suggestions=["check the connection to the source; the bytes fetched so far are kept for the next run"],
            attempts=[self._attempt("SOURCE_UNAVAILABLE", problem.reason, problem.status)],
        )

    # -- local files ------------------------------------------------------------------------------------------

    def _copy_local(self, path: Path, index: int, hasher: OrderedHasher) -> None:
        try:
            handle = open(path, "rb", buffering=0)
        except OSError as exc:
            raise SourceUnavailableError(
                f"source {self.expected.source} cannot read {path}: {exc.strerror or exc}",
                attempts=[self._attempt("SOURCE_UNAVAILABLE", exc.strerror or str(exc))],
            ) from None
        with handle:
            size = os.fstat(handle.fileno()).st_size
            if size != self.expected.size:
                raise self._checksum_fail(f"is {size} bytes at the source, where {self.expected.size} are expected")
            handle.seek(self.partial.ranges[index].done)
            self._receive(handle.readinto, index, hasher, OSError)

    # -- the common receive loop ------------------------------------------------------------------------------

    def _receive(self, readinto: Callable[[memoryview], int | None], index: int, hasher: OrderedHasher,
                 transient: type[BaseException] | tuple[type[BaseException], ...]) -> None:
        """Fill chunks from `readinto`, write each and hash it, until the range is complete.

        When the stream breaks mid-chunk, the aligned part of what arrived is still written, so a retry
        asks for less than a block again.
        """
        range_ = self.partial.ranges[index]
        while not range_.complete:
            self._check_running()
            buffer = self._buffers.get()
            want = min(self.chunk_bytes, range_.remaining)
            filled = 0
            problem: RetryableFailure | ChecksumFailError | None = None
            try:
                while filled < want and (count := readinto(buffer[filled:min(want, filled + READ_BYTES)])):
                    filled += count
            except transient as exc:
                reason = "stalled" if "timed out" in str(exc).lower() else f"connection lost ({type(exc).__name__})"
                problem = RetryableFailure(f"{reason} after {format_bytes(range_.done - range_.start + filled)} of this range")
            if filled < want and problem is None:
                problem = (self._checksum_fail("ended early: it is shorter than expected")
                           if isinstance(self.located, LocalObject)
                           else RetryableFailure(f"the body ended {range_.remaining - filled} bytes early"))
            keep = filled if problem is None else filled - filled % ALIGNMENT
            if keep:
                self._write(index, buffer, keep, hasher)
            else:
                self._buffers.put(buffer)
            if problem is not None:
                raise problem

    def _write(self, index: int, buffer: memoryview, length: int, hasher: OrderedHasher) -> None:
        offset = self.partial.ranges[index].done
        chunk = buffer[:length]
        try:
            self.partial.write(index, chunk)
        except BaseException:
            self._buffers.put(buffer)
            raise
        hasher.chunk_written(offset, chunk, lambda: self._buffers.put(buffer))
        if self.progress:
            self.progress(length)

    # -- errors -----------------------------------------------------------------------------------------------

    def _attempt(self, code: str, message: str, status: int | None = None) -> Attempt:
        url = self.located.url if isinstance(self.located, RemoteObject) else None
        return Attempt(self.expected.source, self.expected.file, code, message, url=url, http_status=status)

    def _checksum_fail(self, problem: str, *, status: int | None = None) -> ChecksumFailError:
        return ChecksumFailError(
            f"{self.expected.label} from source {self.expected.source} {problem}; the bad copy was discarded",
            suggestions=["the source holds a different file than the manifest describes: fix the source or the manifest"],
            attempts=[self._attempt("CHECKSUM_FAIL", problem, status)],
        )


def _retry_reason(problem: RetryableFailure) -> RetryReason:
    """The `reason` label of a retry: 429 is rate_limit, another HTTP status server_error, a stream that
    stopped moving (see _receive) stall, and anything else on the connection (refused, reset, cut short)
    connection."""
    if problem.status == 429:
        return "rate_limit"
    if problem.status is not None:
        return "server_error"
    return "stall" if problem.reason.startswith("stalled") else "connection"


def _link(source: Path, target: Path) -> bool:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    target.with_name(target.name + ".journal").unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        return False
    return True
