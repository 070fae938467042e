"""`wan models check --deep` against `sha256sum` on the same files, in one run.

`check --deep` reads every byte of a variant and compares its sha256 with the manifest: it is what an
operator runs after a disk scare, and it should go as fast as the tool they would otherwise reach for,
`sha256sum` (goal: at least 0.9x its throughput). This benchmark builds a store of its own (random files,
by default 8 x 256 MiB, committed with `wan models ensure` from a local mirror), makes the page cache
state the same for every case (warm: every file read once before timing; or `--cache cold`: every file
evicted with `posix_fadvise(DONTNEED)` before each timed run), then times as whole processes, interleaved
with the order rotated, medians of 3:

* `wan models check <id> --deep --json` (the product, Python start-up and manifest included);
* `sha256sum <files>` (coreutils, one process, the files one after another);
* `openssl dgst -sha256 <files>`, where installed: the same SHA-256 code as Python's hashlib, for reference;
* `wan models check --deep` with the hashing change proposed below patched in at run time, files one
  after another and then on several threads.

It also times, in process, the hashing loops one could use (what `store.sha256_of` does now: `read()` of
8 MiB chunks; `readinto` a reused buffer; `hashlib.file_digest`; `mmap`; threads across files), which
shows where the time goes. Nothing uses the network. Every file is removed at the end.

    .venv/bin/python benchmarks/bench_check.py [--quick] [--write docs/benchmarks.md] [--dir DIR]
        [--cache warm|cold|both] [--runs N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mmap
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from _report import machine_basics, markers, write_section

from wanstudio.config import ENVIRONMENT_VARIABLES as WAN_VARIABLES
from wanstudio.orchestrator._posix_locks import lock_scope
from wanstudio.orchestrator.store import sha256_of

SECTION = "check-deep"
BEGIN, END = markers(SECTION)
GOAL_RATIO = 0.9  # wan models check --deep throughput over sha256sum's
MODEL = "bench@1.0.0"
FAMILY = "bench"
VARIANT = "base"
MiB = 1024 * 1024

PROPOSED_CHUNK_BYTES = 8 * MiB  # store.HASH_CHUNK_BYTES: large reads keep cold and network reads fast
HASH_THREADS = max(1, min(4, os.cpu_count() or 1))

# Row labels
WAN = "`wan models check --deep`"
WAN_LOOP = "`wan models check --deep`, proposed loop (`readinto` 8 MiB)"
WAN_THREADS = f"`wan models check --deep`, proposed loop + {HASH_THREADS} threads"
SHA256SUM = "`sha256sum`"
OPENSSL = "`openssl dgst -sha256` (reference)"


@dataclass(frozen=True)
class Plan:
    """The store built, and how many times each thing is timed."""

    files: int
    file_bytes: int
    runs: int

    @property
    def total_bytes(self) -> int:
        return self.files * self.file_bytes


FULL = Plan(files=8, file_bytes=256 * MiB, runs=3)
QUICK = Plan(files=4, file_bytes=64 * MiB, runs=3)


@dataclass(frozen=True)
class Timing:
    """Wall times of one case, in seconds."""

    label: str
    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def mb_per_s(self, total_bytes: int) -> float:
        return total_bytes / self.median / 1e6


# -- the proposed hashing (what store.sha256_of and status.variant_status would do) -------------------------


def sha256_readinto(path: Path | str, chunk_bytes: int = PROPOSED_CHUNK_BYTES) -> str:
    """The proposed `store.sha256_of`: unbuffered `readinto` one reused buffer, the kernel told to read ahead.

    `read()` makes a new 8 MiB bytes object per chunk, which the allocator maps fresh from the kernel
    (page faults, zeroing) each time; one reused buffer does not. Large reads are kept for cold and
    network reads.
    """
    digest = hashlib.sha256()
    buffer = bytearray(chunk_bytes)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while size := handle.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()


def hash_files(paths: Sequence[Path], threads: int = HASH_THREADS) -> dict[Path, str | None]:
    """The proposed `store.hash_files`: several files hashed at once (hashlib drops the GIL while hashing)."""

    def one(path: Path) -> str | None:
        try:
            return sha256_readinto(path)
        except OSError:
            return None

    if threads <= 1 or len(paths) <= 1:
        return {path: one(path) for path in paths}
    with ThreadPoolExecutor(max_workers=min(threads, len(paths)), thread_name_prefix="wan-hash") as pool:
        return dict(zip(paths, pool.map(one, paths)))


def run_patched_check(threads: int, argv: list[str]) -> None:
    """Run the `wan` command line with the proposed hashing patched in (the benchmark's own subprocess)."""
    from wanstudio.orchestrator import orchestrator as orchestrator_module
    from wanstudio.orchestrator import status, store

    for module in (store, status, orchestrator_module):
        module.sha256_of = sha256_readinto  # type: ignore[attr-defined]
    if threads > 1:
        original = status.variant_status

        def variant_status(  # type: ignore[no-untyped-def]
            store_, model, variant, *, deep=False, record=None, wanted=None
        ):
            if deep:
                record = record or store_.record(model, variant.name)
                if wanted is None:
                    wanted = status.expected_files(store_, model, variant, record)
                folder = store_.variant_dir(model, variant)
                committed = folder.is_dir()
                targets = [
                    folder / f.path if committed else store_.layout.blob(f.sha256)
                    for f in wanted
                    if f.sha256 is not None
                ]
                digests = hash_files([t for t in targets if t.is_file()], threads)
                status.sha256_of = lambda p: digests.get(Path(p)) or sha256_readinto(p)  # type: ignore[assignment]
            try:
                return original(store_, model, variant, deep=deep, record=record, wanted=wanted)
            finally:
                status.sha256_of = sha256_readinto  # type: ignore[assignment]

        status.variant_status = orchestrator_module.variant_status = variant_status  # type: ignore[assignment]
    sys.argv = ["wan", *argv]
    from wanstudio.cli import main

    main()


# -- setup (not timed) -------------------------------------------------------------------------------------


def hermetic_environment(work: Path) -> None:
    """A store, mirror and manifest of our own; nothing of the user's wanstudio or Hub settings."""
    for name in [n for n in os.environ if n in WAN_VARIABLES or n.startswith(("HF_", "WAN_"))]:
        del os.environ[name]
    os.environ["MODELS_ROOT"] = str(work / "models")
    os.environ["WAN_LOCAL_MIRROR"] = str(work / "mirror")
    os.environ["WAN_MODELS_MANIFEST"] = str(work / "models.toml")
    os.environ["WAN_SOURCES"] = "local"
    os.environ["HF_HUB_OFFLINE"] = "1"


def build_mirror(work: Path, plan: Plan) -> dict[str, str]:
    """Random files in the local mirror and a manifest listing them (as tests/conftest.py `write_model`)."""
    folder = work / "mirror" / FAMILY / MODEL / VARIANT
    digests: dict[str, str] = {}
    block = 8 * MiB
    for index in range(plan.files):
        relative = f"transformer/diffusion_pytorch_model-{index + 1:05d}-of-{plan.files:05d}.safetensors"
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with open(target, "wb") as handle:
            for start in range(0, plan.file_bytes, block):
                data = os.urandom(min(block, plan.file_bytes - start))
                digest.update(data)
                handle.write(data)
        digests[relative] = digest.hexdigest()
    entries = "".join(
        f'  {{ path = "{p}", size = {plan.file_bytes}, sha256 = "{d}", component = "transformer" }},\n'
        for p, d in digests.items()
    )
    (work / "models.toml").write_text(
        f'schema_version = 1\n\n[models."{MODEL}"]\nfamily = "{FAMILY}"\ntask = "t2v"\n'
        f'default_variant = "{VARIANT}"\n\n[models."{MODEL}".variants.{VARIANT}]\nfiles = [\n{entries}]\n'
    )
    return digests


def wan_command() -> list[str]:
    script = Path(sys.executable).with_name("wan")
    return [str(script)] if script.exists() else [sys.executable, "-m", "wanstudio"]


def ensure_store() -> Path:
    """`wan models ensure` the benchmark model from the mirror; the committed variant folder."""
    argv = [*wan_command(), "models", "ensure", "--only", MODEL, "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"wan models ensure failed ({done.returncode}): {done.stderr[-2000:]}")
    result = json.loads(done.stdout)["results"][0]
    if result["state"] != "complete":
        raise SystemExit(f"the ensure left the variant {result['state']}")
    return Path(result["path"])


# -- page cache ----------------------------------------------------------------------------------------------


def warm_up(paths: Iterable[Path], digests: Mapping[Path, str]) -> None:
    """Read every file once (checking its digest), so that every timed case finds it in the page cache."""
    for path in paths:
        if sha256_of(path) != digests[path]:
            raise SystemExit(f"{path} does not hold the bytes the manifest lists")


def evict(paths: Iterable[Path]) -> None:
    """Drop the files' clean pages from the page cache (no root needed), so the next read goes to the disk."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def check_memory(plan: Plan) -> str | None:
    """A warning when the files may not all stay in the page cache (a warm run would then read the disk)."""
    try:
        text = Path("/proc/meminfo").read_text()
        line = next(line for line in text.splitlines() if line.startswith("MemAvailable"))
        available = int(line.split()[1]) * 1024
    except (OSError, StopIteration, ValueError):
        return None
    if plan.total_bytes * 2 > available:
        need = plan.total_bytes / 2**30
        return f"only {available / 2**30:.1f} GiB of memory free for {need:.1f} GiB of files"
    return None


# -- timing --------------------------------------------------------------------------------------------------


Command = tuple[list[str], Callable[[str], None]]  # argv, and a check of its standard output


def process_cases(files: Sequence[Path], digests: Mapping[Path, str]) -> dict[str, Command]:
    """Each command, and a check of its output (every digest right), by label."""
    names = [str(p) for p in files]
    expected = {str(p): digests[p] for p in files}

    def wan_ok(out: str) -> None:
        model = json.loads(out)["models"][0]
        if not (json.loads(out)["deep"] and model["state"] == "complete" and model["bytes_present"] > 0):
            raise SystemExit(f"wan models check --deep did not find the variant complete: {out[:500]}")

    def sums_ok(out: str) -> None:
        found = {}
        for line in out.splitlines():
            if line.startswith(("SHA2-256(", "SHA256(")):  # openssl: SHA2-256(path)= digest
                name, _, digest = line.partition(")= ")
                found[name.split("(", 1)[1]] = digest.strip()
            else:  # sha256sum: digest  path
                digest, _, name = line.partition("  ")
                found[name] = digest
        if found != expected:
            raise SystemExit(f"digests differ from the manifest: {out[:500]}")

    check = [*wan_command(), "models", "check", MODEL, "--deep", "--json"]
    patched = [sys.executable, str(Path(__file__).resolve()), "--patched-check"]
    cases = {
        WAN: (check, wan_ok),
        SHA256SUM: (["sha256sum", *names], sums_ok),
        WAN_LOOP: ([*patched, "1", "--", *check[len(wan_command()):]], wan_ok),
        WAN_THREADS: ([*patched, str(HASH_THREADS), "--", *check[len(wan_command()):]], wan_ok),
    }
    if shutil.which("openssl"):
        cases[OPENSSL] = (["openssl", "dgst", "-sha256", *names], sums_ok)
    return cases


def time_processes(
    cases: Mapping[str, Command], files: Sequence[Path], runs: int, cold: bool
) -> list[Timing]:
    """Each command once untimed (bytecode, checks), then `runs` rounds, the order rotated between rounds."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def run(argv: list[str], ok: Callable[[str], None]) -> float:
        if cold:
            evict(files)
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv[:6])} ... failed ({done.returncode}): {done.stderr[-2000:]}")
        ok(done.stdout)
        return elapsed

    labels = list(cases)
    for label in labels:
        run(*cases[label])
    samples: dict[str, list[float]] = {label: [] for label in labels}
    for round_index in range(runs):
        shift = round_index % len(labels)
        for label in labels[shift:] + labels[:shift]:
            samples[label].append(run(*cases[label]))
    return [Timing(label, tuple(samples[label])) for label in labels]


def _read_8mib(paths: Sequence[Path]) -> None:
    for path in paths:
        sha256_of(path)


def _readinto(paths: Sequence[Path]) -> None:
    for path in paths:
        sha256_readinto(path)


def _readinto_1mib(paths: Sequence[Path]) -> None:
    for path in paths:
        sha256_readinto(path, 1 * MiB)


def _file_digest(paths: Sequence[Path]) -> None:
    for path in paths:
        with open(path, "rb") as handle:
            hashlib.file_digest(handle, "sha256")


def _mmap(paths: Sequence[Path]) -> None:
    for path in paths:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            hashlib.sha256(view).hexdigest()


def _threads(paths: Sequence[Path]) -> None:
    hash_files(paths, HASH_THREADS)


LOOPS: dict[str, Callable[[Sequence[Path]], None]] = {
    "`store.sha256_of` now: `read()` 8 MiB chunks": _read_8mib,
    "`readinto` one reused 8 MiB buffer, sequential read-ahead advised (proposed)": _readinto,
    "the same with a 1 MiB buffer": _readinto_1mib,
    "`hashlib.file_digest` (256 KiB buffer)": _file_digest,
    "`mmap`, one `update` per file": _mmap,
    f"proposed loop, {HASH_THREADS} threads across files (proposed)": _threads,
}


def time_loops(files: Sequence[Path], runs: int, cold: bool) -> list[Timing]:
    """The hashing loops in this process, interleaved and rotated like the processes."""
    labels = list(LOOPS)
    samples: dict[str, list[float]] = {label: [] for label in labels}
    for round_index in range(runs):
        shift = round_index % len(labels)
        for label in labels[shift:] + labels[:shift]:
            if cold:
                evict(files)
            start = time.perf_counter()
            LOOPS[label](files)
            samples[label].append(time.perf_counter() - start)
    return [Timing(label, tuple(samples[label])) for label in labels]


# -- report --------------------------------------------------------------------------------------------------


def machine_description(work: Path) -> str:
    """CPU (and whether it has SHA instructions), memory, the tools' versions, and the store's filesystem."""
    flags = ""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        flags = next(line for line in cpuinfo if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    sha_ni = "with" if " sha_ni" in flags else "without"
    mount = lock_scope(work)
    tools = [_version(["sha256sum", "--version"]), _version(["openssl", "version"])]
    return (
        f"{machine_basics()}; CPU {sha_ni} SHA extensions (sha_ni); {'; '.join(t for t in tools if t)}; "
        f"store on {mount.fstype} (mount {mount.mount_point}, temp dir {work})"
    )


def _version(argv: list[str]) -> str:
    if not shutil.which(argv[0]):
        return ""
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return done.stdout.splitlines()[0].strip() if done.stdout else ""


METHOD = """\
**Method.** {files} files of {size} MiB of random bytes ({total:.1f} GiB) are written into a local mirror
with a manifest listing their sizes and sha256, and committed into a fresh `MODELS_ROOT` by
`wan models ensure` (`WAN_SOURCES=local`); the variant folder holds hard links to the store's blobs.
Every case reads exactly those files. Page cache, the same for every case: **warm** means every file was
read once before timing (and the machine's memory holds them all); **cold** means every file is evicted
with `posix_fadvise(POSIX_FADV_DONTNEED)` before each timed run, so every case reads the disk (on a
virtual machine, the host may still serve it from its own cache). Each
command runs once untimed (its output checked: every digest equal to the manifest's, or `check`
reporting the variant complete), then {runs} rounds with the order rotated between rounds; the tables
show medians of wall time of the whole process (Python start-up, imports and manifest included for
`wan`), MB/s = 10^6 bytes/s over the median. `sha256sum` and `openssl` hash the files one after another
in one process. A coreutils `sha256sum` not linked to OpenSSL (as Debian's) uses its own C code, without
the CPU's SHA instructions; `openssl dgst` runs the code Python's hashlib uses, so it is the reference for
what one thread can do. The rows marked "proposed" run the same `wan models check` with the change proposed in
the script (`sha256_readinto`, `hash_files`) patched in at start-up. The loops run in this process on
the same files, in the same cache state, interleaved the same way."""


@dataclass(frozen=True)
class StateResult:
    """The timings of one page cache state."""

    state: str  # "warm" or "cold"
    processes: tuple[Timing, ...]
    loops: tuple[Timing, ...]

    def ratio(self) -> float:
        """`wan models check --deep` throughput over `sha256sum`'s."""
        by_label = {t.label: t for t in self.processes}
        return by_label[SHA256SUM].median / by_label[WAN].median


def render(machine: str, plan: Plan, results: Sequence[StateResult], note: str | None) -> str:
    """The Markdown section, markers included: machine, method, the goal, and the tables of each state."""
    method = METHOD.replace("\n", " ").format(
        files=plan.files, size=plan.file_bytes // MiB, total=plan.total_bytes / 2**30, runs=plan.runs
    )
    goal_rows = [
        f"| {WAN} throughput / {SHA256SUM} throughput, page cache {r.state} | >= {GOAL_RATIO:g}x "
        f"| {r.ratio():.2f}x | {'**met**' if r.ratio() >= GOAL_RATIO else '**not met**'} |"
        for r in results
    ]
    parts = [
        BEGIN,
        "## `wan models check --deep` against `sha256sum`",
        "",
        (f"Generated by `benchmarks/bench_check.py` on {time.strftime('%Y-%m-%d')}. Absolute numbers move "
        "between runs and machines; compare the ratios, which come from one run with the cases interleaved."),
        "",
        f"**Machine:** {machine}.",
        "",
        method,
        "",
        *([f"**Warning:** {note}; the warm state may not hold.", ""] if note else []),
        "**Goal**",
        "",
        "| goal | target | measured | met |",
        "|---|---|---|---|",
        *goal_rows,
    ]
    for result in results:
        sha256sum = next(t for t in result.processes if t.label == SHA256SUM)
        parts += [
            "",
            f"### Whole processes, page cache {result.state} ({plan.runs} runs each)",
            "",
            f"`x`: the row's throughput over {SHA256SUM}'s.",
            "",
            "| command | median s | MB/s | x |",
            "|---|--:|--:|--:|",
            *[
                f"| {t.label} | {t.median:.3f} | {t.mb_per_s(plan.total_bytes):.0f} "
                f"| {sha256sum.median / t.median:.2f} |"
                for t in result.processes
            ],
            "",
            f"### Hashing loops in process, page cache {result.state} ({plan.runs} runs each)",
            "",
            "`x`: the row's throughput over the current `store.sha256_of`'s.",
            "",
            "| loop | median s | MB/s | x |",
            "|---|--:|--:|--:|",
            *[
                f"| {t.label} | {t.median:.3f} | {t.mb_per_s(plan.total_bytes):.0f} "
                f"| {result.loops[0].median / t.median:.2f} |"
                for t in result.loops
            ],
        ]
    parts.append(END)
    return "\n".join(parts) + "\n"


# -- main ----------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK.files} x {QUICK.file_bytes // MiB} MiB")
    parser.add_argument("--write", type=Path, metavar="MD", help=f"replace the {SECTION} section in MD")
    parser.add_argument("--dir", type=Path, help="where to build the store (default: system temp; not tmpfs)")
    parser.add_argument(
        "--cache", choices=("warm", "cold", "both"), default="warm", help="page cache state (default: warm)"
    )
    parser.add_argument("--runs", type=int, help="timed rounds (default 3)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["--patched-check"]:  # the benchmark's own subprocess: see run_patched_check
        run_patched_check(int(args_list[1]), args_list[3:])
        return
    args = parse_args(args_list)
    plan = QUICK if args.quick else FULL
    if args.runs:
        plan = Plan(plan.files, plan.file_bytes, args.runs)
    states = ["warm", "cold"] if args.cache == "both" else [args.cache]
    with tempfile.TemporaryDirectory(prefix="wan-bench-check-", dir=args.dir) as tmp:
        work = Path(tmp)
        hermetic_environment(work)
        listed = build_mirror(work, plan)
        folder = ensure_store()
        shutil.rmtree(work / "mirror")  # only the store's copy is read from here on
        files = [folder / relative for relative in listed]
        digests = {folder / relative: digest for relative, digest in listed.items()}
        note = check_memory(plan) if "warm" in states else None
        cases = process_cases(files, digests)
        results = []
        for state in states:
            cold = state == "cold"
            if not cold:
                warm_up(files, digests)
            processes = time_processes(cases, files, plan.runs, cold)
            loops = time_loops(files, plan.runs, cold)
            results.append(StateResult(state, tuple(processes), tuple(loops)))
        section = render(machine_description(work), plan, results, note)
    print(section, end="")
    if args.write:
        write_section(args.write, SECTION, section)


if __name__ == "__main__":
    main()
