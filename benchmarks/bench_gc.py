"""`wan models gc --dry-run` on a store of 10,000 blobs, in process and as a process, and a real gc once.

A gc plan reads the whole store: a `stat` of every blob, every state record, and a walk of every variant
folder (each file's inode tells which blob it links, and which bytes would go with the folder). This
benchmark builds such a store directly (blobs named by their sha256, variant folders of hard links to
them, state records with their last use spread over 60 days, some blobs shared by many variants, a few
variants pinned) and times the plan of a realistic gc (`--ttl 30d` and `--max-bytes` of half the store):

* in process: `wanstudio.gc(dry_run=True, ...)`;
* as a process: `wan models gc --dry-run ... --json`, against `python -c pass` as the floor;
* for reference, huggingface_hub's own cache gc plan on a cache of as many files: `scan_cache_dir()` and
  `delete_revisions(...)` of the revisions older than 30 days (its `expected_freed_size`).

Then one real gc runs on the store, and the bytes it reports are checked against the change of the
allocated blocks of every inode under MODELS_ROOT. The store is built once and stays in the page cache,
so the timings are of a warm metadata cache (a gc right after other work on the store).

    .venv/bin/python benchmarks/bench_gc.py [--quick] [--write docs/benchmarks.md] [--dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import wanstudio
from _report import Samples, machine_basics, markers, write_section
from wanstudio.orchestrator.layout import StoreLayout
from wanstudio.orchestrator.store import CommittedFile, VariantRecord

SECTION = "gc"
BEGIN, END = markers(SECTION)
GOAL_SECONDS = 1.0

BLOBS = 10_000
SHARED_BLOBS = 200  # a pool of files (text encoders, VAEs) that many variants link
SHARED_PER_VARIANT = 5
OWN_PER_VARIANT = 25
VARIANTS = (BLOBS - SHARED_BLOBS) // OWN_PER_VARIANT  # 392 variants of 30 files: 11,760 links
BLOB_BYTES = 1024  # what gc reads is metadata: the size of the files does not change its work
PIN_EVERY = 50
DAYS = 60
TTL = "30d"


@dataclass(frozen=True)
class Repetitions:
    calls: int  # timed in-process plans
    processes: int  # timed `wan` processes


FULL = Repetitions(calls=10, processes=7)
QUICK = Repetitions(calls=3, processes=3)


# -- the stores (not timed) ----------------------------------------------------------------------------------


def build_store(root: Path, rng: random.Random) -> int:
    """Blobs, variant folders of hard links, state records and locks, written as ensures would leave them.

    Returns the store's bytes (allocated bytes of its blobs) for the `--max-bytes` of the timed gc.
    """
    layout = StoreLayout(root)
    layout.tmp.mkdir(parents=True)  # where ensures stage variants, and gc renames them before deleting
    blobs: list[str] = []
    for _ in range(BLOBS):
        data = rng.randbytes(BLOB_BYTES)
        digest = hashlib.sha256(data).hexdigest()
        path = layout.blob(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, 0o444)
        _lock(layout.blob_lock(digest))
        blobs.append(digest)
    shared, own = blobs[:SHARED_BLOBS], blobs[SHARED_BLOBS:]
    now = time.time()
    for index in range(VARIANTS):
        family = "wan22" if index % 2 else "other"
        model_id, variant = f"bench-{index:03d}@1.0.0", ("bf16", "int8")[index % 2]
        mine = own[index * OWN_PER_VARIANT:(index + 1) * OWN_PER_VARIANT]
        digests = mine + rng.sample(shared, SHARED_PER_VARIANT)
        files = tuple(
            CommittedFile(f"{component}/part-{n:02d}.safetensors", BLOB_BYTES, digest)
            for n, (component, digest) in enumerate(zip(_components(len(digests)), digests))
        )
        folder = layout.variant_dir(family, model_id, variant)
        for file in files:
            target = folder / file.path
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(layout.blob(file.sha256), target)
        _lock(layout.variant_lock(family, model_id, variant))
        state = layout.state_file(family, model_id, variant)
        state.parent.mkdir(parents=True, exist_ok=True)
        record = VariantRecord(model_id, family, variant, files, committed_at=now)
        state.write_text(json.dumps(record.to_json(), indent=1, sort_keys=True))
        used = now - rng.uniform(0, DAYS * 86400)
        os.utime(state, (used, used))
        if index % PIN_EVERY == 0:
            layout.pin_file(family, model_id, variant).write_text("{}")
    return sum(os.stat(layout.blob(d)).st_blocks * 512 for d in blobs)


def _lock(path: Path) -> None:
    """The lock file and holder note an ensure leaves behind (gc takes the same locks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    path.with_name(path.name + ".holder").write_text(json.dumps({"pid": 1, "host": "bench", "since": 0}))


def _components(count: int) -> list[str]:
    names = ("transformer", "transformer_2", "text_encoder", "vae", "scheduler", "tokenizer")
    return [names[i % len(names)] for i in range(count)]


def build_hf_cache(cache: Path, rng: random.Random) -> int:
    """A Hugging Face cache holding as many files: one repo per variant, 30 files in one snapshot each.

    huggingface_hub keeps blobs per repo (no sharing across repos), so it holds 11,760 blobs here.
    Layout: `models--org--name/{blobs,snapshots/<commit>,refs/main}`, snapshot files as relative symlinks.
    Returns the number of revisions older than the TTL, as `scan_cache_dir` sees them.
    """
    now = time.time()
    for index in range(VARIANTS):
        repo = cache / f"models--bench--model-{index:03d}"
        commit = hashlib.sha1(str(index).encode()).hexdigest()
        snapshot = repo / "snapshots" / commit
        (repo / "blobs").mkdir(parents=True)
        for n in range(OWN_PER_VARIANT + SHARED_PER_VARIANT):
            data = rng.randbytes(BLOB_BYTES)
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            link = snapshot / f"part-{n:02d}.safetensors"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
        used = now - rng.uniform(0, DAYS * 86400)
        for path in (snapshot, *snapshot.iterdir(), *(repo / "blobs").iterdir()):
            os.utime(path, (used, used), follow_symlinks=False)
    return sum(1 for revision in _hf_old_revisions(cache))


def _hf_old_revisions(cache: Path) -> list[str]:
    from huggingface_hub import scan_cache_dir

    cutoff = time.time() - 30 * 86400
    info = scan_cache_dir(cache)
    return [rev.commit_hash for repo in info.repos for rev in repo.revisions if rev.last_modified < cutoff]


# -- timing --------------------------------------------------------------------------------------------------


def time_calls(label: str, call: Callable[[], object], runs: int) -> Samples:
    call()  # untimed: imports, first touch
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return Samples(label, tuple(samples))


def time_process(label: str, argv: list[str], runs: int) -> Samples:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def run() -> float:
        start = time.perf_counter_ns()
        done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
        return (time.perf_counter_ns() - start) / 1e6

    run()
    return Samples(label, tuple(run() for _ in range(runs)))


def allocated_under(root: Path) -> int:
    seen: dict[tuple[int, int], int] = {}
    for folder, dirs, files in os.walk(root):
        for name in (".", *dirs, *files):
            st = os.lstat(os.path.join(folder, name))
            seen[(st.st_dev, st.st_ino)] = st.st_blocks * 512
    return sum(seen.values())


# -- report --------------------------------------------------------------------------------------------------


def render(machine: str, timings: Sequence[Samples], plan: wanstudio.GcReport, real: dict[str, float],
           hf_revisions: int, reps: Repetitions, max_bytes: int) -> str:
    api, process, bare, hf = timings
    equal = real["reclaimed"] == real["measured"]
    worst = max(api.median, process.median) / 1000
    method = (
        f"**Method.** A store is built directly in a temporary folder: {BLOBS:,} blobs of {BLOB_BYTES} bytes "
        f"named by their sha256, {VARIANTS} variants of {OWN_PER_VARIANT + SHARED_PER_VARIANT} files in two "
        f"families (each variant folder a tree of hard links: {OWN_PER_VARIANT} blobs of its own and "
        f"{SHARED_PER_VARIANT} drawn from a pool of {SHARED_BLOBS} that many variants share, "
        f"{VARIANTS * (OWN_PER_VARIANT + SHARED_PER_VARIANT):,} links), a state record per variant with its "
        f"last use spread over {DAYS} days, and every {PIN_EVERY}th variant pinned. The timed plan is "
        f"`--dry-run --ttl {TTL} --max-bytes {max_bytes}` (half the store): it stats every blob, reads every "
        "record and walks every variant folder. In process: `wanstudio.gc(dry_run=True, ...)`, once untimed, "
        f"then {reps.calls} timed calls. As a process: `wan models gc --dry-run ... --json`, once untimed "
        f"(bytecode written), then {reps.processes} timed runs, wall time. For reference, huggingface_hub's "
        f"cache gc plan on a cache of {VARIANTS} repos of {OWN_PER_VARIANT + SHARED_PER_VARIANT} files "
        f"({VARIANTS * (OWN_PER_VARIANT + SHARED_PER_VARIANT):,} blobs: it shares none across repos): "
        "`scan_cache_dir()` then `delete_revisions(...)` of the revisions older than 30 days. Everything is "
        "in the page cache (the stores were just written): these are warm-metadata timings. Last, one real "
        "gc runs with the same options, and the bytes it reports are compared with the change of the "
        "allocated blocks of every inode under MODELS_ROOT."
    )
    rows = [
        f"| {t.label} | {t.median:.1f} | {t.worst:.1f} |" for t in (api, process, bare, hf)
    ]
    return "\n".join([
        BEGIN,
        f"## gc: a dry run on a store of {BLOBS:,} blobs",
        "",
        f"Generated by `benchmarks/bench_gc.py` on {time.strftime('%Y-%m-%d')}. Absolute numbers move "
        "between runs and machines.",
        "",
        f"**Machine:** {machine}.",
        "",
        method,
        "",
        "**Goal**",
        "",
        "| goal | target | measured | met |",
        "|---|---|---|---|",
        f"| `gc --dry-run` on {BLOBS:,} blobs, as the Python API and as the `wan` process "
        f"| < {GOAL_SECONDS:g} s "
        f"| {api.median:.0f} ms in process, {process.median:.0f} ms as a process (medians) "
        f"| {'**met**' if worst < GOAL_SECONDS else '**not met**'} |",
        "",
        "### Sampless (ms)",
        "",
        "| what | median ms | worst ms |",
        "|---|--:|--:|",
        *rows,
        "",
        "### What the plan and the real gc did",
        "",
        f"The plan: {len(plan.removed)} variants to remove ({sum(r.reason == 'ttl' for r in plan.removed)} "
        f"unused for over {TTL}, the rest to get under `--max-bytes`), {len(plan.kept_pinned)} pinned kept, "
        f"{plan.reclaimed_bytes:,} bytes to reclaim; store {plan.store_bytes_before:,} -> "
        f"{plan.store_bytes_after:,} bytes. huggingface_hub's plan covered {hf_revisions} revisions older "
        "than 30 days.",
        "",
        f"The real gc took {real['seconds'] * 1000:.0f} ms, removed {int(real['removed'])} variants and "
        f"reported {int(real['reclaimed']):,} bytes reclaimed; the allocated blocks under MODELS_ROOT went "
        f"down by {int(real['measured']):,} bytes ({'equal' if equal else 'NOT equal'}).",
        END,
    ]) + "\n"


# -- main ----------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions: a few seconds, noisier")
    parser.add_argument("--write", type=Path, metavar="MD", help=f"replace the {SECTION} section in MD")
    parser.add_argument("--dir", type=Path, help="where to build the temporary stores (default: system temp)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    reps = QUICK if args.quick else FULL
    rng = random.Random(20)
    with tempfile.TemporaryDirectory(prefix="wan-bench-gc-", dir=args.dir) as tmp:
        work = Path(tmp)
        for name in [n for n in os.environ if n.startswith(("HF_", "WAN_"))]:
            del os.environ[name]
        os.environ["MODELS_ROOT"] = str(work / "models")
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_HOME"] = str(work / "hf-home")
        store_bytes = build_store(work / "models", rng)
        hf_revisions = build_hf_cache(work / "hf-cache", rng)
        max_bytes = store_bytes // 2
        options = ["--dry-run", "--ttl", TTL, "--max-bytes", str(max_bytes), "--json"]
        script = Path(sys.executable).with_name("wan")
        wan = [str(script)] if script.exists() else [sys.executable, "-m", "wanstudio"]

        def api() -> wanstudio.GcReport:
            return wanstudio.gc(dry_run=True, max_bytes=max_bytes, ttl=TTL)

        def hf() -> int:
            from huggingface_hub import scan_cache_dir

            cache = work / "hf-cache"
            strategy = scan_cache_dir(cache).delete_revisions(*_hf_old_revisions(cache))
            return strategy.expected_freed_size

        plan = api()
        if not plan.removed or not plan.kept_pinned:
            raise SystemExit("the plan removes nothing or keeps no pin: the store is not what it should be")
        timings = [
            time_calls("`wanstudio.gc(dry_run=True, ...)` (in process)", api, reps.calls),
            time_process(f"`wan models gc {' '.join(options)}` (process)", [*wan, "models", "gc", *options],
                         reps.processes),
            time_process("`python -c pass` (interpreter start-up)", [sys.executable, "-c", "pass"],
                         reps.processes),
            time_calls("huggingface_hub `scan_cache_dir()` + `delete_revisions(...)` (in process, reference)",
                       hf, reps.calls),
        ]
        before = allocated_under(work / "models")
        start = time.perf_counter()
        done = wanstudio.gc(max_bytes=max_bytes, ttl=TTL)
        seconds = time.perf_counter() - start
        real = {"seconds": seconds, "removed": len(done.removed), "reclaimed": done.reclaimed_bytes,
                "measured": before - allocated_under(work / "models")}
        machine = f"{machine_basics()}; store in {work}"
        section = render(machine, timings, plan, real, hf_revisions, reps, max_bytes)
    print(section, end="")
    if args.write:
        write_section(args.write, SECTION, section)


if __name__ == "__main__":
    main()
