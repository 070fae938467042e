"""The persistent job table: one SQLite database in WAL mode under the data directory.

Why SQLite: jobs must survive a restart (or a SIGKILL) with nothing half-written, several threads read
while the worker writes, and a single file needs no service to run. WAL lets readers proceed during a
write; `synchronous=NORMAL` keeps every committed transaction across a process crash (only a power cut
may lose the last ones). Every change that reads and then writes (admission against the queue bound, a
worker claiming the oldest job) runs in one `BEGIN IMMEDIATE` transaction, so two threads or two
processes never claim the same job or pass the bound together.

Rows hold JSON documents for what varies with the job (the validated parameters, the progress, the
result, the error); the columns are what queries filter and sort on.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from wanstudio.errors import QueueFullError, VideoNotFoundError

QUEUED, IN_PROGRESS, COMPLETED, FAILED, CANCELLED = (
    "queued",
    "in_progress",
    "completed",
    "failed",
    "cancelled",
)
STATUSES = (QUEUED, IN_PROGRESS, COMPLETED, FAILED, CANCELLED)
FINISHED = (COMPLETED, FAILED, CANCELLED)

_ID = re.compile(r"^video_[0-9a-f]{32}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    status       TEXT NOT NULL,
    model        TEXT NOT NULL,
    variant      TEXT NOT NULL,
    created_at   REAL NOT NULL,
    started_at   REAL,
    completed_at REAL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    request_id   TEXT,
    params       TEXT NOT NULL,
    progress     TEXT,
    result       TEXT,
    error        TEXT,
    warnings     TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, seq);
"""


def is_job_id(text: str) -> bool:
    """Whether `text` has the form of a job id; only such ids ever become folder names."""
    return bool(_ID.match(text))


@dataclass
class Job:
    """One row: a generation request and everything known about its run."""

    id: str
    status: str
    model: str
    variant: str
    created_at: float
    params: dict[str, Any]
    started_at: float | None = None
    completed_at: float | None = None
    attempts: int = 0
    request_id: str | None = None
    progress: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    seq: int = 0

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


_JSON_COLUMNS = ("params", "progress", "result", "error", "warnings")
_COLUMNS = (
    "seq",
    "id",
    "status",
    "model",
    "variant",
    "created_at",
    "started_at",
    "completed_at",
    "attempts",
    "request_id",
    *_JSON_COLUMNS,
)


def _row_to_job(row: sqlite3.Row) -> Job:
    values = {name: row[name] for name in _COLUMNS}
    for name in _JSON_COLUMNS:
        values[name] = json.loads(values[name]) if values[name] is not None else None
    return Job(**values)


class JobStore:
    """Jobs on disk; safe to share between threads (one connection, one lock)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- writing ------------------------------------------------------------------------------------------------

    def add(self, job: Job, *, max_queued: int) -> Job:
        """Insert `job` as queued, or QUEUE_FULL when `max_queued` jobs already wait."""
        with self._transaction() as db:
            waiting = db.execute("SELECT count(*) FROM jobs WHERE status = ?", (QUEUED,)).fetchone()[0]
            if waiting >= max_queued:
                raise QueueFullError(
                    f"the queue is full: {waiting} jobs are waiting (the limit is {max_queued})",
                    suggestions=[
                        "retry after a job finishes (see Retry-After)",
                        "raise WAN_QUEUE_MAX on the server to allow a longer queue",
                    ],
                )
            cursor = db.execute(
                "INSERT INTO jobs (id, status, model, variant, created_at, attempts, request_id, params, warnings)"
                " VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?)",
                (
                    job.id,
                    QUEUED,
                    job.model,
                    job.variant,
                    job.created_at,
                    job.request_id,
                    json.dumps(job.params),
                    json.dumps(job.warnings),
                ),
            )
            job.seq, job.status = int(cursor.lastrowid or 0), QUEUED
        return job

    def claim(self) -> Job | None:
        """Mark the oldest queued job in progress and return it (None when nothing waits)."""
        with self._transaction() as db:
            row = db.execute("SELECT * FROM jobs WHERE status = ? ORDER BY seq LIMIT 1", (QUEUED,)).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET status = ?, started_at = ?, attempts = attempts + 1 WHERE seq = ?",
                (IN_PROGRESS, time.time(), row["seq"]),
            )
            return self._get(db, row["id"])

    def save_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        """Record a running job's progress (a job cancelled meanwhile keeps the progress it stopped at)."""
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET progress = ? WHERE id = ? AND status = ?",
                (json.dumps(progress), job_id, IN_PROGRESS),
            )

    def finish(
        self,
        job_id: str,
        status: str,
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        progress: dict[str, Any] | None = None,
        only_from: tuple[str, ...] = (IN_PROGRESS,),
    ) -> Job | None:
        """Record the end of a job still in one of `only_from` (None, untouched, when it moved on or is gone:
        a job cancelled while its last step ran stays cancelled)."""
        with self._transaction() as db:
            job = self._get(db, job_id)
            if job is None or job.status not in only_from:
                return None
            db.execute(
                "UPDATE jobs SET status = ?, completed_at = ?, result = ?, error = ?,"
                " progress = coalesce(?, progress) WHERE id = ?",
                (status, time.time(), _dumps(result), _dumps(error), _dumps(progress), job_id),
            )
            return self._get(db, job_id)

    def requeue(self, job_id: str, *, uncount_attempt: bool, warning: str | None = None) -> None:
        """Put a job that was running back in the queue, at its original place (with `warning` added)."""
        with self._transaction() as db:
            job = self._get(db, job_id)
            if job is None or job.status != IN_PROGRESS:
                return
            warnings = job.warnings + ([warning] if warning and warning not in job.warnings else [])
            db.execute(
                "UPDATE jobs SET status = ?, started_at = NULL, progress = NULL, attempts = attempts - ?,"
                " warnings = ? WHERE id = ?",
                (QUEUED, 1 if uncount_attempt else 0, json.dumps(warnings), job_id),
            )

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    # -- reading ------------------------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        """The job, or NOT_FOUND naming the id."""
        with self._lock:
            job = self._get(self._db, job_id) if is_job_id(job_id) else None
        if job is None:
            raise VideoNotFoundError(
                f"no video with id {job_id!r} on this server",
                param="video_id",
                suggestions=[
                    "list the videos with GET /v1/videos; finished ones are kept for WAN_JOB_RETENTION"
                ],
            )
        return job

    def list(
        self, *, limit: int, after: str | None = None, newest_first: bool = True
    ) -> tuple[list[Job], bool]:
        """A page of jobs after the job `after` (exclusive), and whether more follow."""
        order, compare = ("DESC", "<") if newest_first else ("ASC", ">")
        with self._lock:
            start = None
            if after is not None:
                start = self.get(after).seq
            where, args = (f"WHERE seq {compare} ?", [start]) if start is not None else ("", [])
            rows = self._db.execute(
                f"SELECT * FROM jobs {where} ORDER BY seq {order} LIMIT ?", (*args, limit + 1)
            ).fetchall()
        jobs = [_row_to_job(row) for row in rows]
        return jobs[:limit], len(jobs) > limit

    def with_status(self, *statuses: str) -> list[Job]:
        marks = ",".join("?" * len(statuses))
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY seq", statuses
            ).fetchall()
        return [_row_to_job(row) for row in rows]

    def counts(self) -> dict[str, int]:
        """Jobs by status (every status present, zero included)."""
        with self._lock:
            rows = self._db.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall()
        counts = dict.fromkeys(STATUSES, 0)
        counts.update({row[0]: row[1] for row in rows})
        return counts

    def finished_oldest_first(self) -> list[Job]:
        """Finished jobs by the time they finished (or were created, for one cancelled while queued)."""
        with self._lock:
            marks = ",".join("?" * len(FINISHED))
            rows = self._db.execute(
                f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY coalesce(completed_at, created_at)",
                FINISHED,
            ).fetchall()
        return [_row_to_job(row) for row in rows]

    @staticmethod
    def _get(db: sqlite3.Connection, job_id: str) -> Job | None:
        row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _row_to_job(row) if row is not None else None


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value)
