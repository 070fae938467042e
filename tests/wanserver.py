"""A real `wan serve` in a subprocess on a loopback port, for end-to-end, WebSocket, browser and load tests.

Use the `wan_server` fixture: `server = wan_server(WAN_API_KEYS="k")` starts one with the test's
environment (its own MODELS_ROOT and WAN_DATA_DIR) plus the given variables, waits until `/healthz`
answers, and stops it (SIGTERM, then SIGKILL) when the test ends. `server.restart()` stops and starts it
again on the same port and data, `server.kill()` SIGKILLs it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import pytest

START_TIMEOUT_SECONDS = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WanServer:
    """One `wan serve` process; its log (JSON lines) goes to `log_path`."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env, self.log_path = env, log_path
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "WanServer":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "wanstudio", "serve", "--port", str(self.port)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"wan serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"wan serve did not answer within {START_TIMEOUT_SECONDS} s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (a clean stop), then SIGKILL after `timeout`; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def restart(self) -> "WanServer":
        self.stop()
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                data: bytes | None = None, timeout: float = 30.0) -> tuple[int, Any, dict[str, str]]:
        """One HTTP request: (status, decoded JSON body or raw bytes, headers)."""
        if body is not None:
            data = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                status, raw, response_headers = response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as error:
            status, raw, response_headers = error.code, error.read(), dict(error.headers)
        content_type = response_headers.get("content-type", "")
        return status, json.loads(raw) if "json" in content_type else raw, response_headers

    def openai(self, api_key: str = "unused", **options: Any) -> Any:
        """The official OpenAI client pointed at this server."""
        import openai

        return openai.OpenAI(api_key=api_key, base_url=self.base_url + "/v1", max_retries=0, **options)

    def wait_for(self, video_id: str, statuses: tuple[str, ...] = ("completed", "failed", "cancelled"),
                 timeout: float = 120.0, headers: dict[str, str] | None = None) -> dict[str, Any]:
        """Poll a video until its status is one of `statuses`; returns the video object."""
        deadline = time.monotonic() + timeout
        while True:
            status, video, _ = self.request("GET", f"/v1/videos/{video_id}", headers=headers)
            assert status == 200, video
            if video["status"] in statuses or time.monotonic() > deadline:
                return video
            time.sleep(0.1)


@contextmanager
def own_server(folder: Path, **env: str) -> Iterator[WanServer]:
    """A server with an environment of its own under `folder` (conftest's `isolated_env`), for a module to
    share; stopped when the block ends."""
    from conftest import isolated_env

    server = WanServer(isolated_env(folder, **env), folder / "serve.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def wan_server(tmp_path: Path, models_root: Path) -> Iterator[Callable[..., WanServer]]:
    """Start `wan serve` subprocesses for this test (see the module doc); all are stopped at its end."""
    servers: list[WanServer] = []

    def start(**env: str) -> WanServer:
        server = WanServer({**os.environ, **env}, tmp_path / f"serve-{len(servers)}.log")
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
