"""Warm ensure: wanstudio against huggingface_hub's offline cache lookup of the same files, in one run.

A warm ensure (every file already present) is what a service or a script pays on every start, so it
should cost next to nothing. The nearest thing huggingface_hub offers is an offline lookup in its cache:
`snapshot_download(repo_id, local_files_only=True)`. This benchmark builds both stores holding the same
files, then times, side by side and interleaved so that drift hits both alike:

* in process, per call: `Orchestrator.ensure` on a reused orchestrator (a long-running process),
  `wanstudio.ensure` (the module-level API, settings read from the environment on every call), `snapshot_download` and a
  loop of `hf_hub_download` over every file, all with nothing to do;
* as processes: `wan models ensure --only ti2v-5B --variant dev` against a `python -c` running
  `snapshot_download(..., local_files_only=True)`, and `python -c pass` as the floor.

Absolute numbers move between runs and machines; the ratios, taken in one run, are what to compare.
Nothing here touches the network: HF_HUB_OFFLINE=1 is set, and HF_HOME points into the temporary folder
so that no token of the user's is read. huggingface_hub reads its HF_* variables once, at import, so it
is imported only inside functions that run after `hermetic_environment` has set them.

    .venv/bin/python benchmarks/bench_warm_ensure.py [--quick] [--write docs/benchmarks.md] [--profile N]
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import wanstudio
from _report import Samples, machine_basics, markers, write_section
from wanstudio import Orchestrator, Settings

MODELS = ("ti2v-5B@2.2.0", "t2v-A14B@2.2.0", "i2v-A14B@2.2.0")
VARIANT = "dev"
CLI_MODEL = "ti2v-5B@2.2.0"  # the model of the headline ratio and of the process timings
HF_ORG = "wanstudio-bench"
SECTION = "warm-ensure"
BEGIN, END = markers(SECTION)

# The per-call goal, and PERFORMANCE.md's target for a whole warm `wan models ensure` process.
GOAL_SPEEDUP = 5.0
GOAL_PROCESS_MS = 80.0

# Files the Hub keeps in Git LFS (its default .gitattributes; any file over 10 MB must be LFS). Their
# cache blobs are named by sha256; every other file's blob by its git blob id.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".model", ".gguf")
LFS_MIN_BYTES = 10 * 1000 * 1000

# Row labels; the tables single some out.
REUSED = "`Orchestrator.ensure` (reused)"
FRESH = "`wanstudio.ensure`"
SNAPSHOT = "`snapshot_download(local_files_only=True)`"
WAN_PROCESS = f"`wan models ensure --only {CLI_MODEL.split('@')[0]} --variant {VARIANT}`"
HF_PROCESS = "`python -c` running `snapshot_download(local_files_only=True)`"
BARE_PROCESS = "`python -c pass` (interpreter start-up)"


@dataclass(frozen=True)
class Repetitions:
    """How many times each thing is timed."""

    calls: int  # timed calls per in-process case
    warmup: int  # untimed calls per in-process case, first
    rounds: int  # the timed calls are spread over this many interleaved rounds
    processes: int  # timed runs per command


FULL = Repetitions(calls=1000, warmup=50, rounds=10, processes=10)
QUICK = Repetitions(calls=200, warmup=20, rounds=5, processes=3)


@dataclass(frozen=True)
class Case:
    """One timed call: what it is, which model it looks up, and the call itself."""

    label: str
    model_id: str
    call: Callable[[], object]


@dataclass(frozen=True)
class Timing:
    """Samples of one case, in nanoseconds."""

    case: Case
    samples_ns: tuple[int, ...]

    @property
    def median_us(self) -> float:
        return statistics.median(self.samples_ns) / 1000

    @property
    def p90_us(self) -> float:
        return statistics.quantiles(self.samples_ns, n=10, method="inclusive")[8] / 1000


@dataclass(frozen=True)
class RepoFile:
    """A file as the Hub lists it: its path, size, git blob id and, for an LFS file, its sha256."""

    path: str
    size: int
    blob_id: str
    lfs_sha256: str | None

    @property
    def etag(self) -> str:
        """The name of its blob in the cache (the ETag the Hub serves it with)."""
        return self.lfs_sha256 or self.blob_id


# -- setup (not timed) -------------------------------------------------------------------------------------


def hermetic_environment(work: Path) -> None:
    """Point both libraries into `work`; cut huggingface_hub off from the network and the user's token."""
    for name in [n for n in os.environ if n.startswith(("HF_", "WAN_")) or n == "TRANSFORMERS_OFFLINE"]:
        del os.environ[name]
    os.environ["MODELS_ROOT"] = str(work / "models")
    os.environ["HF_HOME"] = str(work / "hf-home")
    os.environ["HF_HUB_CACHE"] = str(work / "hf-cache")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"


def ensure_models() -> dict[str, Path]:
    """Ensure every bundled dev model once (copied from inside the package), so later ensures are warm."""
    orchestrator = Orchestrator(Settings.from_env())
    return {model_id: orchestrator.ensure(model_id, VARIANT).path for model_id in MODELS}


def repo_id_for(model_id: str) -> str:
    """The fake Hub repo holding the same files as a wanstudio variant: wanstudio-bench/ti2v-5B-dev."""
    return f"{HF_ORG}/{model_id.split('@')[0]}-{VARIANT}"


def repo_files(folder: Path) -> list[RepoFile]:
    """The files of a variant folder as the Hub would list them, sorted by their '/'-separated path."""
    from huggingface_hub.utils.sha import git_hash

    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        name = path.relative_to(folder).as_posix()
        if name.endswith(LFS_SUFFIXES) or len(data) >= LFS_MIN_BYTES:
            sha256 = hashlib.sha256(data).hexdigest()
            files.append(RepoFile(name, len(data), git_hash(lfs_pointer(sha256, len(data))), sha256))
        else:
            files.append(RepoFile(name, len(data), git_hash(data), None))
    return files


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The pointer file that git holds for an LFS file: the Hub's blob id of an LFS file is the pointer's."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def build_hf_cache(repo_id: str, source: Path, files: Sequence[RepoFile]) -> None:
    """Write `source`'s files into the HF cache as the main-branch snapshot of `repo_id`.

    The layout is huggingface_hub's (https://huggingface.co/docs/huggingface_hub/guides/manage-cache):
    `models--org--name/blobs/<etag>`, `snapshots/<commit>/<path>` as relative symlinks to the blobs, and
    `refs/main` holding the 40-hex commit. huggingface_hub has no offline way to put files into its
    cache, so the tree is written here; the per-commit tree listing that `snapshot_download` records
    (and checks offline, in versions that have it) is written with huggingface_hub's own code.
    """
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    storage = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
    commit = hashlib.sha1("".join(f"{f.path} {f.blob_id}\n" for f in files).encode()).hexdigest()
    for file in files:
        blob = storage / "blobs" / file.etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes((source / file.path).read_bytes())
        pointer = storage / "snapshots" / commit / file.path
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(commit)
    write_tree_listing(storage, commit, files)


def write_tree_listing(storage: Path, commit: str, files: Sequence[RepoFile]) -> None:
    """Record the commit's file listing as `snapshot_download` does (older huggingface_hub keeps none)."""
    try:
        from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache
    except ImportError:
        return
    entries = {
        f.path: TreeCacheEntry(f.size, f.blob_id, f.lfs_sha256, f.size if f.lfs_sha256 else None)
        for f in files
    }
    write_tree_cache(str(storage), commit, entries)


def verify_hf_cache(repo_id: str, source: Path, files: Sequence[RepoFile]) -> None:
    """Fail unless huggingface_hub, offline, finds the repo intact, every file with `source`'s bytes."""
    from huggingface_hub import hf_hub_download, scan_cache_dir, snapshot_download

    snapshot = Path(snapshot_download(repo_id, local_files_only=True))
    for file in files:
        expected = (source / file.path).read_bytes()
        single = Path(hf_hub_download(repo_id, file.path, local_files_only=True))
        if (snapshot / file.path).read_bytes() != expected or single.read_bytes() != expected:
            raise SystemExit(f"HF cache of {repo_id}: {file.path} does not hold the expected bytes")
    info = scan_cache_dir()
    if info.warnings:
        raise SystemExit(f"huggingface_hub finds the cache corrupt: {info.warnings[0]}")
    revisions = [rev for repo in info.repos if repo.repo_id == repo_id for rev in repo.revisions]
    if len(revisions) != 1 or revisions[0].refs != {"main"} or revisions[0].nb_files != len(files):
        raise SystemExit(f"huggingface_hub's cache scan does not see {repo_id}@main with {len(files)} files")


# -- in process --------------------------------------------------------------------------------------------


def in_process_cases(folders: Mapping[str, Path], hf_files: Mapping[str, Sequence[RepoFile]]) -> list[Case]:
    """The four ways of looking up each model; wanstudio's are checked once to be warm."""
    from huggingface_hub import hf_hub_download, snapshot_download

    orchestrator = Orchestrator(Settings.from_env())
    cases: list[Case] = []
    for model_id in MODELS:
        repo_id, paths = repo_id_for(model_id), [f.path for f in hf_files[model_id]]

        def reused(m: str = model_id) -> object:
            return orchestrator.ensure(m, VARIANT)

        def fresh(m: str = model_id) -> object:
            return wanstudio.ensure(m, VARIANT)

        def snapshot(r: str = repo_id) -> object:
            return snapshot_download(r, local_files_only=True)

        def per_file(r: str = repo_id, ps: Sequence[str] = paths) -> object:
            return [hf_hub_download(r, p, local_files_only=True) for p in ps]

        result = orchestrator.ensure(model_id, VARIANT)
        if not result.warm or result.path != folders[model_id] or fresh() != folders[model_id]:
            raise SystemExit(f"the ensure of {model_id} is not warm: the benchmark would time a download")
        cases += [
            Case(REUSED, model_id, reused),
            Case(FRESH, model_id, fresh),
            Case(SNAPSHOT, model_id, snapshot),
            Case(f"`hf_hub_download(local_files_only=True)` x {len(paths)}", model_id, per_file),
        ]
    return cases


def time_in_process(cases: Sequence[Case], reps: Repetitions) -> list[Timing]:
    """Time each call on its own, in interleaved rounds: a slow phase of the machine hits every case."""
    for case in cases:
        for _ in range(reps.warmup):
            case.call()
    samples: list[list[int]] = [[] for _ in cases]
    per_round = max(1, reps.calls // reps.rounds)
    clock = time.perf_counter_ns
    for _ in range(reps.rounds):
        for case, bucket in zip(cases, samples, strict=True):
            for _ in range(per_round):
                start = clock()
                case.call()
                bucket.append(clock() - start)
    return [Timing(case, tuple(bucket)) for case, bucket in zip(cases, samples, strict=True)]


def profile_warm_ensure(calls: int) -> str:
    """A cProfile summary of `calls` warm `Orchestrator.ensure` calls on one orchestrator: where time goes."""
    orchestrator = Orchestrator(Settings.from_env())
    orchestrator.ensure(CLI_MODEL, VARIANT)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        orchestrator.ensure(CLI_MODEL, VARIANT)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(20)
    stats.sort_stats("cumulative").print_stats(25)
    return out.getvalue()


# -- as processes ------------------------------------------------------------------------------------------


def process_commands() -> dict[str, list[str]]:
    """The commands timed as whole processes, by label."""
    script = Path(sys.executable).with_name("wan")
    wan = [str(script)] if script.exists() else [sys.executable, "-m", "wanstudio"]
    short_id = CLI_MODEL.split("@")[0]
    lookup = (
        "from huggingface_hub import snapshot_download; "
        f"snapshot_download({repo_id_for(CLI_MODEL)!r}, local_files_only=True)"
    )
    return {
        WAN_PROCESS: [*wan, "models", "ensure", "--only", short_id, "--variant", VARIANT],
        HF_PROCESS: [sys.executable, "-c", lookup],
        BARE_PROCESS: [sys.executable, "-c", "pass"],
    }


def time_processes(commands: Mapping[str, list[str]], runs: int) -> dict[str, Samples]:
    """Run each command once (writing bytecode), then `runs` times interleaved, timing each whole process.

    PYTHONDONTWRITEBYTECODE is left out of their environment: real installs run from bytecode.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def run(argv: list[str]) -> float:
        start = time.perf_counter_ns()
        done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        elapsed_ms = (time.perf_counter_ns() - start) / 1e6
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
        return elapsed_ms

    for argv in commands.values():
        run(argv)
    samples: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(runs):
        for label, argv in commands.items():
            samples[label].append(run(argv))
    return {label: Samples(label, tuple(values)) for label, values in samples.items()}


# -- the machine -------------------------------------------------------------------------------------------


def machine_description(work: Path) -> str:
    """CPU, cores, memory, kernel, versions and the filesystem of the stores: what the numbers depend on."""
    import huggingface_hub

    return f"{machine_basics()}; huggingface_hub {huggingface_hub.__version__}; stores on {_filesystem_of(work)}"


def _filesystem_of(path: Path) -> str:
    """The type and mount point of the filesystem holding `path`: the longest matching mount."""
    resolved = str(path.resolve())
    best: tuple[str, str] | None = None
    for line in _read("/proc/self/mounts").splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
        if inside and (best is None or len(mount) > len(best[0])):
            best = (mount, fields[2])
    return (
        f"{best[1]} (mount {best[0]}, temp dir {resolved})" if best else f"an unknown filesystem ({resolved})"
    )


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


# -- report ------------------------------------------------------------------------------------------------

METHOD = """\
**Method.** Every bundled dev variant is ensured once into a fresh `MODELS_ROOT` (not timed). The same
files go into a fresh Hugging Face cache as the `main` snapshot of one repo per model (`{repo}`, ...), in
huggingface_hub's layout: `blobs/` named by sha256 (LFS files) or git blob id, `snapshots/<commit>/`
relative symlinks, `refs/main`, and the per-commit tree listing that `snapshot_download` records. Before
anything is timed, the cache is checked offline with `snapshot_download`, `hf_hub_download` (same bytes)
and `scan_cache_dir` (no warnings). `HF_HUB_OFFLINE=1` and a private `HF_HOME` keep the network and any
token out. Every timed lookup finds everything present. What each side checks per call differs, and is stated
here so the ratio is read right: a wanstudio orchestrator checks a variant fully once (its state record
against the manifest, then the size of every file) and afterwards trusts that check while the manifest,
the state record and the variant folder are unchanged (two `stat` calls), with a full check again at
least every minute; `snapshot_download` offline checks that every file of its cached tree listing exists
on every call. In process: each call is timed on its own with
`time.perf_counter_ns`, after {warmup} untimed calls per case; {calls} calls per case, spread over
{rounds} interleaved rounds. As processes: each command runs once first (writing bytecode;
`PYTHONDONTWRITEBYTECODE` is removed from their environment), then {processes} interleaved timed runs,
wall time of the whole process."""


def render(
    machine: str, timings: Sequence[Timing], processes: Mapping[str, Samples], reps: Repetitions
) -> str:
    """The Markdown section, markers included: machine, method, goals and both tables."""
    method = METHOD.replace("\n", " ").format(
        repo=repo_id_for(CLI_MODEL),
        warmup=reps.warmup,
        calls=reps.calls,
        rounds=reps.rounds,
        processes=reps.processes,
    )
    parts = [
        BEGIN,
        "## Warm ensure: wanstudio against huggingface_hub's offline cache lookup",
        "",
        f"Generated by `benchmarks/bench_warm_ensure.py` on {time.strftime('%Y-%m-%d')}. Absolute numbers "
        "move between runs and machines; compare the ratios, which come from one run with the cases "
        "interleaved.",
        "",
        f"**Machine:** {machine}.",
        "",
        method,
        "",
        *goals_table(timings, processes),
        "",
        *calls_table(timings),
        "",
        *processes_table(processes, reps.processes),
        END,
    ]
    return "\n".join(parts) + "\n"


def goals_table(timings: Sequence[Timing], processes: Mapping[str, Samples]) -> list[str]:
    """The two goals, measured, and whether each is met."""
    fresh = {t.case.model_id: t.median_us for t in timings if t.case.label == FRESH}
    snapshot = {t.case.model_id: t.median_us for t in timings if t.case.label == SNAPSHOT}
    speedups = {m: snapshot[m] / fresh[m] for m in MODELS}
    worst = min(speedups.values())
    wan_ms = processes[WAN_PROCESS].median
    above_python = wan_ms - processes[BARE_PROCESS].median
    return [
        "**Goals**",
        "",
        "| goal | target | measured | met |",
        "|---|---|---|---|",
        f"| warm ensure per call: {SNAPSHOT} median / {FRESH} median (below 1: wanstudio is slower) "
        f"| >= {GOAL_SPEEDUP:g}x on every model | {speedups[CLI_MODEL]:.2f}x on {CLI_MODEL}, "
        f"{worst:.2f}x on the worst model | {_met(worst >= GOAL_SPEEDUP)} |",
        f"| warm {WAN_PROCESS} process (PERFORMANCE.md) | < {GOAL_PROCESS_MS:g} ms | {wan_ms:.1f} ms "
        f"({above_python:.1f} ms above `python -c pass`) | {_met(wan_ms < GOAL_PROCESS_MS)} |",
    ]


def calls_table(timings: Sequence[Timing]) -> list[str]:
    """Per-call medians and p90s, each against `wanstudio.ensure` on the same model."""
    fresh = {t.case.model_id: t.median_us for t in timings if t.case.label == FRESH}
    counts = {t.case.model_id: t.case.label.rpartition(" x ")[2] for t in timings if " x " in t.case.label}
    rows = [
        f"| {t.case.model_id} ({counts[t.case.model_id]}) | {t.case.label} | {t.median_us:.1f} "
        f"| {t.p90_us:.1f} | {t.median_us / fresh[t.case.model_id]:.2f} |"
        for t in timings
    ]
    return [
        "### In process, per call (µs)",
        "",
        f"`x`: the row's median over the median of {FRESH} for the same model; above 1, slower than it.",
        "",
        "| model (files) | call | median µs | p90 µs | x |",
        "|---|---|--:|--:|--:|",
        *rows,
    ]


def processes_table(processes: Mapping[str, Samples], runs: int) -> list[str]:
    """Whole-process medians and p90s, against the bare interpreter and against `wan models ensure`."""
    wan_ms = processes[WAN_PROCESS].median
    bare_ms = processes[BARE_PROCESS].median
    rows = [
        f"| {p.label} | {p.median:.1f} | {p.p90:.1f} | {p.median - bare_ms:.1f} "
        f"| {p.median / wan_ms:.2f} |"
        for p in processes.values()
    ]
    return [
        f"### As processes (ms, {runs} runs each)",
        "",
        f"`x`: the row's median over the median of {WAN_PROCESS}.",
        "",
        "| command | median ms | p90 ms | above `python -c pass` | x |",
        "|---|--:|--:|--:|--:|",
        *rows,
    ]


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


# -- main --------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions: a few seconds, noisier")
    parser.add_argument("--write", type=Path, metavar="MD", help=f"replace the {SECTION} section in MD")
    parser.add_argument("--dir", type=Path, help="where to make the temporary stores (default: system temp)")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="cProfile N warm ensures (stderr)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    reps = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="wan-bench-", dir=args.dir) as tmp:
        work = Path(tmp)
        hermetic_environment(work)
        folders = ensure_models()
        hf_files = {model_id: repo_files(folder) for model_id, folder in folders.items()}
        for model_id, folder in folders.items():
            build_hf_cache(repo_id_for(model_id), folder, hf_files[model_id])
            verify_hf_cache(repo_id_for(model_id), folder, hf_files[model_id])
        timings = time_in_process(in_process_cases(folders, hf_files), reps)
        processes = time_processes(process_commands(), reps.processes)
        if args.profile:
            print(profile_warm_ensure(args.profile), file=sys.stderr)
        section = render(machine_description(work), timings, processes, reps)
    print(section, end="")
    if args.write:
        write_section(args.write, SECTION, section)


if __name__ == "__main__":
    main()
