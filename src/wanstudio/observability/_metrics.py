"""The orchestrator's metrics, recorded into plain Python counters; turned into Prometheus metrics when scraped.

Why not `prometheus_client.Counter` objects directly: importing prometheus_client costs ~30 ms (it pulls in
an HTTP server, wsgiref and more), and most processes that record (a CLI `wan models ensure`, which exits
right after) are never scraped. So recording is a dictionary update under a lock with nothing imported,
and `_prometheus.py` (which does import prometheus_client) reads a snapshot at scrape time through a
custom collector. Callers record per file, per range or per event, never per chunk.

Names follow Prometheus conventions (`_total` for counters, base units: bytes, seconds); see
docs/observability.md for what each one means.
"""

from __future__ import annotations

import bisect
import threading
from typing import Literal, NamedTuple

RetryReason = Literal["rate_limit", "server_error", "connection", "stall"]
LockKind = Literal["variant", "blob"]

# A file takes from milliseconds (a config.json) to hours (tens of GB over a slow link).
DOWNLOAD_SECONDS_BUCKETS = (0.05, 0.25, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0)
# Usually no wait at all; otherwise as long as another process's download (WAN_LOCK_TIMEOUT, 1 h by default).
LOCK_WAIT_SECONDS_BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 900.0, 3600.0)
# A denoising step: tens of milliseconds (a dev model on a CPU) to a minute (a 14B expert streamed from RAM).
STEP_SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# A whole generation: seconds (dev) to an hour (720p, 121 frames, 40 steps on a consumer GPU).
GENERATION_SECONDS_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)


class MetricSpec(NamedTuple):
    """One metric: its name as exposed (counters without `_total`), help text, labels, and histogram buckets."""

    name: str
    help: str
    labels: tuple[str, ...]
    kind: Literal["counter", "histogram"]
    buckets: tuple[float, ...] = ()


DOWNLOAD_BYTES = MetricSpec(
    "wan_download_bytes", "Bytes received from each source by the transfer engine (resumed bytes excluded).",
    ("source",), "counter")
DOWNLOAD_SECONDS = MetricSpec(
    "wan_download_seconds", "Seconds to fetch and verify one file from a source, retries and backoff included.",
    ("source",), "histogram", DOWNLOAD_SECONDS_BUCKETS)
FILES_VERIFIED = MetricSpec(
    "wan_files_verified", "Files fetched from a source whose size and digest matched the manifest.",
    ("source",), "counter")
CHECKSUM_FAILURES = MetricSpec(
    "wan_checksum_failures", "Copies from a source whose size or digest differed from the manifest (discarded).",
    ("source",), "counter")
RETRIES = MetricSpec(
    "wan_download_retries", "Ranges retried, by source and reason: rate_limit, server_error, connection, stall.",
    ("source", "reason"), "counter")
LOCK_WAIT = MetricSpec(
    "wan_lock_wait_seconds", "Seconds waited for a cross-process lock, by kind: variant or blob.",
    ("kind",), "histogram", LOCK_WAIT_SECONDS_BUCKETS)
ERRORS = MetricSpec(
    "wan_errors", "Errors reported to a user or client, by error code (CONTRACT section 7).",
    ("code",), "counter")

STEP_SECONDS = MetricSpec(
    "wan_step_seconds", "Seconds per denoising step, by model.", ("model",), "histogram", STEP_SECONDS_BUCKETS)
GENERATION_SECONDS = MetricSpec(
    "wan_generation_seconds", "Seconds from the start of a job's run to its end, by model and outcome "
    "(completed, failed, cancelled).", ("model", "status"), "histogram", GENERATION_SECONDS_BUCKETS)

SPECS = (DOWNLOAD_BYTES, DOWNLOAD_SECONDS, FILES_VERIFIED, CHECKSUM_FAILURES, RETRIES, LOCK_WAIT, ERRORS,
         STEP_SECONDS, GENERATION_SECONDS)


# Plain classes rather than dataclasses: this module is imported on the warm path, and each dataclass
# costs ~0.5 ms to create.
class HistogramValue:
    """Observations of one histogram series: a count per bucket (not cumulative; the last is +Inf), sum, count."""

    __slots__ = ("bucket_counts", "sum", "count")

    def __init__(self, bucket_counts: list[int], sum: float = 0.0, count: int = 0) -> None:  # noqa: A002
        self.bucket_counts, self.sum, self.count = bucket_counts, sum, count

    def cumulative(self, buckets: tuple[float, ...]) -> list[tuple[str, int]]:
        """(le, observations <= le) pairs, ending with +Inf, as the exposition format wants them."""
        pairs, running = [], 0
        for bound, count in zip((*map(str, buckets), "+Inf"), self.bucket_counts):
            running += count
            pairs.append((bound, running))
        return pairs


class Snapshot:
    """A consistent copy of every series, taken under the lock, for one scrape."""

    __slots__ = ("counters", "histograms")

    def __init__(self, counters: dict[str, dict[tuple[str, ...], float]],
                 histograms: dict[str, dict[tuple[str, ...], HistogramValue]]) -> None:
        self.counters, self.histograms = counters, histograms


class Metrics:
    """The measurements of one process (the module-level `metrics` is the one everyone records into)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[tuple[str, ...], float]] = {}
        self._histograms: dict[str, dict[tuple[str, ...], HistogramValue]] = {}
        self.reset()

    # -- what the orchestrator and the CLI record --------------------------------------------------------------

    def download_bytes(self, source: str, count: int) -> None:
        """`count` bytes of a file arrived from `source` (called once per range attempt, not per chunk)."""
        if count > 0:
            self._add(DOWNLOAD_BYTES, (source,), count)

    def file_verified(self, source: str, seconds: float) -> None:
        """A file from `source` passed verification, `seconds` after its fetch began."""
        self._add(FILES_VERIFIED, (source,), 1)
        self._observe(DOWNLOAD_SECONDS, (source,), seconds)

    def checksum_failure(self, source: str) -> None:
        """A copy from `source` had the wrong size or digest and was discarded."""
        self._add(CHECKSUM_FAILURES, (source,), 1)

    def retry(self, source: str, reason: RetryReason) -> None:
        """A range from `source` is being retried."""
        self._add(RETRIES, (source, reason), 1)

    def lock_wait(self, kind: str, seconds: float) -> None:
        """A lock of `kind` (variant, blob) was acquired, or given up on, after `seconds` of waiting."""
        self._observe(LOCK_WAIT, (kind,), seconds)

    def error(self, code: str) -> None:
        """An error with this code (CONTRACT section 7) was reported."""
        self._add(ERRORS, (code,), 1)

    def steps(self, model: str, seconds: "list[float]") -> None:
        """A generation with `model` ran denoising steps that took these `seconds` each."""
        for value in seconds:
            self._observe(STEP_SECONDS, (model,), value)

    def generation(self, model: str, status: str, seconds: float) -> None:
        """A job with `model` ended with `status` after running for `seconds`."""
        self._observe(GENERATION_SECONDS, (model, status), seconds)

    # -- reading ----------------------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                counters={name: dict(series) for name, series in self._counters.items()},
                histograms={
                    name: {labels: HistogramValue(list(h.bucket_counts), h.sum, h.count) for labels, h in series.items()}
                    for name, series in self._histograms.items()
                },
            )

    def value(self, spec: MetricSpec, *labels: str) -> float:
        """A counter's value, or a histogram's observation count, for one label set (0 when never recorded)."""
        with self._lock:
            if spec.kind == "counter":
                return self._counters[spec.name].get(labels, 0)
            histogram = self._histograms[spec.name].get(labels)
            return histogram.count if histogram else 0

    def reset(self) -> None:
        """Forget everything recorded (tests; a process never needs it: counters only go up)."""
        with self._lock:
            self._counters = {s.name: {} for s in SPECS if s.kind == "counter"}
            self._histograms = {s.name: {} for s in SPECS if s.kind == "histogram"}

    def _add(self, spec: MetricSpec, labels: tuple[str, ...], amount: float) -> None:
        with self._lock:
            series = self._counters[spec.name]
            series[labels] = series.get(labels, 0) + amount

    def _observe(self, spec: MetricSpec, labels: tuple[str, ...], value: float) -> None:
        index = bisect.bisect_left(spec.buckets, value)  # the first bucket whose bound is >= value
        with self._lock:
            histogram = self._histograms[spec.name].get(labels)
            if histogram is None:
                histogram = self._histograms[spec.name][labels] = HistogramValue([0] * (len(spec.buckets) + 1))
            histogram.bucket_counts[index] += 1
            histogram.sum += value
            histogram.count += 1


metrics = Metrics()
"""Where this process records. Metrics are per process: a CLI run's die with it; a server exposes its own."""
