"""The server's job table (SQLite in WAL mode), used directly: order, bounds, concurrency, restarts."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from wanstudio.errors import QueueFullError, VideoNotFoundError
from wanstudio.server.jobstore import CANCELLED, COMPLETED, FAILED, IN_PROGRESS, QUEUED, Job, JobStore


def new_job(prompt: str = "a fox", **fields: object) -> Job:
    return Job(id=f"video_{uuid.uuid4().hex}", status=QUEUED, model="ti2v-5B@2.2.0", variant="dev",
               created_at=time.time(), params={"prompt": prompt, "steps": 4}, **fields)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    opened = JobStore(tmp_path / "data" / "jobs.sqlite3")
    yield opened
    opened.close()


def test_the_database_is_in_wal_mode(store: JobStore) -> None:
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_jobs_are_claimed_oldest_first_and_each_claim_counts_an_attempt(store: JobStore) -> None:
    jobs = [store.add(new_job(f"job {i}"), max_queued=10) for i in range(3)]
    assert [job.seq for job in jobs] == sorted(job.seq for job in jobs)

    first = store.claim()
    assert first is not None and first.id == jobs[0].id
    assert first.status == IN_PROGRESS and first.attempts == 1 and first.started_at is not None
    assert store.get(jobs[0].id).status == IN_PROGRESS
    assert [store.claim().id, store.claim().id] == [jobs[1].id, jobs[2].id]  # type: ignore[union-attr]
    assert store.claim() is None


def test_the_queue_bound_counts_only_waiting_jobs(store: JobStore) -> None:
    store.add(new_job(), max_queued=2)
    store.add(new_job(), max_queued=2)
    with pytest.raises(QueueFullError) as refused:
        store.add(new_job(), max_queued=2)
    assert refused.value.code == "QUEUE_FULL" and refused.value.http_status == 429
    assert "2 jobs are waiting" in refused.value.message
    assert store.counts()[QUEUED] == 2  # the refused job was not inserted

    store.claim()  # one leaves the queue for a worker: room for one more
    store.add(new_job(), max_queued=2)
    with pytest.raises(QueueFullError):
        store.add(new_job(), max_queued=2)


def test_two_threads_claiming_never_get_the_same_job(store: JobStore) -> None:
    added = {store.add(new_job(f"job {i}"), max_queued=1000).id for i in range(200)}
    claimed: list[list[str]] = [[], []]
    start = threading.Barrier(2)

    def claim_all(mine: list[str]) -> None:
        start.wait()
        while (job := store.claim()) is not None:
            mine.append(job.id)

    threads = [threading.Thread(target=claim_all, args=(mine,)) for mine in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    everything = claimed[0] + claimed[1]
    assert len(everything) == len(set(everything)) == 200
    assert set(everything) == added
    assert store.counts()[IN_PROGRESS] == 200


def test_two_stores_on_one_file_never_claim_the_same_job(tmp_path: Path) -> None:
    """Two processes (here: two connections) share the database; BEGIN IMMEDIATE keeps claims apart."""
    path = tmp_path / "jobs.sqlite3"
    first, second = JobStore(path), JobStore(path)
    try:
        for i in range(100):
            first.add(new_job(f"job {i}"), max_queued=1000)
        claimed: list[str] = []
        lock = threading.Lock()

        def claim_all(store: JobStore) -> None:
            while (job := store.claim()) is not None:
                with lock:
                    claimed.append(job.id)

        threads = [threading.Thread(target=claim_all, args=(store,)) for store in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(claimed) == len(set(claimed)) == 100
    finally:
        first.close()
        second.close()


def test_finish_only_from_the_given_statuses(store: JobStore) -> None:
    job = store.add(new_job(), max_queued=10)
    # A queued job is not finished by a worker's default `only_from` (in progress).
    assert store.finish(job.id, COMPLETED, result={"metrics": {}}) is None
    assert store.get(job.id).status == QUEUED

    # A client's cancel may finish it from the queue.
    cancelled = store.finish(job.id, CANCELLED, error={"code": "CANCELLED"}, only_from=(QUEUED, IN_PROGRESS))
    assert cancelled is not None and cancelled.status == CANCELLED and cancelled.completed_at is not None
    assert cancelled.finished and cancelled.error == {"code": "CANCELLED"}

    # A job cancelled while its last step ran stays cancelled when the worker reports success.
    running = store.add(new_job(), max_queued=10)
    assert store.claim().id == running.id  # type: ignore[union-attr]
    store.finish(running.id, CANCELLED, only_from=(QUEUED, IN_PROGRESS))
    assert store.finish(running.id, COMPLETED, result={"metrics": {"elapsed_seconds": 1}}) is None
    assert store.get(running.id).status == CANCELLED and store.get(running.id).result is None

    # And an unknown id is no error, just nothing to finish.
    assert store.finish(f"video_{uuid.uuid4().hex}", FAILED) is None


def test_finish_keeps_result_error_and_the_last_progress(store: JobStore) -> None:
    job = store.add(new_job(), max_queued=10)
    store.claim()
    store.save_progress(job.id, {"stage": "denoising", "step": 2, "percent": 47.5})
    assert store.get(job.id).progress == {"stage": "denoising", "step": 2, "percent": 47.5}

    done = store.finish(job.id, COMPLETED, result={"metrics": {"elapsed_seconds": 2.5}})
    assert done is not None and done.status == COMPLETED
    assert done.result == {"metrics": {"elapsed_seconds": 2.5}}
    assert done.progress == {"stage": "denoising", "step": 2, "percent": 47.5}  # kept: no new progress given

    failed = store.add(new_job(), max_queued=10)
    store.claim()
    ended = store.finish(failed.id, FAILED, error={"code": "OUT_OF_MEMORY", "message": "too big"},
                         progress={"stage": "loading", "step": 0, "percent": 0.0})
    assert ended is not None and ended.error == {"code": "OUT_OF_MEMORY", "message": "too big"}
    assert ended.progress == {"stage": "loading", "step": 0, "percent": 0.0}


def test_progress_of_a_job_no_longer_running_is_not_overwritten(store: JobStore) -> None:
    """The worker of a job cancelled mid-run keeps reporting until its next step: the row keeps the
    progress the job was cancelled at."""
    job = store.add(new_job(), max_queued=10)
    store.claim()
    store.save_progress(job.id, {"stage": "denoising", "step": 1, "percent": 20.0})
    store.finish(job.id, CANCELLED, only_from=(QUEUED, IN_PROGRESS))
    store.save_progress(job.id, {"stage": "done", "step": 4, "percent": 100.0})
    assert store.get(job.id).progress == {"stage": "denoising", "step": 1, "percent": 20.0}


def test_requeue_puts_a_running_job_back_at_its_place(store: JobStore) -> None:
    first, second = store.add(new_job("first"), max_queued=10), store.add(new_job("second"), max_queued=10)
    assert store.claim().id == first.id  # type: ignore[union-attr]
    store.save_progress(first.id, {"stage": "denoising", "step": 3, "percent": 60.0})

    # A clean shutdown: the attempt does not count.
    store.requeue(first.id, uncount_attempt=True)
    again = store.get(first.id)
    assert again.status == QUEUED and again.attempts == 0 and again.started_at is None and again.progress is None
    assert again.warnings == []

    # Still ahead of the job queued after it.
    assert store.claim().id == first.id  # type: ignore[union-attr]
    # A crash: the attempt counts, and the job says what happened (once, however often it is requeued).
    store.requeue(first.id, uncount_attempt=False, warning="it ran again")
    assert store.get(first.id).attempts == 1 and store.get(first.id).warnings == ["it ran again"]
    assert store.claim().id == first.id  # type: ignore[union-attr]
    assert store.get(first.id).attempts == 2
    store.requeue(first.id, uncount_attempt=False, warning="it ran again")
    assert store.get(first.id).warnings == ["it ran again"]

    # Only a running job goes back: a queued or finished one is left alone.
    store.requeue(second.id, uncount_attempt=False, warning="no")
    assert store.get(second.id).warnings == [] and store.get(second.id).status == QUEUED
    store.claim()
    store.finish(first.id, COMPLETED)
    store.requeue(first.id, uncount_attempt=True)
    assert store.get(first.id).status == COMPLETED


def test_list_pages_newest_first_or_oldest_first(store: JobStore) -> None:
    ids = [store.add(new_job(f"job {i}"), max_queued=100).id for i in range(7)]

    page, more = store.list(limit=3)
    assert [job.id for job in page] == ids[::-1][:3] and more
    page, more = store.list(limit=3, after=page[-1].id)
    assert [job.id for job in page] == ids[::-1][3:6] and more
    page, more = store.list(limit=3, after=page[-1].id)
    assert [job.id for job in page] == [ids[0]] and not more

    page, more = store.list(limit=4, newest_first=False)
    assert [job.id for job in page] == ids[:4] and more
    page, more = store.list(limit=4, after=ids[3], newest_first=False)
    assert [job.id for job in page] == ids[4:] and not more

    page, more = store.list(limit=7)
    assert len(page) == 7 and not more
    with pytest.raises(VideoNotFoundError):
        store.list(limit=3, after=f"video_{uuid.uuid4().hex}")


def test_get_and_delete(store: JobStore) -> None:
    job = store.add(new_job(request_id="req-1", warnings=["size snapped"]), max_queued=10)
    got = store.get(job.id)
    assert (got.id, got.model, got.variant, got.params, got.request_id, got.warnings) == (
        job.id, "ti2v-5B@2.2.0", "dev", {"prompt": "a fox", "steps": 4}, "req-1", ["size snapped"])
    store.delete(job.id)
    with pytest.raises(VideoNotFoundError) as missing:
        store.get(job.id)
    assert missing.value.code == "NOT_FOUND" and missing.value.param == "video_id"


@pytest.mark.parametrize("bad_id", ["../../etc/passwd", "video_../../x", "video_" + "0" * 31, "VIDEO_" + "0" * 32,
                                    "video_" + "0" * 32 + "\n", "' OR 1=1 --", ""])
def test_ids_not_of_the_job_form_are_never_looked_up(store: JobStore, bad_id: str) -> None:
    store.add(new_job(), max_queued=10)
    with pytest.raises(VideoNotFoundError):
        store.get(bad_id)


def test_counts_and_with_status(store: JobStore) -> None:
    assert store.counts() == {QUEUED: 0, IN_PROGRESS: 0, COMPLETED: 0, FAILED: 0, CANCELLED: 0}
    ids = [store.add(new_job(), max_queued=10).id for _ in range(5)]
    store.claim()
    store.claim()
    store.finish(ids[0], COMPLETED)
    store.finish(ids[4], CANCELLED, only_from=(QUEUED,))
    assert store.counts() == {QUEUED: 2, IN_PROGRESS: 1, COMPLETED: 1, FAILED: 0, CANCELLED: 1}
    assert [job.id for job in store.with_status(QUEUED)] == ids[2:4]
    assert [job.id for job in store.with_status(COMPLETED, CANCELLED)] == [ids[0], ids[4]]


def test_finished_jobs_by_age(store: JobStore) -> None:
    ids = [store.add(new_job(), max_queued=10).id for _ in range(3)]
    for job_id in ids[:2]:
        store.finish(job_id, CANCELLED, only_from=(QUEUED,))
    assert [job.id for job in store.finished_oldest_first()] == ids[:2]


def test_a_reopened_store_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    queued = store.add(new_job("queued", request_id="r1"), max_queued=10)
    running = store.add(new_job("running"), max_queued=10)
    done = store.add(new_job("done"), max_queued=10)
    store.finish(done.id, CANCELLED, error={"code": "CANCELLED"}, only_from=(QUEUED,))
    store.claim()  # `queued`, the oldest, is now running
    store.save_progress(queued.id, {"stage": "denoising", "step": 1, "percent": 10.0})
    store.close()

    reopened = JobStore(path)
    try:
        assert reopened.get(queued.id).status == IN_PROGRESS
        assert reopened.get(queued.id).progress == {"stage": "denoising", "step": 1, "percent": 10.0}
        assert reopened.get(queued.id).request_id == "r1" and reopened.get(queued.id).attempts == 1
        assert reopened.get(running.id).status == QUEUED
        assert reopened.get(done.id).status == CANCELLED and reopened.get(done.id).error == {"code": "CANCELLED"}
        assert reopened.counts() == {QUEUED: 1, IN_PROGRESS: 1, COMPLETED: 0, FAILED: 0, CANCELLED: 1}
        # New jobs keep coming after the old ones.
        later = reopened.add(new_job("later"), max_queued=10)
        assert later.seq > done.seq
        assert reopened.claim().id == running.id  # type: ignore[union-attr]
    finally:
        reopened.close()
