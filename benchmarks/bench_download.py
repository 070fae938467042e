"""Downloads: wanstudio's transfer engine against curl, aria2c, boto3 and huggingface_hub, in one run.

Fetching model files is most of what a first `wan models ensure` costs, and the engine (parallel HTTP
ranges, a resume journal, sha256 in the stream on a thread of its own, O_DIRECT writes) exists to make it
fast. This benchmark measures it on loopback against the tools people would otherwise use, on the same
files, interleaved so that drift hits every tool alike:

* two file sets, written once (random bytes) next to the outputs: one large file, and 24 shards;
* two servers started here: the fake Hugging Face Hub of `tests/fakehub.py` (LFS files redirect to its
  CDN origin, served with sendfile) and moto's S3 server, holding the same files;
* peers, timed without verification: `curl` (one connection), `aria2c -x8 -s8 -j8` (where installed),
  `huggingface_hub.snapshot_download` (fake Hub), boto3 `download_file` (moto);
* wanstudio as a user runs it: `wan models ensure --only <id> --json` in a fresh process and a fresh
  MODELS_ROOT, from the fake Hub and from moto, sha256 verification and the atomic commit included;
* the sha256 of the set alone (hashlib, one thread), so that readers see what verification costs;
* a tuning grid of WAN_DOWNLOAD_PART_SIZE x WAN_MAX_CONCURRENT_DOWNLOADS from the fake Hub.

Absolute numbers move between runs and machines; the ratios, taken in one run, are what to compare.
Nothing here touches the network; everything written goes into one temporary folder, removed at the end.

    .venv/bin/python benchmarks/bench_download.py [--quick] [--write docs/benchmarks.md] [--dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import mmap
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from _report import machine_basics, markers, write_section

from wanstudio._units import parse_size
from wanstudio.config import DEFAULT_DOWNLOAD_PART_SIZE, DEFAULT_MAX_CONCURRENT_DOWNLOADS
from wanstudio.orchestrator._partial import plan_ranges

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

SECTION = "download"
BEGIN, END = markers(SECTION)
MiB, GiB = 2**20, 2**30
MB = 10**6

# The goals and PERFORMANCE.md's stricter targets, on the big file (MB/s over MB/s).
GOAL_BEST_PEER = 0.9  # at least this times the best of curl / aria2c / boto3 / snapshot_download
GOAL_SNAPSHOT = 1.5  # at least this times snapshot_download
TARGET_BEST_TOOL = 2.6  # PERFORMANCE.md: the best of curl / aria2c / boto3
TARGET_SNAPSHOT = 4.8  # PERFORMANCE.md: snapshot_download

DEFAULT_PART = f"{DEFAULT_DOWNLOAD_PART_SIZE // MiB}M"  # wanstudio's defaults: the headline rows
DEFAULT_CONNECTIONS = DEFAULT_MAX_CONCURRENT_DOWNLOADS
BOTO3_PATIENCE_S = 120.0  # boto3's default multipart download against moto: give up after this
TIMEOUT_S = 300.0  # any other single transfer
BUCKET, PREFIX, FAMILY, VARIANT = "wan-bench", "models", "bench", "base"
ACCESS_KEY = "AKIAWANSTUDIOBENCHKEY"
SECRET_KEY = "wanstudio-bench-secret-key-0123456789abcdef"
WRITE_CHUNK = 64 * MiB


@dataclass(frozen=True)
class Plan:
    """Sizes and repetitions of a run."""

    big: int  # bytes of the one large file
    shard: int  # bytes of each of the 24 shards
    shards: int
    reps: int
    parts: tuple[str, ...]  # WAN_DOWNLOAD_PART_SIZE values of the tuning grid
    connections: tuple[int, ...]  # WAN_MAX_CONCURRENT_DOWNLOADS values of the tuning grid


FULL = Plan(2 * GiB, 64 * MiB, 24, 3, ("64M", "256M", "2048M"), (1, 4, 8))
QUICK = Plan(256 * MiB, 8 * MiB, 24, 1, ("64M", "256M"), (1, 8))


@dataclass(frozen=True)
class FileSet:
    """Files served under the same names by both servers, and the wanstudio model that lists them."""

    key: str  # "big" or "shards"
    title: str  # "1 x 2 GiB"
    repo_id: str  # fake Hub repo
    model_id: str  # manifest id
    files: tuple[Path, ...]  # the source files (their names are the repo paths)
    sizes: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.sizes)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.files]

    def s3_key(self, name: str) -> str:
        return f"{PREFIX}/{FAMILY}/{self.model_id}/{VARIANT}/{name}"


class Failed(Exception):
    """A transfer that did not finish (exit status, timeout or wrong output): recorded, not fatal."""


@dataclass
class Case:
    """One tool on one file set: a row of the results or a cell of the tuning grid."""

    label: str
    verifies: str
    run: Callable[[Path], float]  # given an empty output folder, transfer the set and return the seconds
    samples: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    timeout: float = TIMEOUT_S
    retired: bool = False  # stop running it (it timed out: its fallback runs instead)
    on_failure: Callable[[], Case | None] | None = None  # a case to run instead, added once

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None


# -- setup (not timed) -------------------------------------------------------------------------------------


def write_random(path: Path, size: int) -> None:
    """`size` random bytes, in large chunks."""
    with open(path, "wb") as handle:
        left = size
        while left:
            n = min(WRITE_CHUNK, left)
            handle.write(os.urandom(n))
            left -= n


def make_sets(source: Path, plan: Plan) -> list[FileSet]:
    """Write both file sets once; the shards are written by two threads (urandom releases the GIL)."""
    big_dir, shard_dir = source / "big", source / "shards"
    big_dir.mkdir(parents=True)
    shard_dir.mkdir(parents=True)
    big = big_dir / "diffusion_pytorch_model.safetensors"
    shards = [
        shard_dir / f"diffusion_pytorch_model-{i:05d}-of-{plan.shards:05d}.safetensors"
        for i in range(1, plan.shards + 1)
    ]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda job: write_random(*job), [(big, plan.big), *((p, plan.shard) for p in shards)]))
    os.sync()
    return [
        FileSet(
            "big",
            f"1 x {human(plan.big)}",
            "wanstudio-bench/one-file",
            "bench-one@1.0.0",
            (big,),
            (plan.big,),
        ),
        FileSet(
            "shards",
            f"{plan.shards} x {human(plan.shard)}",
            "wanstudio-bench/shards",
            "bench-shards@1.0.0",
            tuple(shards),
            (plan.shard,) * plan.shards,
        ),
    ]


def sha256_file(path: Path, buffer: memoryview) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        while n := handle.readinto(buffer):
            digest.update(buffer[:n])
    return digest.hexdigest()


def write_manifest(path: Path, sets: Sequence[FileSet], digests: Mapping[Path, str]) -> None:
    """A manifest with one model per set, every file listed with path, size and sha256, and its Hub repo."""
    text = "schema_version = 1\n"
    for file_set in sets:
        model = f'models."{file_set.model_id}"'
        text += f'\n[{model}]\nfamily = "{FAMILY}"\ntask = "t2v"\ndefault_variant = "{VARIANT}"\n'
        text += f'\n[{model}.hf]\nrepo = "{file_set.repo_id}"\nrevision = "main"\n'
        text += f"\n[{model}.variants.{VARIANT}]\nfiles = [\n"
        for f, size in zip(file_set.files, file_set.sizes, strict=True):
            entry = {"path": f.name, "size": size, "sha256": digests[f]}
            text += "  { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in entry.items()) + " },\n"
        text += "]\n"
    path.write_text(text, encoding="utf-8")


def upload_to_s3(endpoint: str, sets: Sequence[FileSet]) -> None:
    import boto3
    from boto3.s3.transfer import TransferConfig

    client = s3_client(boto3, endpoint)
    client.create_bucket(Bucket=BUCKET)
    config = TransferConfig(multipart_threshold=256 * MiB, multipart_chunksize=256 * MiB, max_concurrency=2)
    for file_set in sets:
        for f, size in zip(file_set.files, file_set.sizes, strict=True):
            client.upload_file(str(f), BUCKET, file_set.s3_key(f.name), Config=config)
            head = client.head_object(Bucket=BUCKET, Key=file_set.s3_key(f.name))
            if head["ContentLength"] != size:
                raise SystemExit(f"moto holds {head['ContentLength']} bytes of {f.name}, not {size}")


def s3_client(boto3: object, endpoint: str) -> object:
    return boto3.client(  # type: ignore[attr-defined]
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )


# -- environments ------------------------------------------------------------------------------------------

_DROPPED = ("HF_", "HUGGINGFACE_", "WAN_", "AWS_", "MODELS_ROOT", "PYTHON_KEYRING_BACKEND")
_PROXIES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def base_env(home: Path) -> dict[str, str]:
    """The environment every tool starts from: none of the user's settings, tokens, credentials or proxies."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_DROPPED) and k.lower() not in _PROXIES and k != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(
        NO_PROXY="127.0.0.1,localhost",
        HOME=str(home),  # no ~/.curlrc, ~/.aria2, ~/.aws or ~/.cache of the user's
        AWS_CONFIG_FILE=str(home / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
    )
    return env


def s3_env(env: Mapping[str, str], endpoint: str) -> dict[str, str]:
    return {
        **env,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": "us-east-1",
    }


def hf_env(env: Mapping[str, str], out: Path) -> dict[str, str]:
    """huggingface_hub's settings for one run: a private, empty home; no Xet, telemetry or progress bars."""
    return {
        **env,
        "HF_HOME": str(out / "hf-home"),
        "HF_HUB_CACHE": str(out / "hf-cache"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }


# -- timed runs --------------------------------------------------------------------------------------------


def run_process(
    argv: Sequence[str], env: Mapping[str, str], timeout: float, cwd: Path | None = None
) -> tuple[float, str]:
    """Run a whole process; (wall seconds, stdout). Failed on a non-zero exit or past `timeout` (killed).

    What a successful process wrote to stderr (wanstudio's warnings: retries, fallbacks) goes to ours.
    """
    start = time.perf_counter()
    try:
        done = subprocess.run(
            list(argv),
            env=dict(env),
            cwd=cwd,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise Failed(f"timed out after {timeout:.0f} s (killed)") from None
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).decode(errors="replace").strip()[-600:]
        raise Failed(f"exit {done.returncode}: {tail}")
    if done.stderr.strip():
        print(
            f"    stderr of {Path(argv[0]).name} {argv[1] if len(argv) > 1 else ''}: "
            f"{done.stderr.decode(errors='replace').strip()[-800:]}",
            file=sys.stderr,
        )
    return elapsed, done.stdout.decode(errors="replace")


def check_files(folder: Path, file_set: FileSet) -> None:
    """Every file of the set is in `folder` (symlinks followed) with its size."""
    for f, expected in zip(file_set.files, file_set.sizes, strict=True):
        try:
            size = (folder / f.name).stat().st_size
        except OSError:
            raise Failed(f"{f.name} is missing from the output") from None
        if size != expected:
            raise Failed(f"{f.name} is {size} bytes, not {expected}")


SNAPSHOT_SCRIPT = """\
import sys
from huggingface_hub import snapshot_download
print(snapshot_download(sys.argv[1], cache_dir=sys.argv[2], endpoint=sys.argv[3], token=False))
"""

BOTO3_SCRIPT = """\
import os, sys
from concurrent.futures import ThreadPoolExecutor
import boto3
from boto3.s3.transfer import TransferConfig
bucket, out, threshold, *keys = sys.argv[1:]
client = boto3.client("s3")
config = TransferConfig(multipart_threshold=int(threshold)) if int(threshold) else TransferConfig()
def get(key):
    client.download_file(bucket, key, os.path.join(out, key.rpartition("/")[2]), Config=config)
if len(keys) == 1:
    get(keys[0])
else:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(get, keys))
"""


@dataclass
class Bench:
    """Servers, sets and environments of one run; builds the cases."""

    work: Path
    sets: list[FileSet]
    hub_url: str
    s3_url: str
    manifest: Path
    env: dict[str, str]
    aria2c: str | None
    hub: object  # FakeHub, for its resolve URLs
    boto3_patience: float = BOTO3_PATIENCE_S

    def urls(self, file_set: FileSet) -> list[str]:
        resolve = self.hub.resolve_url  # type: ignore[attr-defined]
        return [resolve(file_set.repo_id, name) for name in file_set.names]

    # -- peers

    def curl(self, file_set: FileSet) -> Case:
        def run(out: Path) -> float:
            argv = ["curl", "-sS", "-L", "--fail"]
            for name, url in zip(file_set.names, self.urls(file_set), strict=True):
                argv += ["-o", str(out / name), url]
            seconds, _ = run_process(argv, self.env, TIMEOUT_S)
            check_files(out, file_set)
            return seconds

        return Case("`curl -sS -L` (one process, all URLs, 1 connection)", "none", run)

    def aria2(self, file_set: FileSet) -> Case:
        assert self.aria2c is not None

        def run(out: Path) -> float:
            listing = out / "urls.txt"
            listing.write_text(
                "".join(
                    f"{url}\n  out={name}\n"
                    for name, url in zip(file_set.names, self.urls(file_set), strict=True)
                )
            )
            argv = [
                self.aria2c,
                "-x8",
                "-s8",
                "-j8",
                "--file-allocation=falloc",
                "-q",
                "--summary-interval=0",
                "--auto-file-renaming=false",
                "-d",
                str(out),
                "-i",
                str(listing),
            ]
            seconds, _ = run_process(argv, self.env, TIMEOUT_S)
            check_files(out, file_set)
            return seconds

        return Case("`aria2c -x8 -s8 -j8 --file-allocation=falloc`", "none", run)

    def snapshot(self, file_set: FileSet) -> Case:
        def run(out: Path) -> float:
            argv = [sys.executable, "-c", SNAPSHOT_SCRIPT, file_set.repo_id, str(out / "cache"), self.hub_url]
            seconds, stdout = run_process(argv, hf_env(self.env, out), TIMEOUT_S)
            check_files(Path(stdout.strip().splitlines()[-1]), file_set)
            return seconds

        return Case("`huggingface_hub.snapshot_download` (default max_workers=8)", "size only", run)

    def boto3(self, file_set: FileSet, *, single_get: bool) -> Case:
        threshold = max(file_set.sizes) + 1 if single_get else 0
        what = (
            "`TransferConfig(multipart_threshold=<size + 1>)` (one GET per file)"
            if single_get
            else "default `TransferConfig`"
        )

        def run(out: Path) -> float:
            keys = [file_set.s3_key(name) for name in file_set.names]
            argv = [sys.executable, "-c", BOTO3_SCRIPT, BUCKET, str(out), str(threshold), *keys]
            seconds, _ = run_process(argv, s3_env(self.env, self.s3_url), case.timeout)
            check_files(out, file_set)
            return seconds

        case = Case(f"boto3 `download_file` from moto, {what}", "none", run)
        if not single_get:
            case.timeout = self.boto3_patience
            case.on_failure = lambda: self.boto3(file_set, single_get=True)
        return case

    # -- ours

    def wan(
        self, file_set: FileSet, source: str, part: str = DEFAULT_PART, connections: int = DEFAULT_CONNECTIONS
    ) -> Case:
        def run(out: Path) -> float:
            env = {
                **hf_env(self.env, out),
                "MODELS_ROOT": str(out / "models"),
                "WAN_MODELS_MANIFEST": str(self.manifest),
                "WAN_SOURCES": source,
                "WAN_DOWNLOAD_PART_SIZE": part,
                "WAN_MAX_CONCURRENT_DOWNLOADS": str(connections),
            }
            if source == "hf":
                env["HF_ENDPOINT"] = self.hub_url
            else:
                env = {**s3_env(env, self.s3_url), "WAN_S3_URL": f"s3://{BUCKET}/{PREFIX}"}
            short_id = file_set.model_id.split("@")[0]
            argv = [sys.executable, "-m", "wanstudio", "models", "ensure", "--only", short_id, "--json"]
            seconds, stdout = run_process(argv, env, TIMEOUT_S)
            try:
                result = json.loads(stdout)["results"][0]
            except (ValueError, KeyError, IndexError):
                raise Failed(f"unexpected output: {stdout[-300:]}") from None
            from_source = result.get("sources") == {source: len(file_set.files)}
            if not from_source or result.get("bytes_downloaded") != file_set.total:
                raise Failed(f"the ensure did not download the set from {source}: {result}")
            check_files(Path(result["path"]), file_set)
            return seconds

        where = "the fake Hub" if source == "hf" else "moto"
        plural = "s" if connections > 1 else ""
        return Case(
            f"`wan models ensure` from {where}, {part} parts, {connections} connection{plural}",
            "sha256 + atomic commit",
            run,
        )

    def hashing(self, file_set: FileSet) -> Case:
        def run(out: Path) -> float:
            buffer = memoryview(bytearray(8 * MiB))
            start = time.perf_counter()
            for f in file_set.files:
                sha256_file(f, buffer)
            return time.perf_counter() - start

        return Case("`hashlib.sha256` of the set alone, 1 thread (no transfer)", "-", run)


@dataclass
class SetCases:
    """Every case of one file set: the comparison rows and the tuning grid (whose default cell is a row)."""

    file_set: FileSet
    rows: list[Case]
    grid: dict[tuple[str, int], Case]
    wan_hf: Case
    wan_s3: Case
    hash: Case
    snapshot: Case
    tools: dict[str, list[Case]]  # peer name -> its cases ("boto3" may gain its fallback)

    def all_cases(self) -> list[Case]:
        seen: dict[int, Case] = {}
        for case in [*self.rows, *self.grid.values()]:
            seen.setdefault(id(case), case)
        return list(seen.values())


def build_cases(bench: Bench, file_set: FileSet, plan: Plan) -> SetCases:
    grid = {(p, c): bench.wan(file_set, "hf", p, c) for p in plan.parts for c in plan.connections}
    wan_hf = grid.get((DEFAULT_PART, DEFAULT_CONNECTIONS)) or bench.wan(file_set, "hf")
    wan_s3 = bench.wan(file_set, "s3")
    tools: dict[str, list[Case]] = {"curl": [bench.curl(file_set)]}
    if bench.aria2c:
        tools["aria2c"] = [bench.aria2(file_set)]
    snapshot = bench.snapshot(file_set)
    tools["boto3"] = [bench.boto3(file_set, single_get=False)]
    hash_case = bench.hashing(file_set)
    rows = [hash_case, *tools["curl"], *tools.get("aria2c", []), snapshot, *tools["boto3"], wan_hf, wan_s3]
    return SetCases(file_set, rows, grid, wan_hf, wan_s3, hash_case, snapshot, tools)


def run_case(case: Case, out_root: Path, rep: int, log: Callable[[str], None]) -> Case | None:
    """Time the case once in a fresh folder, then delete what it wrote; a fallback case if it asks for one."""
    out = out_root / f"rep{rep}"
    out.mkdir(parents=True)
    try:
        seconds = case.run(out)
    except Failed as failure:
        case.failures.append(str(failure))
        log(f"  FAILED {case.label}: {failure}")
        seconds = None
    finally:
        shutil.rmtree(out, ignore_errors=True)
        os.sync()  # the next tool does not pay for this one's writeback
    if seconds is not None:
        case.samples.append(seconds)
        log(f"  {seconds:7.2f} s  {case.label}")
        return None
    wait_until_quiet(log)  # a killed client leaves the server busy with its requests
    if case.on_failure is None:
        return None
    case.retired = True
    fallback, case.on_failure = case.on_failure(), None
    return fallback


def wait_until_quiet(log: Callable[[str], None], limit: float = 180.0) -> None:
    """Wait until the servers (threads of this process) stop using CPU: under 5% over half a second."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        before = time.process_time()
        time.sleep(0.5)
        if time.process_time() - before < 0.025:
            break
    log(f"  (servers quiet after {time.monotonic() - start:.1f} s)")


def rotated(cases: Sequence[Case], rep: int, reps: int) -> list[Case]:
    shift = (rep * max(1, len(cases) // max(1, reps))) % max(1, len(cases))
    return [*cases[shift:], *cases[:shift]]


def measure(bench: Bench, plan: Plan, log: Callable[[str], None]) -> list[SetCases]:
    """Every case of every set, once per repetition, the order rotated each repetition."""
    all_sets = [build_cases(bench, s, plan) for s in bench.sets]
    for rep in range(plan.reps):
        for set_cases in all_sets:
            log(f"repetition {rep + 1}/{plan.reps}, {set_cases.file_set.title}")
            queue = [c for c in rotated(set_cases.all_cases(), rep, plan.reps) if not c.retired]
            while queue:
                case = queue.pop(0)
                fallback = run_case(case, bench.work / "out", rep, log)
                if fallback is not None:
                    set_cases.tools["boto3"].append(fallback)
                    set_cases.rows.insert(set_cases.rows.index(case) + 1, fallback)
                    queue.insert(0, fallback)
    return all_sets


# -- the machine -------------------------------------------------------------------------------------------


def machine_description(work: Path, aria2c: str | None) -> str:
    versions = ", ".join(
        f"{name} {_version(name)}" for name in ("huggingface_hub", "boto3", "botocore", "moto", "urllib3")
    )
    curl = _first_line(["curl", "--version"]).split(" (")[0]
    aria = _first_line([aria2c, "--version"]) if aria2c else "aria2c not installed"
    return (
        f"{machine_basics()}; {versions}; {curl}; {aria}; data and outputs on {filesystem_of(work)}; "
        f"O_DIRECT writes there: {o_direct(work)}"
    )


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def _first_line(argv: Sequence[str]) -> str:
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, check=False).stdout.splitlines()[0]
    except (OSError, IndexError):
        return f"{argv[0]} (version unknown)"


def filesystem_of(path: Path) -> str:
    """Type, device, mount point and options of the filesystem holding `path` (/proc/self/mounts)."""
    resolved = str(path.resolve())
    best: list[str] | None = None
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        mount = fields[1].replace("\\040", " ")
        if (resolved == mount or resolved.startswith(mount.rstrip("/") + "/")) and (
            best is None or len(mount) >= len(best[1])
        ):
            best = [fields[0], mount, fields[2], fields[3]]
    if best is None:
        return f"an unknown filesystem ({resolved})"
    device, mount, kind, options = best
    return f"{kind} ({device} on {mount}, {options}; temp dir {resolved})"


def o_direct(folder: Path) -> str:
    """Whether a 1 MiB aligned O_DIRECT write works in `folder`, as the engine would do it."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return "not offered by this OS"
    probe = folder / ".o_direct_probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | flag, 0o644)
    except OSError as exc:
        return f"refused ({exc.strerror})"
    try:
        os.write(fd, mmap.mmap(-1, MiB))
        return "work"
    except OSError as exc:
        return f"refused on write ({exc.strerror})"
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


# -- report ------------------------------------------------------------------------------------------------


def human(size: int) -> str:
    return f"{size // GiB} GiB" if size % GiB == 0 else f"{size // MiB} MiB"


def mbps(case: Case, total: int) -> float | None:
    return total / case.median / MB if case.median else None


def cell(case: Case, total: int) -> str:
    """'median s | MB/s' of a row, or what went wrong."""
    if case.median is None:
        return f"{_failure(case)} | -"
    runs = f" ({len(case.samples)} runs)" if case.failures else ""
    return f"{case.median:.2f}{runs} | {mbps(case, total):.0f}"


def _failure(case: Case) -> str:
    reason = case.failures[0] if case.failures else "not run"
    reason = reason if len(reason) < 90 else reason[:87] + "..."
    return f"failed {len(case.failures)}x: {reason.replace('|', '/')}"


def ratio(case: Case, reference: Case) -> str:
    """How many times longer the row took than wanstudio (above 1: wanstudio is faster)."""
    if case.median is None or reference.median is None:
        return "-"
    return f"{case.median / reference.median:.2f}"


def best_of(cases: Sequence[Case], total: int) -> tuple[float, Case] | None:
    done = [(mbps(c, total), c) for c in cases if c.median is not None]
    return max(done, key=lambda pair: pair[0]) if done else None  # type: ignore[return-value,arg-type]


def goals_table(big: SetCases) -> list[str]:
    total = big.file_set.total
    wan = mbps(big.wan_hf, total)
    snap = mbps(big.snapshot, total)
    peers = best_of([c for cases in big.tools.values() for c in cases] + [big.snapshot], total)
    tools = best_of([c for cases in big.tools.values() for c in cases], total)
    rows = [
        "**Goals** (on the big file; wanstudio = `wan models ensure` from the fake Hub with its defaults, "
        + "sha256 and commit included; the others without verification)",
        "",
        "| goal | target | measured | met |",
        "|---|---|---|---|",
    ]

    def line(name: str, best: tuple[float, Case] | None, best_target: float, snap_target: float) -> str:
        if wan is None or best is None or snap is None:
            target = f">= {best_target:g}x the best, >= {snap_target:g}x `snapshot_download`"
            return f"| {name} | {target} | incomplete | **not met** |"
        vs_best, vs_snap = wan / best[0], wan / snap
        ok = vs_best >= best_target and vs_snap >= snap_target
        return (
            f"| {name} | >= {best_target:g}x the best, >= {snap_target:g}x `snapshot_download` "
            f"| {wan:.0f} MB/s: {vs_best:.2f}x the best ({_short(best[1])}, {best[0]:.0f} MB/s), "
            f"{vs_snap:.2f}x `snapshot_download` ({snap:.0f} MB/s) | {_met(ok)} |"
        )

    rows.append(
        line(
            "issue: against curl / aria2c / boto3 / `snapshot_download`", peers, GOAL_BEST_PEER, GOAL_SNAPSHOT
        )
    )
    rows.append(
        line("PERFORMANCE.md: against curl / aria2c / boto3", tools, TARGET_BEST_TOOL, TARGET_SNAPSHOT)
    )
    return rows


def _short(case: Case) -> str:
    label = case.label
    if label.startswith("`curl"):
        return "curl"
    if label.startswith("`aria2c"):
        return "aria2c"
    if label.startswith("boto3"):
        return "boto3, single GET" if "multipart_threshold" in label else "boto3"
    return "snapshot_download" if "snapshot" in label else label


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def results_table(all_sets: Sequence[SetCases]) -> list[str]:
    """One row per tool, both sets side by side; x = the row's time over wanstudio's (Hub, defaults)."""
    labels: list[str] = []
    by_label: list[dict[str, Case]] = []
    for set_cases in all_sets:
        cases = {c.label: c for c in set_cases.rows}
        by_label.append(cases)
        labels += [label for label in cases if label not in labels]
    head = " | ".join(f"{s.file_set.title}: median s | MB/s | x" for s in all_sets)
    rows = [f"| tool | verifies | {head} |", "|---|---|" + "--:|--:|--:|" * len(all_sets)]
    for label in labels:
        verifies = next(c[label].verifies for c in by_label if label in c)
        cells = []
        for set_cases, cases in zip(all_sets, by_label, strict=True):
            case = cases.get(label)
            if case is None:
                cells.append("- | - | -")
            else:
                cells.append(f"{cell(case, set_cases.file_set.total)} | {ratio(case, set_cases.wan_hf)}")
        bold = "**" if label == all_sets[0].wan_hf.label else ""
        rows.append(f"| {bold}{label}{bold} | {verifies} | {' | '.join(cells)} |")
    return rows


def tuning_table(set_cases: SetCases, plan: Plan) -> tuple[list[str], tuple[str, int] | None]:
    """MB/s of each grid cell (median, min-max) with the ranges each file is cut into; and the best cell."""
    file_set = set_cases.file_set
    size = file_set.sizes[0]
    head = " | ".join(f"{c} connection{'s' if c > 1 else ''}" for c in plan.connections)
    rows = [
        f"| part size \\ WAN_MAX_CONCURRENT_DOWNLOADS | {head} |",
        "|---|" + "--:|" * len(plan.connections),
    ]
    scores = {key: mbps(case, file_set.total) for key, case in set_cases.grid.items()}
    done = {k: v for k, v in scores.items() if v is not None}
    best = max(done, key=lambda k: done[k]) if done else None
    for part in plan.parts:
        cells = []
        for connections in plan.connections:
            case = set_cases.grid[(part, connections)]
            ranges = len(plan_ranges(size, parse_size(part), connections))
            in_flight = min(connections, len(file_set.files))
            shape = f"{ranges} range{'s' if ranges > 1 else ''}"
            if len(file_set.files) > 1:
                shape += f" per file, {in_flight} file{'s' if in_flight > 1 else ''} at once"
            if case.median is None:
                cells.append(f"{_failure(case)} ({shape})")
                continue
            speeds = [file_set.total / s / MB for s in case.samples]
            spread = f" ({min(speeds):.0f}-{max(speeds):.0f})" if len(speeds) > 1 else ""
            value = f"{scores[(part, connections)]:.0f}{spread}"
            if (part, connections) == best:
                value = f"**{value}**"
            cells.append(f"{value}; {shape}")
        rows.append(f"| {part} | {' | '.join(cells)} |")
    return rows, best


def best_for_both(all_sets: Sequence[SetCases], plan: Plan) -> str:
    """The cell whose worse set comes closest to that set's best cell: a candidate for the defaults."""
    shares: dict[tuple[str, int], float] = {}
    for key in [(p, c) for p in plan.parts for c in plan.connections]:
        worst = 1.0
        for set_cases in all_sets:
            total = set_cases.file_set.total
            speeds = {k: mbps(c, total) for k, c in set_cases.grid.items()}
            top = max((v for v in speeds.values() if v is not None), default=None)
            mine = speeds[key]
            worst = min(worst, 0.0 if mine is None or top is None else mine / top)
        shares[key] = worst
    (part, connections), share = max(shares.items(), key=lambda item: item[1])
    return (
        f"**Best for both sets:** {part} parts, {connections} connection{'s' if connections > 1 else ''} "
        f"(on its worse set, {share:.0%} of that set's best cell; the defaults, {DEFAULT_PART} and "
        f"{DEFAULT_CONNECTIONS}, reach {shares.get((DEFAULT_PART, DEFAULT_CONNECTIONS), 0.0):.0%})."
    )


METHOD = """\
**Method.** Two file sets of random bytes ({big_title} and {shard_title}, `.safetensors` names) are written
once into a temporary folder on the disk of the outputs, then served on loopback by two servers started in
this process: the fake Hugging Face Hub of `tests/fakehub.py` (a repo per set; LFS files answer `302` to its
CDN origin, which sends them from disk with `sendfile`), and moto's S3 server (`ThreadedMotoServer`, the same
files uploaded with boto3). Every tool fetches a whole set into a fresh, empty folder and is timed from the
start of its process to its exit (wall time, Python start-up and imports included where there are any);
the output is then checked (every file there with its size), deleted, and `sync` runs, untimed, so that no
tool pays for another's writeback. Peers run without verification: `curl` is one process given all URLs
(one connection, files one after another, `-L` following the Hub's redirect); `aria2c` gets the Hub URLs in
an input file, with `--file-allocation=falloc` (its advice for ext4; the default writes zeros first);
`snapshot_download(repo, cache_dir=<fresh>, endpoint=<fake Hub>, token=False)` runs in a `python -c` with
`HF_HUB_DISABLE_XET=1`, `HF_HUB_DISABLE_TELEMETRY=1`, progress bars off and its default `max_workers` (it
checks sizes only); boto3 `download_file` runs in a `python -c` against moto, one call per file, the 24
files from a pool of 8 threads, first with the default `TransferConfig` and, where that fails or takes over
{patience:.0f} s (moto reads a whole object for every ranged GET), then with `multipart_threshold` above the
file size (one GET per file). Since moto reads a whole object for every ranged GET, a row from moto that
uses ranges (boto3's default; wanstudio's engine on a file larger than a part) measures moto more than the
client. wanstudio runs as a user runs it: `wan models ensure --only <id> --json`
(`python -m wanstudio`) with a manifest written here listing every file with size and sha256, a fresh
`MODELS_ROOT` and an empty Hugging Face cache for each run, `WAN_SOURCES=hf` with `HF_ENDPOINT` at the fake
Hub, or `WAN_SOURCES=s3` with `WAN_S3_URL` and `AWS_ENDPOINT_URL` at moto; its time includes the sha256 of
every byte and the atomic commit of the variant folder, and the JSON result is checked (every file from
that source, every byte downloaded). No tool sees the user's settings, tokens, credentials, proxies or
home folder (the keyring backend is the null one). Each case ran {reps} time(s), the order of the cases
rotated between repetitions; medians are shown; MB/s = 10^6 bytes/s over the median; `x` is the row's
median time over wanstudio's from the fake Hub with its defaults ({part} parts, {connections} connections),
so above 1 wanstudio is faster."""


def render(machine: str, all_sets: Sequence[SetCases], plan: Plan, wall: float, patience: float) -> str:
    method = METHOD.replace("\n", " ").format(
        big_title=all_sets[0].file_set.title,
        shard_title=all_sets[1].file_set.title,
        patience=patience,
        reps=plan.reps,
        part=DEFAULT_PART,
        connections=DEFAULT_CONNECTIONS,
    )
    parts = [
        BEGIN,
        "## Downloads: wanstudio's transfer engine against curl, aria2c, boto3 and huggingface_hub",
        "",
        (
            f"Generated by `benchmarks/bench_download.py`{' --quick' if plan.reps == 1 else ''} on "
            f"{time.strftime('%Y-%m-%d')} ({wall / 60:.1f} minutes). Absolute numbers move between runs and "
            "machines; compare the ratios, which come from one run with the tools interleaved."
        ),
        "",
        f"**Machine:** {machine}.",
        "",
        method,
        "",
        *goals_table(all_sets[0]),
        "",
        "### Results",
        "",
        *results_table(all_sets),
    ]
    bests: list[str] = []
    for set_cases in all_sets:
        table, best = tuning_table(set_cases, plan)
        parts += [
            "",
            f"### Tuning: wanstudio from the fake Hub, {set_cases.file_set.title}",
            "",
            (
                "MB/s, median (min-max over the repetitions), and how the engine cuts each file: a file "
                "gets up to one range per part, at most WAN_MAX_CONCURRENT_DOWNLOADS ranges, and that many "
                "files are fetched at once. Cells with the same shape run the same plan (a view of the "
                "noise)."
            ),
            "",
            *table,
        ]
        if best is not None:
            plural = "s" if best[1] > 1 else ""
            bests.append(f"{set_cases.file_set.title}: {best[0]} parts, {best[1]} connection{plural}")
    parts += [
        "",
        f"**Best cell:** {'; '.join(bests) or 'none completed'}.",
        "",
        best_for_both(all_sets, plan),
        END,
    ]
    return "\n".join(parts) + "\n"


# -- main --------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="256 MiB and 24 x 8 MiB, one repetition, a smaller grid"
    )
    parser.add_argument("--write", type=Path, metavar="MD", help=f"replace the {SECTION} section in MD")
    parser.add_argument(
        "--dir", type=Path, help="where to make the temporary folder (default: system temp; not tmpfs)"
    )
    parser.add_argument(
        "--boto3-patience",
        type=float,
        default=BOTO3_PATIENCE_S,
        metavar="S",
        help=f"how long boto3's default multipart download may take before its fallback runs "
        f"(default {BOTO3_PATIENCE_S:g})",
    )
    return parser.parse_args(argv)


@dataclass
class Servers:
    hub: object
    moto: object

    def stop(self) -> None:
        self.hub.close()  # type: ignore[attr-defined]
        self.moto.stop()  # type: ignore[attr-defined]


def start_servers(work: Path) -> Servers:
    from fakehub import FakeHub
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request otherwise

    hub = FakeHub(work / "hub").start()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    return Servers(hub, moto)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wan-bench-download-", dir=args.dir) as tmp:
        work = Path(tmp)
        need = 4 * (plan.big + plan.shards * plan.shard)  # sources, moto's copies, one output, headroom
        if shutil.disk_usage(work).free < need:
            raise SystemExit(
                f"{work} has {shutil.disk_usage(work).free / GiB:.1f} GiB free; "
                f"this run needs {need / GiB:.1f}"
            )
        # moto spills objects to temporary files: keep them in this folder, on this disk, removed with it.
        (work / "spool").mkdir()
        tempfile.tempdir = str(work / "spool")
        log("writing the file sets")
        sets = make_sets(work / "source", plan)
        buffer = memoryview(bytearray(8 * MiB))
        digests = {f: sha256_file(f, buffer) for s in sets for f in s.files}
        write_manifest(work / "models.toml", sets, digests)
        servers = start_servers(work)
        try:
            hub = servers.hub
            for file_set in sets:
                files = {f.name: f for f in file_set.files}
                hub.add_repo(file_set.repo_id, files)  # type: ignore[attr-defined]
            host, port = servers.moto.get_host_and_port()  # type: ignore[attr-defined]
            s3_url = f"http://{host}:{port}"
            log("uploading the file sets to moto")
            upload_to_s3(s3_url, sets)
            os.sync()
            (work / "home").mkdir()
            bench = Bench(
                work=work,
                sets=sets,
                hub_url=hub.url,  # type: ignore[attr-defined]
                s3_url=s3_url,
                manifest=work / "models.toml",
                env=base_env(work / "home"),
                aria2c=shutil.which("aria2c"),
                hub=hub,
                boto3_patience=args.boto3_patience,
            )
            if bench.aria2c is None:
                log("aria2c is not installed: skipping it")
            log("measuring")
            all_sets = measure(bench, plan, log)
            machine = machine_description(work, bench.aria2c)
        finally:
            servers.stop()
            tempfile.tempdir = None
    section = render(machine, all_sets, plan, time.monotonic() - started, args.boto3_patience)
    print(section, end="")
    if args.write:
        write_section(args.write, SECTION, section)
    log("done")


if __name__ == "__main__":
    main()
