"""POSIX record locks (`PosixLock`) between real processes: mutual exclusion, release on SIGKILL, timeouts.

Also pins two facts docs/platforms.md rests on: the installed `filelock` takes BSD `flock()` locks, and
on a local filesystem `flock()` and POSIX locks do not see each other (so every process sharing a store
must use the same kind).
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from wanstudio.orchestrator import _posix_locks
from wanstudio.orchestrator._posix_locks import LockingUnsupportedError, PosixLock, posix_lock

COUNTER_WORKER = """
import os, sys, time
from pathlib import Path
from wanstudio.orchestrator._posix_locks import PosixLock

lock_path, counter, inside = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
rounds, use_lock, ready, start = int(sys.argv[4]), sys.argv[5] == "1", Path(sys.argv[6]), Path(sys.argv[7])
ready.touch()
while not start.exists():
    time.sleep(0.001)
overlaps = 0
for _ in range(rounds):
    lock = PosixLock(lock_path)
    if use_lock and not lock.acquire(timeout=60):
        sys.exit("lock not acquired in 60 s")
    try:
        os.close(os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        overlaps += 1
    value = int(counter.read_text() or 0)
    time.sleep(0.002)  # widen the read-modify-write window
    counter.write_text(str(value + 1))
    inside.unlink(missing_ok=True)
    lock.release()
print(overlaps)
"""

HOLDER = """
import sys, time
from pathlib import Path
from wanstudio.orchestrator._posix_locks import PosixLock

lock = PosixLock(sys.argv[1])
assert lock.acquire(timeout=30)
Path(sys.argv[2]).touch()
sys.stdin.read()  # hold until stdin closes (or SIGKILL)
lock.release()
"""


def _python(script: str, *args: object, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"the helper process exited early: {process.communicate()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{path} never appeared")
        time.sleep(0.005)


class Holder:
    """Another process holding the lock until `release()` (stdin closed) or `kill()` (SIGKILL)."""

    def __init__(self, lock_path: Path, tmp_path: Path) -> None:
        held = tmp_path / f"held-{time.monotonic_ns()}"
        self.process = _python(HOLDER, lock_path, held, stdin=subprocess.PIPE)
        _wait_for(held, self.process)

    def release(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        assert self.process.wait(timeout=30) == 0, self.process.communicate()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        assert self.process.returncode == -signal.SIGKILL

    def cleanup(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def holders(tmp_path: Path):
    started: list[Holder] = []

    def start(lock_path: Path) -> Holder:
        holder = Holder(lock_path, tmp_path)
        started.append(holder)
        return holder

    yield start
    for holder in started:
        holder.cleanup()


def _count_with_workers(
    tmp_path: Path, *, use_lock: bool, workers: int = 4, rounds: int = 25
) -> tuple[int, int]:
    """Run `workers` processes, each incrementing a counter file `rounds` times; (final count, overlaps)."""
    counter, inside, start = tmp_path / "counter", tmp_path / "inside", tmp_path / "start"
    counter.write_text("0")
    readies = [tmp_path / f"ready-{i}" for i in range(workers)]
    processes = [
        _python(COUNTER_WORKER, tmp_path / "c.lock", counter, inside, rounds, int(use_lock), ready, start)
        for ready in readies
    ]
    for ready, process in zip(readies, processes):
        _wait_for(ready, process)
    start.touch()  # all at once
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0] * workers, [err for _, err in outputs]
    return int(counter.read_text()), sum(int(out) for out, _ in outputs)


# -- between processes ---------------------------------------------------------------------------------------


def test_four_processes_incrementing_a_counter_under_the_lock_lose_no_update(tmp_path: Path) -> None:
    count, overlaps = _count_with_workers(tmp_path, use_lock=True)
    assert overlaps == 0
    assert count == 4 * 25


def test_without_the_lock_the_same_workers_lose_updates(tmp_path: Path) -> None:
    """The control: the harness does see races, so the test above means something."""
    count, overlaps = _count_with_workers(tmp_path, use_lock=False)
    assert count < 4 * 25 or overlaps > 0


def test_a_lock_held_by_a_process_killed_with_sigkill_is_released(tmp_path: Path, holders) -> None:
    lock_path = tmp_path / "locks" / "variant.lock"
    holder = holders(lock_path)
    lock = PosixLock(lock_path)
    assert not lock.acquire(timeout=0.2)
    holder.kill()
    started = time.monotonic()
    assert lock.acquire(timeout=10)
    assert time.monotonic() - started < 3  # about one backoff step after the kernel dropped it
    lock.release()
    assert lock_path.exists()  # the lock file stays: removing it would split later lockers across inodes


def test_timeouts(tmp_path: Path, holders) -> None:
    lock_path = tmp_path / "x.lock"
    holder = holders(lock_path)
    lock = PosixLock(lock_path)

    started = time.monotonic()
    assert not lock.acquire(timeout=0)
    assert time.monotonic() - started < 0.5  # one try

    started = time.monotonic()
    assert not lock.acquire(timeout=0.6)
    waited = time.monotonic() - started
    assert 0.6 <= waited < 3
    assert not lock.held

    with pytest.raises(TimeoutError, match="x.lock"), posix_lock(lock_path, timeout=0.1):
        pass

    holder.release()
    with posix_lock(lock_path, timeout=5) as held:
        assert held.held
    assert not held.held


def test_a_waiter_gets_the_lock_when_the_holder_releases(tmp_path: Path, holders) -> None:
    lock_path = tmp_path / "x.lock"
    holder = holders(lock_path)
    lock = PosixLock(lock_path)
    got: list[float] = []

    def wait() -> None:
        if lock.acquire(timeout=20):
            got.append(time.monotonic())

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)
    assert not got
    released = time.monotonic()
    holder.release()
    waiter.join(timeout=30)
    assert got and got[0] - released < 3
    lock.release()


# -- within one process --------------------------------------------------------------------------------------


def test_threads_of_one_process_exclude_each_other(tmp_path: Path) -> None:
    lock_path = tmp_path / "x.lock"
    first = PosixLock(lock_path)
    assert first.acquire(timeout=1)
    second = PosixLock(lock_path)
    outcome: list[bool] = []
    thread = threading.Thread(target=lambda: outcome.append(second.acquire(timeout=0.3)))
    thread.start()
    thread.join()
    assert outcome == [False]  # a bare fcntl lock would have let this thread in
    first.release()
    assert second.acquire(timeout=1)
    second.release()


def test_a_failed_attempt_in_another_thread_does_not_drop_the_holders_lock(tmp_path: Path) -> None:
    """Closing any descriptor of a file drops the process's POSIX lock on it; the gate keeps waiters out."""
    lock_path = tmp_path / "x.lock"
    first = PosixLock(lock_path)
    assert first.acquire(timeout=1)
    thread = threading.Thread(target=lambda: PosixLock(lock_path).acquire(timeout=0.1))
    thread.start()
    thread.join()
    probe = _python(
        "import sys; from wanstudio.orchestrator._posix_locks import PosixLock; "
        "print(PosixLock(sys.argv[1]).acquire(timeout=0))",
        lock_path,
    )
    out, err = probe.communicate(timeout=30)
    assert out.strip() == "False", err  # another process still sees it held
    first.release()


def test_two_spellings_of_one_lock_file_share_the_gate(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    first = PosixLock(tmp_path / "real" / "x.lock")
    assert first.acquire(timeout=1)
    outcome: list[bool] = []
    alias = PosixLock(tmp_path / "alias" / "x.lock")
    thread = threading.Thread(target=lambda: outcome.append(alias.acquire(0.2)))
    thread.start()
    thread.join()
    assert outcome == [False]
    first.release()


def test_not_reentrant_and_release_is_idempotent(tmp_path: Path) -> None:
    lock = PosixLock(tmp_path / "sub" / "x.lock")  # the folder is made
    assert lock.acquire(timeout=1)
    with pytest.raises(RuntimeError, match="not re-entrant"):
        lock.acquire(timeout=0)
    lock.release()
    lock.release()
    assert not lock.held


def test_a_lock_file_removed_while_waiting_is_not_trusted(tmp_path: Path, holders) -> None:
    lock_path = tmp_path / "x.lock"
    holder = holders(lock_path)
    lock = PosixLock(lock_path)
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(lock.acquire(timeout=20)))
    waiter.start()
    time.sleep(0.2)  # the waiter has the old file open
    lock_path.unlink()
    holder.release()
    waiter.join(timeout=30)
    assert result == [True]
    assert lock._fd is not None
    assert os.fstat(lock._fd).st_ino == os.stat(lock_path).st_ino  # it locked the file now at the path
    lock.release()


def test_a_filesystem_without_posix_locks_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(fd: int, cmd: int, *args: object) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "lockf", refuse)
    lock = PosixLock(tmp_path / "x.lock")
    with pytest.raises(LockingUnsupportedError) as caught:
        lock.acquire(timeout=1)
    assert caught.value.errno == errno.ENOLCK
    assert "refuses POSIX locks" in str(caught.value) and "x.lock" in str(caught.value)
    assert not lock.held
    monkeypatch.undo()
    assert lock.acquire(timeout=0)  # the gate was given back
    lock.release()


def test_gates_are_forgotten_once_unused(tmp_path: Path) -> None:
    before = len(_posix_locks._GATE._gates)
    for index in range(20):
        with posix_lock(tmp_path / f"{index}.lock", timeout=1):
            pass
    assert len(_posix_locks._GATE._gates) == before


# -- the facts the choice rests on ---------------------------------------------------------------------------


FILELOCK_HOLDER = """
import sys
from pathlib import Path
from filelock import FileLock

lock = FileLock(sys.argv[1])
lock.acquire(timeout=30)
Path(sys.argv[2]).touch()
sys.stdin.read()
"""


def test_filelock_takes_flock_locks_which_posix_locks_do_not_see_locally(tmp_path: Path) -> None:
    lock_path, held = tmp_path / "x.lock", tmp_path / "held"
    holder = _python(FILELOCK_HOLDER, lock_path, held, stdin=subprocess.PIPE)
    try:
        _wait_for(held, holder)
        fd = os.open(lock_path, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # filelock holds a flock() lock...
        finally:
            os.close(fd)
        lock = PosixLock(lock_path)
        assert lock.acquire(timeout=0)  # ...which a POSIX lock does not see here (NFS would say otherwise)
        lock.release()
    finally:
        holder.kill()
        holder.wait()
