"""Several real `wan` processes at once, a process killed mid-download, and locks held by others."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import wanstudio
from wanstudio.orchestrator._locks import hold_lock
from wanstudio.orchestrator.layout import StoreLayout

from conftest import run_wan, write_model

MiB = 1024 * 1024


def _big_files(count: int, size: int) -> dict[str, bytes]:
    return {f"transformer/part-{i}.safetensors": os.urandom(size) for i in range(count)} | {"model_index.json": b"{}"}


def _start_wan(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "wanstudio", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
    )


class FinalPathWatcher(threading.Thread):
    """Polls a variant's final path and records every time it is visible without being complete."""

    def __init__(self, final: Path, expected: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.final, self.expected = final, expected
        self.stop = threading.Event()
        self.sightings = 0
        self.incomplete: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            if self.final.exists():
                self.sightings += 1
                for relative, size in self.expected.items():
                    try:
                        actual = (self.final / relative).stat().st_size
                    except OSError:
                        actual = None
                    if actual != size:
                        self.incomplete.append(f"{relative}: {actual} of {size} bytes")
            time.sleep(0.0005)


@pytest.mark.slow
def test_many_processes_ensure_one_variant_and_copy_each_file_once(mirror: Path, manifest_path: Path, models_root: Path) -> None:
    files = _big_files(4, 24 * MiB)
    write_model(mirror, manifest_path, files)
    final = models_root / "test" / "toy@1.0.0" / "base"
    watcher = FinalPathWatcher(final, {path: len(data) for path, data in files.items()})
    watcher.start()
    processes = [_start_wan("models", "ensure", "--only", "toy", "--json") for _ in range(6)]
    outputs = [p.communicate(timeout=180) for p in processes]
    watcher.stop.set()
    watcher.join()

    assert [p.returncode for p in processes] == [0] * 6, [err for _, err in outputs]
    results = [json.loads(out)["results"][0] for out, _ in outputs]
    assert {r["path"] for r in results} == {str(final)}
    assert sum(r["sources"].get("local", 0) for r in results) == len(files)  # every file copied once in all
    assert sum(r["bytes_downloaded"] for r in results) == sum(len(d) for d in files.values())
    assert watcher.sightings > 0 and watcher.incomplete == []
    for relative, data in files.items():
        assert (final / relative).read_bytes() == data


@pytest.mark.slow
def test_sigkill_mid_ensure_leaves_nothing_visible_and_the_next_ensure_completes(
    mirror: Path, manifest_path: Path, models_root: Path
) -> None:
    files = _big_files(6, 48 * MiB)
    write_model(mirror, manifest_path, files)
    final = models_root / "test" / "toy@1.0.0" / "base"
    partial = StoreLayout(models_root).partial
    process = _start_wan("models", "ensure", "--only", "toy", env={"WAN_MAX_CONCURRENT_DOWNLOADS": "1"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        parts = list(partial.glob("*.part")) if partial.exists() else []
        if any(p.stat().st_size > 0 for p in parts if p.exists()):
            break
        assert process.poll() is None, process.communicate()
        time.sleep(0.001)
    else:
        pytest.fail("the ensure never started writing")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)

    assert process.returncode == -signal.SIGKILL
    assert not final.exists()
    assert wanstudio.status("toy").state in ("partial", "missing")

    again = run_wan("models", "ensure", "--only", "toy", "--json", env={"WAN_LOCK_TIMEOUT": "30"})
    assert again.returncode == 0, again.stderr
    assert again.json["results"][0]["state"] == "complete"
    deep = run_wan("models", "check", "toy", "--deep", "--json")
    assert deep.returncode == 0 and deep.json["models"][0]["state"] == "complete"


def test_a_waiting_process_proceeds_when_the_holder_releases(mirror: Path, manifest_path: Path, models_root: Path) -> None:
    write_model(mirror, manifest_path, {"a.bin": b"payload"})
    lock = StoreLayout(models_root).variant_lock("test", "toy@1.0.0", "base")
    with hold_lock(lock, timeout=5, what="test"):
        waiter = _start_wan("models", "ensure", "--only", "toy", "--json", env={"WAN_LOG_LEVEL": "INFO"})
        time.sleep(1.5)
        assert waiter.poll() is None  # still waiting for us
        assert not (models_root / "test" / "toy@1.0.0" / "base").exists()
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert json.loads(out)["results"][0]["state"] == "complete"


def test_lock_timeout_names_the_holder(mirror: Path, manifest_path: Path, models_root: Path) -> None:
    write_model(mirror, manifest_path, {"a.bin": b"payload"})
    lock = StoreLayout(models_root).variant_lock("test", "toy@1.0.0", "base")
    with hold_lock(lock, timeout=5, what="test"):
        result = run_wan("models", "ensure", "--only", "toy", "--json", env={"WAN_LOCK_TIMEOUT": "1"})
    assert result.returncode == 21
    error = result.json["error"]
    assert error["code"] == "LOCK_TIMEOUT"
    assert f"pid {os.getpid()}" in error["message"] and "toy@1.0.0" in error["message"]
    assert any("WAN_LOCK_TIMEOUT" in s for s in error["suggestions"])


def test_leftovers_of_dead_processes_are_swept(models_root: Path) -> None:
    import socket

    wanstudio.ensure("ti2v-5B", "dev")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname().replace("@", "_").replace("-", "_")
    tmp = StoreLayout(models_root).tmp
    stale = tmp / f"stage-{dead.pid}-0123456789ab@{host}"
    (stale / "vae").mkdir(parents=True)
    alive = tmp / f"stage-{os.getpid()}-0123456789ab@{host}"
    alive.mkdir()
    wanstudio.Orchestrator().ensure("t2v-A14B", "dev")
    assert not stale.exists()
    assert alive.exists()  # a live process's staging folder is never touched
