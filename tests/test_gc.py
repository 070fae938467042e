"""`wan models gc`, pin and unpin: what goes first, what never goes, and what the filesystem gets back.

Variants are ensured for real from a local mirror; their last use is set on the state record with
os.utime, as `Store.mark_used` records it. Byte counts are checked against the filesystem itself: the
allocated blocks of every distinct inode under MODELS_ROOT, before and after.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

import wanstudio
from wanstudio import Orchestrator, Settings
from wanstudio.orchestrator._fsutil import unique_name
from wanstudio.orchestrator._locks import hold_lock
from wanstudio.orchestrator.gc import execute_gc, plan_gc
from wanstudio.orchestrator.layout import StoreLayout
from wanstudio.orchestrator.store import Store

from conftest import run_wan, sha256_hex, write_model

KiB = 1024
DAY = 86400.0
SHARED = os.urandom(300 * KiB)  # the same file (a VAE, say) in models a and b


def _add(
    mirror: Path, manifest: Path, model_id: str, size: int, *, family: str = "test", shared: bool = False
) -> None:
    files = {"model_index.json": model_id.encode(), "transformer/weights.bin": os.urandom(size)}
    if shared:
        files["vae/weights.bin"] = SHARED
    write_model(mirror, manifest, files, model_id=model_id, family=family)


@pytest.fixture
def three(mirror: Path, manifest_path: Path, models_root: Path) -> Path:
    """Models a, b, c, all ensured: 200, 248 and 152 KiB of their own and a 4 KiB index each; a and b
    share 300 KiB more. Last used: a 40 days ago, c 10 days ago, b now."""
    _add(mirror, manifest_path, "a@1.0.0", 200 * KiB, shared=True)
    _add(mirror, manifest_path, "b@1.0.0", 248 * KiB, shared=True)
    _add(mirror, manifest_path, "c@1.0.0", 152 * KiB)
    for name in "abc":
        wanstudio.ensure(name)
    _last_used(models_root, "a@1.0.0", days_ago=40)
    _last_used(models_root, "c@1.0.0", days_ago=10)
    return models_root


def _state(root: Path, model_id: str, family: str = "test", variant: str = "base") -> Path:
    return StoreLayout(root).state_file(family, model_id, variant)


def _folder(root: Path, model_id: str, family: str = "test") -> Path:
    return root / family / model_id / "base"


def _last_used(root: Path, model_id: str, *, days_ago: float, family: str = "test") -> None:
    when = time.time() - days_ago * DAY
    os.utime(_state(root, model_id, family), (when, when))


def _allocated(root: Path) -> int:
    """Allocated bytes of every distinct inode under `root`: what the store costs the filesystem."""
    seen: dict[tuple[int, int], int] = {}
    for path in [root, *root.rglob("*")]:
        st = os.lstat(path)
        seen[(st.st_dev, st.st_ino)] = st.st_blocks * 512
    return sum(seen.values())


def _snapshot(root: Path) -> dict[str, tuple[int, int, int, int, int]]:
    """Every entry under `root` with its type, size, mtime, inode and link count."""
    result = {}
    for path in [root, *root.rglob("*")]:
        st = os.lstat(path)
        entry = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino, st.st_nlink)
        result[path.relative_to(root).as_posix()] = entry
    return result


def _blob(root: Path, data: bytes) -> Path:
    return StoreLayout(root).blob(sha256_hex(data))


def _gc(*args: str, env: dict[str, str] | None = None) -> dict:
    result = run_wan("models", "gc", *args, "--json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    document = result.json
    assert document["schema"] == "wan.models.gc/1"
    return document


def _removed(document: dict) -> list[str]:
    return [item["id"] for item in document["removed"]]


# -- what goes, in what order -------------------------------------------------------------------------------


def test_least_recently_used_go_first_until_the_store_fits(three: Path) -> None:
    before = _gc("--dry-run")["store_bytes"]["before"]
    a_alone = _gc("--dry-run", "--max-bytes", str(before - 1))
    assert _removed(a_alone) == ["a@1.0.0"] and a_alone["dry_run"] is True
    assert [item["reason"] for item in a_alone["removed"]] == ["max_bytes"]

    report = _gc("--max-bytes", str(a_alone["store_bytes"]["after"] - 1))  # a byte less than a alone leaves
    assert _removed(report) == ["a@1.0.0", "c@1.0.0"]  # a (40 days), then c (10 days); b was used now
    assert report["dry_run"] is False and report["limits"][0]["met"] is True
    assert not _folder(three, "a@1.0.0").exists() and not _folder(three, "c@1.0.0").exists()
    assert not _state(three, "a@1.0.0").exists()
    assert wanstudio.status("b").state == "complete"
    assert wanstudio.status("c").state == "missing"
    assert wanstudio.status("a").state == "partial"  # the file it shares with b is still stored


def test_ttl_removes_what_was_not_used_for_that_long(three: Path) -> None:
    assert _removed(_gc("--ttl", "30d")) == ["a@1.0.0"]
    report = _gc("--ttl", "5d")
    assert _removed(report) == ["c@1.0.0"] and report["removed"][0]["reason"] == "ttl"
    assert _removed(_gc("--ttl", "1h")) == []  # b was used a moment ago


def test_every_ensure_counts_as_a_use_warm_ones_too(three: Path) -> None:
    Orchestrator(Settings.from_env()).ensure("a")  # warm: nothing to fetch, but a use all the same
    assert time.time() - _state(three, "a@1.0.0").stat().st_mtime < 60
    assert _removed(_gc("--ttl", "5d")) == ["c@1.0.0"]


def test_no_limit_removes_no_variant(three: Path) -> None:
    report = _gc()
    assert report["removed"] == [] and report["limits"] == []
    text = run_wan("models", "gc", "--dry-run")
    assert text.returncode == 0 and "no limit given" in text.stdout


def test_max_bytes_defaults_to_the_store_quota(three: Path) -> None:
    before = _gc("--dry-run")["store_bytes"]["before"]
    report = _gc(env={"WAN_QUOTA_BYTES": str(before - 1)})
    assert _removed(report) == ["a@1.0.0"]
    assert report["limits"][0]["max_bytes"] == before - 1


def test_a_family_over_its_quota_loses_its_own_least_recently_used(
    three: Path, mirror: Path, manifest_path: Path
) -> None:
    _add(mirror, manifest_path, "x@1.0.0", 100 * KiB, family="other")
    wanstudio.ensure("x")
    _last_used(three, "x@1.0.0", days_ago=100, family="other")  # the oldest of all, but not over its quota
    report = _gc(env={"WAN_FAMILY_QUOTAS": "test=750K,other=1G"})  # test holds 912K: a, b, c, shared once
    assert _removed(report) == ["a@1.0.0"]  # a gives back 204K of its own; the shared 300K stays for b
    assert {item["reason"] for item in report["removed"]} == {"family_quota"}
    family = next(limit for limit in report["limits"] if limit["family"] == "test")
    assert family["bytes_before"] == 912 * KiB and family["bytes_after"] == 708 * KiB and family["met"]
    assert _folder(three, "x@1.0.0", "other").is_dir()


def test_variant_option_limits_the_candidates(three: Path, mirror: Path, manifest_path: Path) -> None:
    write_model(mirror, manifest_path, {"w.bin": os.urandom(64 * KiB)}, model_id="q@1.0.0", variant="int8")
    wanstudio.ensure("q", "int8")  # used now: newer than a and c, but the only int8 variant
    assert _removed(_gc("--variant", "int8", "--max-bytes", "0", "--dry-run")) == ["q@1.0.0"]
    unknown = run_wan("models", "gc", "--variant", "fp61", "--json")
    assert unknown.returncode == 13 and unknown.json["error"]["code"] == "MODEL_NOT_FOUND"
    assert "int8" in unknown.json["error"]["message"]


# -- pins ----------------------------------------------------------------------------------------------------


def test_pinned_variants_are_never_removed(three: Path) -> None:
    pinned = run_wan("models", "pin", "a", "--json")
    assert pinned.returncode == 0, pinned.stderr
    assert pinned.json == {"schema": "wan.models.pin/1", "id": "a@1.0.0", "variant": "base", "pinned": True,
                           "changed": True, "state": "complete", "path": str(_folder(three, "a@1.0.0"))}
    assert wanstudio.status("a").pinned

    report = _gc("--max-bytes", "0", "--ttl", "1s")
    assert _removed(report) == ["c@1.0.0", "b@1.0.0"]
    assert report["kept_pinned"] == [
        {"id": "a@1.0.0", "variant": "base", "family": "test",
         "last_used": report["kept_pinned"][0]["last_used"], "would_remove_for": "ttl"}
    ]
    assert report["limits"][0]["met"] is False  # what is left is pinned
    assert wanstudio.status("a").state == "complete"
    assert _blob(three, SHARED).exists()  # b is gone, but pinned a still uses the shared file

    again = run_wan("models", "pin", "a")
    assert again.returncode == 0 and "already pinned" in again.stdout
    unpinned = run_wan("models", "unpin", "a", "--json")
    assert unpinned.json["pinned"] is False and unpinned.json["changed"] is True
    assert _removed(_gc("--max-bytes", "0")) == ["a@1.0.0"]
    assert not _blob(three, SHARED).exists()


def test_pin_before_download_and_python_api(mirror: Path, manifest_path: Path, models_root: Path) -> None:
    _add(mirror, manifest_path, "a@1.0.0", 10 * KiB)
    assert wanstudio.pin("a").pinned and wanstudio.status("a").state == "missing"
    wanstudio.ensure("a")
    assert wanstudio.status("a").pinned  # the commit wrote the record; the pin stayed
    assert wanstudio.gc(max_bytes=0).removed == ()
    assert not wanstudio.unpin("a").pinned
    assert [r.id for r in wanstudio.gc(max_bytes=0).removed] == ["a@1.0.0"]
    missing = run_wan("models", "pin", "nope", "--json")
    assert missing.returncode == 13 and missing.json["error"]["code"] == "MODEL_NOT_FOUND"


# -- bytes ---------------------------------------------------------------------------------------------------


def test_shared_blobs_are_counted_once_and_kept_while_any_variant_uses_them(three: Path) -> None:
    blobs = [p for p in (three / ".wan" / "blobs").rglob("*") if p.is_file()]
    report = _gc("--dry-run")
    assert report["store_bytes"]["before"] == sum(p.stat().st_blocks * 512 for p in blobs)
    assert len(blobs) == 3 * 2 + 1  # two files of each model's own, and the shared one once

    a = _gc("--max-bytes", str(report["store_bytes"]["before"] - 1))
    assert _removed(a) == ["a@1.0.0"]
    assert a["removed"][0]["bytes"] < len(SHARED)  # the shared file did not go with a
    assert _blob(three, SHARED).exists()
    assert (_folder(three, "b@1.0.0") / "vae" / "weights.bin").read_bytes() == SHARED

    b = _gc("--max-bytes", "0", "--variant", "base")
    assert _removed(b) == ["c@1.0.0", "b@1.0.0"]
    assert b["removed"][1]["bytes"] > len(SHARED)  # the last user takes the shared file with it
    assert not _blob(three, SHARED).exists()


def test_a_dry_run_changes_nothing_and_predicts_the_real_run(three: Path) -> None:
    layout = StoreLayout(three)
    _orphan_and_leftovers(layout)
    before = _snapshot(three)
    planned = _gc("--dry-run", "--max-bytes", "0")
    assert _snapshot(three) == before  # not a lock file, not an mtime
    done = _gc("--max-bytes", "0")
    assert planned["reclaimed_bytes"] == done["reclaimed_bytes"] > 0
    def sizes(report: dict) -> list[tuple[str, int]]:
        return [(r["id"], r["bytes"]) for r in report["removed"]]

    assert sizes(planned) == sizes(done)
    assert planned["orphan_blobs"] == done["orphan_blobs"] and planned["leftovers"] == done["leftovers"]


def test_reclaimed_bytes_are_what_the_filesystem_gave_back(three: Path) -> None:
    layout = StoreLayout(three)
    _orphan_and_leftovers(layout)
    allocated_before = _allocated(three)
    report = _gc("--max-bytes", "0")
    assert _removed(report) == ["a@1.0.0", "c@1.0.0", "b@1.0.0"]
    assert allocated_before - _allocated(three) == report["reclaimed_bytes"]
    assert report["store_bytes"]["after"] == 0 and not any(p.is_file() for p in layout.blobs.rglob("*"))


def _orphan_and_leftovers(layout: StoreLayout) -> dict[str, Path]:
    """A blob no variant uses, a download stopped two days ago, a fresh one, and a dead process's staging."""
    orphan_data = os.urandom(70 * KiB)
    orphan = layout.blob(sha256_hex(orphan_data))
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(orphan_data)
    old = time.time() - 2 * DAY
    layout.partial.mkdir(parents=True, exist_ok=True)
    stale = layout.partial_file("f" * 64)
    stale.write_bytes(os.urandom(90 * KiB))
    stale.with_name(stale.name + ".journal").write_text("wan-partial 1\n")
    for path in (stale, stale.with_name(stale.name + ".journal")):
        os.utime(path, (old, old))
    fresh = layout.partial_file("e" * 64)
    fresh.write_bytes(os.urandom(20 * KiB))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    staging = layout.tmp / unique_name("stage").replace(f"-{os.getpid()}-", f"-{int(dead.stdout)}-")
    (staging / "vae").mkdir(parents=True)
    (staging / "vae" / "x.bin").write_bytes(os.urandom(30 * KiB))
    return {"orphan": orphan, "stale": stale, "fresh": fresh, "staging": staging}


def test_orphans_and_stale_leftovers_are_reported_apart_and_removed(three: Path) -> None:
    layout = StoreLayout(three)
    made = _orphan_and_leftovers(layout)
    only_variant = _gc("--variant", "base")  # a gc limited to a variant name leaves them alone
    assert only_variant["orphan_blobs"]["count"] == 0 and only_variant["leftovers"] == []
    report = _gc()
    assert report["removed"] == []
    assert report["orphan_blobs"] == {"count": 1, "bytes": 72 * KiB}
    assert sorted((x["kind"], x["path"]) for x in report["leftovers"]) == [
        ("partial", f".wan/partial/{'f' * 64}.part"),
        ("tmp", made["staging"].relative_to(three).as_posix()),
    ]
    assert not made["orphan"].exists() and not made["stale"].exists() and not made["staging"].exists()
    assert made["fresh"].exists()  # a download touched today may still be resumed


# -- safety --------------------------------------------------------------------------------------------------


def test_a_variant_whose_lock_another_process_holds_is_skipped(three: Path) -> None:
    lock = StoreLayout(three).variant_lock("test", "a@1.0.0", "base")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from wanstudio.orchestrator._locks import hold_lock\n"
         f"with hold_lock(Path({str(lock)!r}), timeout=5, what='test'):\n"
         "    print('held', flush=True); sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        report = _gc("--max-bytes", "0")
    finally:
        holder.communicate("done\n", timeout=30)
    assert _removed(report) == ["c@1.0.0", "b@1.0.0"]
    assert report["skipped"] == [{"id": "a@1.0.0", "variant": "base", "family": "test",
                                  "reason": report["skipped"][0]["reason"]}]
    assert f"pid {holder.pid}" in report["skipped"][0]["reason"]
    assert wanstudio.check("a", deep=True).state == "complete"  # its files, shared one included, all there
    assert _blob(three, SHARED).exists()
    assert report["reclaimed_bytes"] == sum(item["bytes"] for item in report["removed"])


def test_a_variant_used_or_pinned_after_the_plan_is_kept(three: Path) -> None:
    store = Store(three)
    plan = plan_gc(store, max_bytes=0)
    os.utime(_state(three, "a@1.0.0"))  # an ensure used it meanwhile
    wanstudio.pin("c")
    with hold_lock(StoreLayout(three).variant_lock("test", "b@1.0.0", "base"), timeout=1, what="test"):
        report = execute_gc(store, plan)
    assert report.removed == ()
    assert {(s.id, s.reason.split(":")[0]) for s in report.skipped} == {
        ("a@1.0.0", "used since gc planned its removal"),
        ("c@1.0.0", "pinned since gc planned its removal"),
        ("b@1.0.0", "in use"),
    }
    assert report.reclaimed_bytes == 0 and all(wanstudio.status(m).state == "complete" for m in "abc")


def test_an_ensure_fetches_again_a_blob_gc_removed_under_it(
    mirror: Path, manifest_path: Path, models_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _add(mirror, manifest_path, "a@1.0.0", 20 * KiB, shared=True)
    _add(mirror, manifest_path, "b@1.0.0", 20 * KiB, shared=True)
    wanstudio.ensure("a")
    commit = Store.commit_variant
    calls = []

    def gc_strikes_first(self: Store, *args: object, **kwargs: object) -> Path:
        if not calls:  # between "the shared blob is stored" and linking it, a gc removes it
            os.unlink(_blob(models_root, SHARED))
        calls.append(1)
        return commit(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Store, "commit_variant", gc_strikes_first)
    result = Orchestrator(Settings.from_env()).ensure("b")
    assert len(calls) == 2 and result.sources == {"local": 3}
    assert (result.path / "vae" / "weights.bin").read_bytes() == SHARED


def test_a_removed_variant_comes_back_with_the_next_ensure(three: Path) -> None:
    orchestrator = Orchestrator(Settings.from_env())
    assert orchestrator.ensure("a").warm
    report = orchestrator.gc(max_bytes=0, ttl=None)
    assert len(report.removed) == 3
    again = orchestrator.ensure("a")
    assert not again.warm and again.sources == {"local": 3}


def test_python_api_takes_sizes_and_durations(three: Path) -> None:
    report = wanstudio.gc(dry_run=True, max_bytes="1M", ttl=timedelta(days=30))
    assert isinstance(report, wanstudio.GcReport) and report.dry_run
    assert [r.id for r in report.removed][:1] == ["a@1.0.0"] and report.removed[0].reason == "ttl"
    assert report.reclaimed_bytes == sum(r.bytes for r in report.removed) and report.kept_pinned == ()
    assert [r.id for r in wanstudio.gc(True, ttl="5d").removed] == ["a@1.0.0", "c@1.0.0"]
    with pytest.raises(wanstudio.InvalidParamsError, match="max_bytes"):
        wanstudio.gc(max_bytes="lots")
    with pytest.raises(wanstudio.InvalidParamsError, match="ttl"):
        wanstudio.gc(ttl=-1)


def test_bad_cli_values_name_the_option(three: Path) -> None:
    result = run_wan("models", "gc", "--max-bytes", "12Q", "--json")
    assert result.returncode == 30 and result.json["error"]["code"] == "INVALID_PARAMS"
    assert result.json["error"]["param"] == "--max-bytes"
    assert run_wan("models", "gc", "--ttl", "soon").returncode == 30


def test_text_output_lists_what_goes(three: Path) -> None:
    run_wan("models", "pin", "b")
    result = run_wan("models", "gc", "--dry-run", "--max-bytes", "0")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "dry run: would remove 2 variant(s)" in out
    assert out.index("a@1.0.0 [base]") < out.index("c@1.0.0 [base]")
    assert "kept b@1.0.0 [base]: pinned, would go for max_bytes" in out
    assert "run the same command without --dry-run" in out
    assert _folder(three, "a@1.0.0").is_dir()
