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
* `openssl dgst -sha256 <files>`, where installed: the same SHA-256 code as Python's hashlib, one thread,
  for reference (the goal table gives the ratio against it too).

It also times, in process, the hashing loops: `store.sha256_of` file after file, `store.hash_files` (what
`check --deep` runs: several files at once), and for comparison `read()` of 8 MiB chunks,
`hashlib.file_digest` and `mmap`, which shows where the time goes. Nothing uses the network. Every file
is removed at the end.

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
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from _report import Samples, machine_basics, markers, write_section

from wanstudio.config import ENVIRONMENT_VARIABLES as WAN_VARIABLES
from wanstudio.orchestrator._posix_locks import lock_scope
from wanstudio.orchestrator.store import HASH_CHUNK_BYTES, HASH_THREADS, hash_files, sha256_of

SECTION = "check-deep"
BEGIN, END = markers(SECTION)
GOAL_RATIO = 0.9  # wan models check --deep throughput over sha256sum's (openssl's is reported, no target)
MODEL = "bench@1.0.0"
FAMILY = "bench"
VARIANT = "base"
MiB = 1024 * 1024
CHUNK_MIB = HASH_CHUNK_BYTES // MiB

# Row labels
WAN = "`wan models check --deep`"
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

    cases = {
        WAN: ([*wan_command(), "models", "check", MODEL, "--deep", "--json"], wan_ok),
        SHA256SUM: (["sha256sum", *names], sums_ok),
    }
    if shutil.which("openssl"):
        cases[OPENSSL] = (["openssl", "dgst", "-sha256", *names], sums_ok)
    return cases


def time_processes(
    cases: Mapping[str, Command], files: Sequence[Path], runs: int, cold: bool
) -> list[Samples]:
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
    return [Samples(label, tuple(samples[label])) for label in labels]


def _one_after_another(paths: Sequence[Path]) -> None:
    for path in paths:
        sha256_of(path)


def _hash_files(paths: Sequence[Path]) -> None:
    hash_files(paths)


def _read_chunks(paths: Sequence[Path]) -> None:
    for path in paths:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK_BYTES):
                digest.update(chunk)


def _file_digest(paths: Sequence[Path]) -> None:
    for path in paths:
        with open(path, "rb") as handle:
            hashlib.file_digest(handle, "sha256")


def _mmap(paths: Sequence[Path]) -> None:
    for path in paths:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            hashlib.sha256(view).hexdigest()


LOOPS: dict[str, Callable[[Sequence[Path]], None]] = {  # the first row is the tables' 1.00x
    f"`store.sha256_of`, file after file (`readinto` one {CHUNK_MIB} MiB buffer)": _one_after_another,
    f"`store.hash_files`, {HASH_THREADS} files at once (what `check --deep` runs)": _hash_files,
    f"`read()` of {CHUNK_MIB} MiB chunks, file after file": _read_chunks,
    "`hashlib.file_digest` (256 KiB buffer)": _file_digest,
    "`mmap`, one `update` per file": _mmap,
}


def time_loops(files: Sequence[Path], runs: int, cold: bool) -> list[Samples]:
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
    return [Samples(label, tuple(samples[label])) for label in labels]


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
what one thread can do. `wan models check --deep` hashes up to {threads} files at once (`store.hash_files`,
`HASH_THREADS` on this machine), so it can pass both one-thread tools. The loops run in this process on
the same files, in the same cache state, interleaved the same way."""


@dataclass(frozen=True)
class StateResult:
    """The timings of one page cache state."""

    state: str  # "warm" or "cold"
    processes: tuple[Samples, ...]
    loops: tuple[Samples, ...]

    def ratio(self, against: str = SHA256SUM) -> float | None:
        """`wan models check --deep` throughput over another command's (None where it did not run)."""
        by_label = {t.label: t for t in self.processes}
        return by_label[against].median / by_label[WAN].median if against in by_label else None


def render(machine: str, plan: Plan, results: Sequence[StateResult], note: str | None) -> str:
    """The Markdown section, markers included: machine, method, the goal, and the tables of each state."""
    method = METHOD.replace("\n", " ").format(
        files=plan.files, size=plan.file_bytes // MiB, total=plan.total_bytes / 2**30, runs=plan.runs,
        threads=HASH_THREADS,
    )
    goal_rows = []
    for r in results:
        ratio = r.ratio()
        assert ratio is not None
        goal_rows.append(
            f"| {WAN} throughput / {SHA256SUM} throughput, page cache {r.state} | >= {GOAL_RATIO:g}x "
            f"| {ratio:.2f}x | {'**met**' if ratio >= GOAL_RATIO else '**not met**'} |"
        )
    for r in results:
        reference = r.ratio(OPENSSL)
        if reference is not None:
            goal_rows.append(
                f"| {WAN} throughput / {OPENSSL} throughput, page cache {r.state} | reference, no target "
                f"| {reference:.2f}x | - |"
            )
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
                f"| {t.label} | {t.median:.3f} | {plan.total_bytes / t.median / 1e6:.0f} "
                f"| {sha256sum.median / t.median:.2f} |"
                for t in result.processes
            ],
            "",
            f"### Hashing loops in process, page cache {result.state} ({plan.runs} runs each)",
            "",
            "`x`: the row's throughput over `store.sha256_of` file after file.",
            "",
            "| loop | median s | MB/s | x |",
            "|---|--:|--:|--:|",
            *[
                f"| {t.label} | {t.median:.3f} | {plan.total_bytes / t.median / 1e6:.0f} "
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
    args = parse_args(argv)
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
