"""A bounded load test of `wan serve` on loopback: 20 clients submitting and polling at once.

A real `wan serve` runs as a subprocess on a free loopback port, with a fresh MODELS_ROOT and data folder
and the Hub endpoint at a closed loopback port (nothing leaves the machine). After one untimed warm-up job
(which loads the bundled tiny `dev` variant of ti2v-5B), 20 client threads, each with its own official
`openai.OpenAI` client, submit 3 tiny jobs each (1 with --quick) and poll every one of their jobs with
`videos.retrieve` until it ends, listing the videos now and then; every call is timed. Then it checks
that nothing was lost: every job submitted ends `completed`, every video downloads as an MP4 that
decodes, `GET /v1/videos` lists them all, and no call got a 5xx or failed.

Side by side, in the same run: the same 20-thread status-poll pattern against a minimal peer (a bare
FastAPI app under uvicorn, written here, whose `GET /v1/videos/{id}` returns a constant video object,
the same bytes as ours), and against our server while it is idle; so the report can say what our status
call costs over the framework floor, and what generating jobs cost it.

    .venv/bin/python benchmarks/bench_server_load.py [--quick] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from _report import machine_basics, markers, write_section

SECTION = "server-load"
BEGIN, END = markers(SECTION)

CLIENTS = 20
MODEL, VARIANT, STEPS = "ti2v-5B", "dev", 2
POLL_SECONDS = 0.15  # each client polls each of its jobs about this often (plus the calls' own time)
LIST_EVERY = 10  # each client lists the videos once every this many polling rounds
LIST_LIMIT = 20
REQUEST_TIMEOUT_SECONDS = 30.0
TOTAL_SECONDS = 600.0  # the whole run, servers included: past this a watchdog stops everything
STATUS_P95_TARGET_MS = 100.0
DONE = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class Plan:
    jobs_per_client: int  # jobs each client submits under load
    idle_rounds: int  # polling rounds per client per idle round (ours idle, and the peer), two rounds each
    sequential: int  # status calls per round from one client, back to back (ours idle, and the peer)
    solo_jobs: int  # jobs run one at a time with nothing else going on, per round: a job's time alone
    load_seconds: float  # the load phase stops polling after this (jobs still running are then waited for)
    max_requests: int  # the load phase stops polling after this many calls in all


FULL = Plan(jobs_per_client=3, idle_rounds=20, sequential=300, solo_jobs=4, load_seconds=180.0,
            max_requests=150_000)
QUICK = Plan(jobs_per_client=1, idle_rounds=10, sequential=50, solo_jobs=1, load_seconds=60.0,
             max_requests=50_000)


# -- recording calls -----------------------------------------------------------------------------------------


@dataclass
class Calls:
    """Latencies (ms) of the calls of one kind that got a 2xx, and what went wrong with the others."""

    samples_ms: list[float] = field(default_factory=list)
    status_4xx: int = 0
    status_5xx: int = 0
    exceptions: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return self.status_4xx + self.status_5xx + sum(self.exceptions.values())

    @property
    def count(self) -> int:
        return len(self.samples_ms) + self.failed

    def quantile(self, q: float) -> float:
        ordered = sorted(self.samples_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]  # nearest rank


class Recorder:
    """Every timed call of a phase, by kind; the request budget of the phase."""

    def __init__(self, max_requests: int | None = None) -> None:
        self.kinds: dict[str, Calls] = {}
        self.max_requests = max_requests
        self.requests = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def call(self, kind: str, fn: Callable[[], Any]) -> Any:
        """Run `fn` (one HTTP request through the openai client), timed; None when it failed."""
        import openai

        with self._lock:
            self.requests += 1
            if self.max_requests is not None and self.requests >= self.max_requests:
                self.stop.set()
            calls = self.kinds.setdefault(kind, Calls())
        start = time.perf_counter()
        try:
            result = fn()
        except openai.APIStatusError as error:
            with self._lock:
                if error.status_code >= 500:
                    calls.status_5xx += 1
                else:
                    calls.status_4xx += 1
            print(f"  {kind}: HTTP {error.status_code}: {str(error)[:300]}", file=sys.stderr)
            return None
        except Exception as error:  # a connection refused or reset, a timeout: counted, never fatal
            with self._lock:
                name = type(error).__name__
                calls.exceptions[name] = calls.exceptions.get(name, 0) + 1
            print(f"  {kind}: {type(error).__name__}: {str(error)[:300]}", file=sys.stderr)
            return None
        elapsed_ms = (time.perf_counter() - start) * 1000
        with self._lock:
            calls.samples_ms.append(elapsed_ms)
        return result


def client(base_url: str) -> Any:
    import openai

    return openai.OpenAI(api_key="unused", base_url=base_url + "/v1", max_retries=0,
                         timeout=REQUEST_TIMEOUT_SECONDS)


def run_threads(target: Callable[[int, threading.Barrier], None]) -> tuple[float, float]:
    """Run `target(index, barrier)` in CLIENTS threads that start together: when they started, how long."""
    barrier = threading.Barrier(CLIENTS + 1)
    threads = [threading.Thread(target=target, args=(index, barrier), name=f"client-{index}", daemon=True)
               for index in range(CLIENTS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return start, time.perf_counter() - start


# -- the servers ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A server subprocess on a loopback port, its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path,
                 cwd: Path | None = None) -> None:
        self.name, self.argv, self.env, self.log_path, self.cwd = name, argv, env, log_path, cwd
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready_path: str, port: int) -> "Server":
        self.base_url = f"http://127.0.0.1:{port}"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(self.base_url + ready_path, timeout=5) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"{self.name} did not answer within 90 s:\n{self.log()[-3000:]}")

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.base_url + path, timeout=REQUEST_TIMEOUT_SECONDS) as response:
            return response.read()


PEER_APP = '''
"""The peer: FastAPI's floor for a status call. One route, a constant body, the same shape as ours."""
import json
import os

from fastapi import FastAPI

app = FastAPI()
VIDEO = json.loads(open(os.environ["PEER_VIDEO_JSON"], encoding="utf-8").read())


@app.get("/v1/videos/{video_id}")
def retrieve_video(video_id: str) -> dict:  # a sync route, run in the thread pool, as ours is
    return VIDEO
'''


def start_wan(work: Path, queue_max: int) -> Server:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "WAN_", "AWS_")) and k not in ("MODELS_ROOT", "TRANSFORMERS_OFFLINE")}
    env.update(MODELS_ROOT=str(work / "models"), WAN_DATA_DIR=str(work / "data"),
               HF_HOME=str(work / "hf-home"),
               HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_DISABLE_TELEMETRY="1", WAN_DEVICE="cpu",
               WAN_QUEUE_MAX=str(queue_max), WAN_LOG_LEVEL="WARNING",
               PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring")
    port = free_port()
    argv = [sys.executable, "-m", "wanstudio", "serve", "--port", str(port)]
    return Server("wan serve", argv, env, work / "wan-serve.log").start("/healthz", port)


def start_peer(work: Path, video: dict[str, Any]) -> Server:
    (work / "peer").mkdir()
    (work / "peer" / "peer_app.py").write_text(textwrap.dedent(PEER_APP), encoding="utf-8")
    (work / "peer" / "video.json").write_text(json.dumps(video), encoding="utf-8")
    env = {**os.environ, "PEER_VIDEO_JSON": str(work / "peer" / "video.json")}
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "peer_app:app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning", "--no-access-log"]
    server = Server("peer", argv, env, work / "peer.log", cwd=work / "peer")
    return server.start(f"/v1/videos/{video['id']}", port)


# -- phases --------------------------------------------------------------------------------------------------


def submit_and_wait(api: Any, timeout: float = 120.0) -> Any:
    video = api.videos.create(model=MODEL, prompt="a red fox trotting through fresh snow",
                              extra_body={"variant": VARIANT, "num_inference_steps": STEPS})
    deadline = time.monotonic() + timeout
    while video.status not in DONE:
        if time.monotonic() > deadline:
            raise SystemExit(f"{video.id} did not finish within {timeout:.0f} s")
        time.sleep(0.1)
        video = api.videos.retrieve(video.id)
    if video.status != "completed":
        raise SystemExit(f"{video.id} ended {video.status}: {video.error}")
    return video


def idle_polls(base_url: str, video_ids: list[str], rounds: int) -> Recorder:
    """CLIENTS threads poll every one of `video_ids` (finished jobs), `rounds` rounds POLL_SECONDS apart, the
    load phase's pattern with nothing generating."""
    recorder = Recorder()

    def poll(_index: int, barrier: threading.Barrier) -> None:
        api = client(base_url)
        barrier.wait()
        for _ in range(rounds):
            for video_id in video_ids:
                recorder.call("status", lambda: api.videos.retrieve(video_id))
            time.sleep(POLL_SECONDS)
        api.close()

    run_threads(poll)
    return recorder


def sequential_polls(base_url: str, video_id: str, calls: int) -> Recorder:
    """One client, `video_id` retrieved `calls` times back to back: a status call with no concurrency."""
    recorder = Recorder()
    api = client(base_url)
    api.videos.retrieve(video_id)  # opens the connection
    for _ in range(calls):
        recorder.call("status", lambda: api.videos.retrieve(video_id))
    api.close()
    return recorder


@dataclass(frozen=True)
class CpuUse:
    """Core-seconds spent over a span, by whom (from /proc), and how many the span offered."""

    clients: float  # this process: the client threads
    server: float  # `wan serve`
    peer: float
    others: float  # every other process on the machine
    available: float  # wall seconds x cores

    @property
    def others_share(self) -> float:
        return self.others / self.available if self.available else 0.0


class CpuMeter:
    """CPU time the whole machine spent (from /proc/stat) against what this run's processes spent."""

    TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(self, pids: dict[str, int] | None = None) -> None:
        self.start_busy, self.start_self, self.start_wall = self.machine_busy(), self.own(), time.monotonic()
        self.start_pids = {name: self.process(pid) for name, pid in (pids or {}).items()}

    @classmethod
    def machine_busy(cls) -> float:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        except (OSError, ValueError, IndexError):
            return float("nan")
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        return (user + nice + system + irq + softirq + steal) / cls.TICK

    @classmethod
    def process(cls, pid: int) -> float:
        try:
            parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(parts[11]) + int(parts[12])) / cls.TICK  # utime, stime

    @staticmethod
    def own() -> float:
        times = os.times()
        return times.user + times.system

    def read(self, pids: dict[str, int]) -> CpuUse:
        """Since this meter started; `pids` names the servers ("server", "peer") still running."""
        busy = self.machine_busy() - self.start_busy
        spent = {name: self.process(pid) - self.start_pids.get(name, 0.0) for name, pid in pids.items()}
        clients = self.own() - self.start_self
        others = max(0.0, busy - clients - sum(spent.values()))
        available = (time.monotonic() - self.start_wall) * (os.cpu_count() or 1)
        return CpuUse(clients, spent.get("server", 0.0), spent.get("peer", 0.0), others, available)


@dataclass
class Load:
    recorder: Recorder
    submitted: list[str]  # every id a create returned
    finished: dict[str, tuple[str, float]]  # id -> (status seen, seconds from the clients' start)
    turnaround: list[float]  # seconds from a job's create call to the poll that saw it end
    seconds: float  # from the clients' start to the last job they saw ending (or the end of polling)
    stopped_by: str | None  # "time" or "requests" when a bound stopped the polling
    start: float  # perf_counter when the clients started
    cpu: CpuUse  # during the polling


def load_phase(base_url: str, plan: Plan, pids: dict[str, int]) -> Load:
    """CLIENTS threads: submit `jobs_per_client` jobs each, then poll each until it ends; all calls timed."""
    recorder = Recorder(plan.max_requests)
    submitted: list[str] = []
    finished: dict[str, tuple[str, float]] = {}
    turnaround: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + plan.load_seconds

    def work(index: int, barrier: threading.Barrier) -> None:
        api = client(base_url)
        barrier.wait()
        pending: dict[str, float] = {}
        for n in range(plan.jobs_per_client):
            sent = time.perf_counter()
            video = recorder.call("create", lambda: api.videos.create(
                model=MODEL, prompt=f"client {index}, job {n}: a red fox trotting through fresh snow",
                extra_body={"variant": VARIANT, "num_inference_steps": STEPS}))
            if video is not None:
                pending[video.id] = sent
                with lock:
                    submitted.append(video.id)
        rounds = 0
        while pending and not recorder.stop.is_set():
            if time.perf_counter() > deadline:
                recorder.stop.set()
                break
            for video_id in list(pending):
                video = recorder.call("status", lambda: api.videos.retrieve(video_id))
                if video is not None and video.status in DONE:
                    now = time.perf_counter()
                    with lock:
                        finished[video_id] = (video.status, now)
                        turnaround.append(now - pending.pop(video_id))
            rounds += 1
            if rounds % LIST_EVERY == 0:
                recorder.call("list", lambda: api.videos.list(limit=LIST_LIMIT))
            time.sleep(POLL_SECONDS)
        api.close()

    meter = CpuMeter(pids)
    start, wall = run_threads(work)
    cpu = meter.read(pids)
    finished = {video_id: (status, at - start) for video_id, (status, at) in finished.items()}
    stopped_by = None
    if recorder.stop.is_set():
        stopped_by = "requests" if recorder.requests >= plan.max_requests else "time"
    seconds = max((at for _, at in finished.values()), default=wall)
    return Load(recorder, submitted, finished, turnaround, seconds, stopped_by, start, cpu)


@dataclass
class Checks:
    ended: dict[str, int]  # final status -> jobs (of those submitted under load)
    missing: list[str]  # submitted ids the server no longer knows (404), or that never ended in time
    mp4_ok: int
    mp4_bad: list[str]
    frames: str  # what one decoded video held
    listed: int  # of the submitted ids, how many `GET /v1/videos` listed
    listed_total: int
    server_errors: dict[str, float]  # wan_errors_total by code, from /metrics
    log_errors: int  # ERROR/CRITICAL records in the server log
    elapsed_load: list[float]  # the server's own metrics.elapsed_seconds of the load jobs
    last_done: float  # seconds from the clients' start to the last job seen ending (polling or checks)


def verify(wan: Server, load: Load, deadline: float) -> Checks:
    """Wait (slowly, one client) for jobs the bounded polling left running; then check everything."""
    import av
    import openai

    api = client(wan.base_url)
    ended: dict[str, int] = {}
    missing: list[str] = []
    mp4_ok, mp4_bad, frames, elapsed = 0, [], "", []
    last_done = load.seconds
    videos = []
    for video_id in load.submitted:  # first wait for every job (in queue order: they end in that order)
        try:
            video = api.videos.retrieve(video_id)
            while video.status not in DONE and time.monotonic() < deadline:
                time.sleep(1.0)
                video = api.videos.retrieve(video_id)
        except openai.NotFoundError:
            missing.append(video_id)
            continue
        if video_id not in load.finished and video.status in DONE:
            last_done = max(last_done, time.perf_counter() - load.start)
        videos.append(video)
    for video in videos:
        video_id = video.id
        if video.status not in DONE:
            missing.append(video_id)
        ended[video.status] = ended.get(video.status, 0) + 1
        if video.status != "completed":
            continue
        metrics = (video.model_extra or {}).get("metrics") or {}
        if metrics.get("elapsed_seconds") is not None:
            elapsed.append(float(metrics["elapsed_seconds"]))
        data = api.videos.download_content(video_id).content
        try:
            if data[4:8] != b"ftyp":
                raise ValueError(f"no ftyp box at the start ({data[:12]!r})")
            with av.open(io.BytesIO(data)) as container:
                stream = container.streams.video[0]
                decoded = list(container.decode(stream))
            if not decoded or f"{decoded[0].width}x{decoded[0].height}" != video.size:
                got = (f"{len(decoded)} frames of {decoded[0].width}x{decoded[0].height}" if decoded
                       else "no frame")
                raise ValueError(f"{got}, not {video.size}")
            mp4_ok += 1
            frames = frames or (f"{len(decoded)} frames of {video.size}, {stream.codec_context.name}, "
                                f"{len(data):,} bytes")
        except Exception as error:
            mp4_bad.append(f"{video_id}: {error}")
    listed_ids = {video.id for video in api.videos.list(limit=100)}  # every page (the client follows `after`)
    api.close()
    server_errors: dict[str, float] = {}
    for line in wan.get("/metrics").decode().splitlines():
        if line.startswith("wan_errors_total{"):
            labels, _, value = line.rpartition(" ")
            code = labels.split('code="', 1)[1].split('"', 1)[0]
            server_errors[code] = float(value)
    log_errors = 0
    for line in wan.log().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if str(record.get("level", "")).upper() in ("ERROR", "CRITICAL"):
            log_errors += 1
    return Checks(ended, missing, mp4_ok, mp4_bad, frames, len(listed_ids & set(load.submitted)),
                  len(listed_ids), server_errors, log_errors, elapsed, last_done)


# -- report --------------------------------------------------------------------------------------------------


@dataclass
class Results:
    plan: Plan
    flags: str  # the command-line options that shaped the run
    machine: str
    load: Load
    checks: Checks
    ours_idle: Calls  # 20 threads polling our idle server
    peer_idle: Calls  # 20 threads polling the peer
    ours_sequential: Calls  # one client, back to back
    peer_sequential: Calls
    solo_elapsed: list[float]  # the server's metrics.elapsed_seconds of jobs run alone
    cpu: CpuUse  # the whole run
    exit_code: int | None


def ms(value: float) -> str:
    return "-" if value != value else f"{value:.1f}"


def latency_row(label: str, calls: Calls) -> str:
    return (f"| {label} | {calls.count:,} | {ms(calls.quantile(0.5))} | {ms(calls.quantile(0.95))} "
            f"| {ms(calls.quantile(0.99))} | {ms(max(calls.samples_ms, default=float('nan')))} "
            f"| {calls.failed} |")


def merge(*recorders: Recorder, kind: str = "status") -> Calls:
    merged = Calls()
    for recorder in recorders:
        calls = recorder.kinds.get(kind, Calls())
        merged.samples_ms += calls.samples_ms
        merged.status_4xx += calls.status_4xx
        merged.status_5xx += calls.status_5xx
        for name, count in calls.exceptions.items():
            merged.exceptions[name] = merged.exceptions.get(name, 0) + count
    return merged


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if a == a and b == b and b > 0 else "-"


def render(r: Results) -> str:
    plan, load, checks = r.plan, r.load, r.checks
    kinds = load.recorder.kinds
    status, create, listing = (kinds.get(k, Calls()) for k in ("status", "create", "list"))
    every = [*kinds.values(), r.ours_idle, r.peer_idle, r.ours_sequential, r.peer_sequential]
    calls = sum(c.count for c in every)
    fivexx = sum(c.status_5xx for c in every)
    fourxx = sum(c.status_4xx for c in every)
    exceptions = sum(sum(c.exceptions.values()) for c in every)
    expected = CLIENTS * plan.jobs_per_client
    completed = checks.ended.get("completed", 0)
    no_lost = (len(load.submitted) == expected and completed == expected and not checks.missing
               and not checks.mp4_bad and checks.listed == expected)
    p95 = status.quantile(0.95)
    met = lambda ok: "**met**" if ok else "**not met**"  # noqa: E731
    jobs_per_s = completed / checks.last_done if checks.last_done else float("nan")
    solo = statistics.median(r.solo_elapsed) if r.solo_elapsed else float("nan")
    under = statistics.median(checks.elapsed_load) if checks.elapsed_load else float("nan")
    busy_fraction = min(1.0, sum(checks.elapsed_load) / checks.last_done) if checks.last_done else 0.0
    turn = sorted(load.turnaround)
    shared = r.cpu.others_share > 0.1 or load.cpu.others_share > 0.1
    bound = (f" This time the polling was stopped by its {load.stopped_by} bound; the jobs still running "
             "were then waited for by one client polling once a second."
             if load.stopped_by else "")
    method = (
        "**Method.** One `wan serve` process (`python -m wanstudio serve --port N`, loopback only) with a "
        "fresh temporary `MODELS_ROOT` and `WAN_DATA_DIR`, `HF_ENDPOINT=http://127.0.0.1:9` (a closed port: "
        "nothing leaves the machine), `WAN_DEVICE=cpu`, `WAN_QUEUE_MAX=1000` and `WAN_LOG_LEVEL=WARNING` (no "
        f"access-log line per request). Untimed warm-up: one job of the bundled tiny `{VARIANT}` variant of "
        f"{MODEL} (it loads the model). {plan.solo_jobs} job(s) run one at a time with nothing else running, "
        "before the idle rounds and again after them (below), for the generation time of a job alone. "
        f"**Load:** {CLIENTS} threads, each with its own official `openai.OpenAI` client (`max_retries=0`, "
        f"keep-alive connections), start together; each submits {plan.jobs_per_client} job(s) "
        f"(`videos.create(model=\"{MODEL}\", extra_body={{\"variant\": \"{VARIANT}\", "
        f"\"num_inference_steps\": {STEPS}}})`, {expected} jobs in all), then polls each of its unfinished "
        f"jobs with `videos.retrieve` (`GET /v1/videos/{{id}}`), sleeping {POLL_SECONDS * 1000:.0f} ms "
        f"between rounds, and every {LIST_EVERY}th round calls `videos.list(limit={LIST_LIMIT})`, until all "
        "its jobs have ended; the single CPU worker runs the jobs one after another meanwhile. Bounds: "
        f"polling stops after {plan.load_seconds:.0f} s or {plan.max_requests:,} calls, the whole run after "
        f"{TOTAL_SECONDS:.0f} s (a watchdog kills it), every call after {REQUEST_TIMEOUT_SECONDS:.0f} s."
        f"{bound} "
        "Every call is timed in its thread with `time.perf_counter` around the client method, so the openai "
        "client's own work (building the request, parsing the response into its model) and the GIL its "
        f"{CLIENTS} threads share are in every number, ours and the peer's alike; a call that raises is "
        "counted by its HTTP status or exception and left out of the latencies. **Checks** after the load: "
        "every submitted id is retrieved until it ends and must be `completed`; every video is downloaded "
        "(`videos.download_content`), must start with an MP4 `ftyp` box and decode with PyAV to frames of "
        "the job's size; `videos.list(limit=100)`, following every page, must list every id; the server's "
        "`wan_errors_total` (from `/metrics`) and the ERROR records of its log are read. **Peer, same run:** "
        "a bare FastAPI app under uvicorn (a subprocess, `--no-access-log`) with one sync route "
        "`GET /v1/videos/{id}` that returns a constant dict, the exact video object of our warm-up job, so "
        "both send the same bytes and the client parses the same model: the framework's floor for a status "
        f"call. {CLIENTS} threads poll it as they do under load ({plan.jobs_per_client} id(s) per round, "
        f"{POLL_SECONDS * 1000:.0f} ms between rounds, {plan.idle_rounds} rounds), and poll our idle server "
        "the same way (ids of finished jobs; nothing queued or running), so the offered rate is that of the "
        "start of the load phase, without the generation; then one client calls each "
        f"{plan.sequential} times back to back (no concurrency: the cost of one request). Two rounds of "
        "each, one before the load and one after, the order reversed in the second. Quantiles are "
        "nearest-rank."
    )
    goals = [
        "| goal | target | measured | met |",
        "|---|---|---|---|",
        "| no lost jobs: every submitted job ends `completed`, with a valid MP4, and is listed "
        f"| {expected} of {expected} | {len(load.submitted)} submitted, {completed} completed, "
        f"{checks.mp4_ok} valid MP4s, "
        f"{checks.listed} listed, {len(checks.missing)} missing | {met(no_lost)} |",
        f"| no 5xx (and no failed call) | 0 | {fivexx} 5xx, {fourxx} 4xx, {exceptions} exceptions, of "
        f"{calls:,} calls | {met(fivexx == 0 and fourxx == 0 and exceptions == 0)} |",
        f"| p95 of `GET /v1/videos/{{id}}` under load ({CLIENTS} clients polling while jobs generate) | "
        f"< {STATUS_P95_TARGET_MS:.0f} ms | {ms(p95)} ms (p50 {ms(status.quantile(0.5))}, p99 "
        f"{ms(status.quantile(0.99))}; {ratio(p95, r.peer_idle.quantile(0.95))} the peer's p95) "
        f"| {met(p95 < STATUS_P95_TARGET_MS)} |",
    ]
    why = (
        f"Why {STATUS_P95_TARGET_MS:.0f} ms: a status call is what a UI or a script waits on to show "
        "progress. About 100 ms is where a response stops feeling immediate, and it is a small part of the "
        "poll intervals clients of the OpenAI Videos API use (seconds), so a poll under it never holds a "
        "client back, even on a 2-core machine whose cores also run the generation and the clients."
    )
    latency = [
        "| call | calls | p50 ms | p95 ms | p99 ms | max ms | failed |",
        "|---|--:|--:|--:|--:|--:|--:|",
        latency_row(f"`videos.create` (`POST /v1/videos`), under load ({CLIENTS} at once)", create),
        latency_row("`videos.retrieve` (`GET /v1/videos/{id}`), under load", status),
        latency_row(f"`videos.list(limit={LIST_LIMIT})` (`GET /v1/videos`), under load", listing),
        latency_row(f"`videos.retrieve`, wanstudio idle, {CLIENTS} clients", r.ours_idle),
        latency_row(f"`videos.retrieve`, peer (bare FastAPI, constant body), {CLIENTS} clients", r.peer_idle),
        latency_row("`videos.retrieve`, wanstudio idle, 1 client back to back", r.ours_sequential),
        latency_row("`videos.retrieve`, peer, 1 client back to back", r.peer_sequential),
    ]
    compare = [
        "| status call | p50 | p95 | p99 |",
        "|---|--:|--:|--:|",
        *(f"| {label} | {ratio(a.quantile(0.5), b.quantile(0.5))} "
          f"| {ratio(a.quantile(0.95), b.quantile(0.95))} | {ratio(a.quantile(0.99), b.quantile(0.99))} |"
          for label, a, b in (
              ("wanstudio idle / peer, 1 client back to back", r.ours_sequential, r.peer_sequential),
              (f"wanstudio idle / peer, {CLIENTS} clients", r.ours_idle, r.peer_idle),
              (f"wanstudio under load / peer, {CLIENTS} clients", status, r.peer_idle),
              (f"wanstudio under load / wanstudio idle, {CLIENTS} clients", status, r.ours_idle))),
    ]
    after_polling = (f"; {len(load.finished)} of them ended while the clients polled, the rest were waited "
                     "for after the polling bound" if len(load.finished) < completed else "")
    throughput = [
        f"{completed} jobs ended {checks.last_done:.1f} s after the clients started: "
        f"**{jobs_per_s:.2f} jobs/s** with {CLIENTS} clients polling{after_polling} (one CPU worker, jobs "
        "one at a time; generation "
        f"filled {busy_fraction:.0%} of that time). A job took {under:.3f} s of generation on the server "
        f"under load (median of its `metrics.elapsed_seconds`) against {solo:.3f} s alone "
        f"({under / solo:.2f}x). From a job's create to the poll that saw it end: p50 "
        f"{turn[len(turn) // 2] if turn else float('nan'):.1f} s, max "
        f"{max(turn, default=float('nan')):.1f} s "
        f"(the last job waits for all the others). Total: {len(load.submitted)} jobs under load, plus "
        f"{1 + 2 * plan.solo_jobs} warm-up and solo jobs; {calls:,} timed calls, {status.count:,} of them "
        "status calls under load.",
        "",
        f"One video: {checks.frames or 'none decoded'}. `videos.list` listed {checks.listed} of the "
        f"{len(load.submitted)} ids ({checks.listed_total} videos in all at that point, with the warm-up and "
        f"first solo jobs). Server side: `wan_errors_total` "
        f"{json.dumps(checks.server_errors) if checks.server_errors else 'empty'}, "
        f"{checks.log_errors} ERROR records in its log; `wan serve` exited with {r.exit_code} on SIGTERM."
        + ("" if not checks.mp4_bad else " Bad videos: " + "; ".join(checks.mp4_bad[:5]) + ".")
        + ("" if not checks.missing else " Missing: " + ", ".join(checks.missing[:5]) + "."),
        "",
        f"CPU, in core-seconds (from `/proc`): during the polling ({load.cpu.available:.0f} available), the "
        f"{CLIENTS} clients used {load.cpu.clients:.0f}, `wan serve` {load.cpu.server:.0f} and other "
        f"processes on the machine {load.cpu.others:.0f} ({load.cpu.others_share:.0%}); over the whole run "
        f"({r.cpu.available:.0f} available), {r.cpu.clients:.0f}, {r.cpu.server:.0f}, the peer "
        f"{r.cpu.peer:.0f}, and other processes {r.cpu.others:.0f} ({r.cpu.others_share:.0%})"
        + (": the machine was shared with other work during this run, so the absolute numbers, and "
           "the generation time under load most of all (torch's threads lose their cores), are worse than on "
           "a quiet machine; the latency ratios, from interleaved rounds of one run, hold better." if shared
           else "."),
    ]
    return "\n".join([
        BEGIN,
        f"## Server load: {CLIENTS} clients submitting and polling `wan serve`",
        "",
        f"Generated by `benchmarks/bench_server_load.py{r.flags}` on "
        f"{time.strftime('%Y-%m-%d')}. Absolute numbers move between runs and machines; compare the ratios, "
        "which come from one run.",
        "",
        f"**Machine:** {r.machine}.",
        "",
        method,
        "",
        "**Goals**",
        "",
        *goals,
        "",
        why,
        "",
        "### Latency (ms, as the openai client sees it)",
        "",
        *latency,
        "",
        "### Against the peer and against idle (ratios of the quantiles; above 1, slower)",
        "",
        *compare,
        "",
        "### Throughput, jobs and checks",
        "",
        *throughput,
        END,
    ]) + "\n"


# -- main ----------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"one job per client ({CLIENTS} jobs), fewer idle polls: under a minute")
    parser.add_argument("--jobs", type=int, metavar="K",
                        help="jobs each client submits under load (default: 3, or 1 with --quick)")
    parser.add_argument("--write", type=Path, metavar="MD", help=f"replace the {SECTION} section in MD")
    parser.add_argument("--dir", type=Path,
                        help="where the temporary store and data go (default: system temp)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.jobs is not None:
        if args.jobs < 1:
            raise SystemExit("--jobs must be at least 1")
        plan = replace(plan, jobs_per_client=args.jobs)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the openai client's notice on videos
    deadline = time.monotonic() + TOTAL_SECONDS - 60  # leaves time for the checks, the stops and the report
    servers: list[Server] = []
    folders: list[Path] = []

    def watchdog() -> None:
        print(f"bench_server_load: over {TOTAL_SECONDS:.0f} s, stopping", file=sys.stderr, flush=True)
        for server in servers:
            if server.process is not None and server.process.poll() is None:
                server.process.kill()
                server.process.wait()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        os._exit(3)

    timer = threading.Timer(TOTAL_SECONDS, watchdog)
    timer.daemon = True
    timer.start()
    meter = CpuMeter()

    def pids() -> dict[str, int]:
        return {("server" if server.name == "wan serve" else server.name): server.process.pid
                for server in servers if server.process is not None}

    with tempfile.TemporaryDirectory(prefix="wan-bench-serve-", dir=args.dir) as tmp:
        work = Path(tmp)
        folders.append(work)
        try:
            print("starting wan serve; warm-up and solo jobs", file=sys.stderr)
            wan = start_wan(work, queue_max=1000)
            servers.append(wan)
            api = client(wan.base_url)
            warm = submit_and_wait(api)
            solo_elapsed: list[float] = []

            def solo_jobs() -> list[str]:
                videos = [submit_and_wait(api) for _ in range(plan.solo_jobs)]
                solo_elapsed.extend(float((v.model_extra or {})["metrics"]["elapsed_seconds"])
                                    for v in videos)
                return [v.id for v in videos]

            finished_ids = [warm.id, *solo_jobs()]
            idle_ids = (finished_ids * plan.jobs_per_client)[:plan.jobs_per_client]  # as many as under load
            peer = start_peer(work, json.loads(wan.get(f"/v1/videos/{warm.id}")))
            servers.append(peer)
            ours_idle: list[Recorder] = []
            peer_idle: list[Recorder] = []
            ours_seq: list[Recorder] = []
            peer_seq: list[Recorder] = []

            def idle_round(order: tuple[tuple[Server, list[Recorder], list[Recorder]], ...]) -> None:
                for server, concurrent, _ in order:
                    concurrent.append(idle_polls(server.base_url, idle_ids, plan.idle_rounds))
                for server, _, sequential in order:
                    sequential.append(sequential_polls(server.base_url, warm.id, plan.sequential))

            print("idle round: peer, wanstudio", file=sys.stderr)
            idle_round(((peer, peer_idle, peer_seq), (wan, ours_idle, ours_seq)))
            print(f"load: {CLIENTS} clients x {plan.jobs_per_client} jobs", file=sys.stderr)
            load = load_phase(wan.base_url, plan, pids())
            print(f"load done in {load.seconds:.1f} s; checking", file=sys.stderr)
            checks = verify(wan, load, deadline)
            print("idle round: wanstudio, peer; solo jobs", file=sys.stderr)
            idle_round(((wan, ours_idle, ours_seq), (peer, peer_idle, peer_seq)))
            solo_jobs()
            api.close()
            cpu = meter.read(pids())
        finally:
            codes = [server.stop() for server in reversed(servers)]
        machine = (f"{machine_basics()}; openai {_version('openai')}, FastAPI {_version('fastapi')}, uvicorn "
                   f"{_version('uvicorn')}; server, peer and the {CLIENTS} client threads all on this "
                   "machine")
        flags = (" --quick" if args.quick else "") + (f" --jobs {args.jobs}" if args.jobs is not None else "")
        results = Results(plan, flags, machine, load, checks, merge(*ours_idle), merge(*peer_idle),
                          merge(*ours_seq), merge(*peer_seq), solo_elapsed, cpu, codes[-1])
        section = render(results)
    timer.cancel()
    print(section, end="")
    if args.write:
        write_section(args.write, SECTION, section)


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
