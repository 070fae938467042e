"""Quotas and free space, checked before an ensure moves a byte: QUOTA_EXCEEDED, NO_SPACE, and resumes.

The small-disk tests mount a tmpfs of a few MiB as MODELS_ROOT (root only); elsewhere they are skipped,
and the same rules are checked against a reported free space instead.
"""

from __future__ import annotations

import mmap
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

import wanstudio
from wanstudio.orchestrator._partial import PartialDownload
from wanstudio.orchestrator.layout import StoreLayout
from wanstudio.orchestrator.store import sha256_of

from conftest import run_wan, sha256_hex, write_model

KiB, MiB = 1024, 1024 * 1024
SHARED = os.urandom(256 * KiB)


def _add(
    mirror: Path, manifest: Path, model_id: str, size: int, *, family: str = "test", shared: bool = False
) -> None:
    files = {"model_index.json": os.urandom(4 * KiB), "transformer/weights.bin": os.urandom(size)}
    if shared:
        files["vae/weights.bin"] = SHARED
    write_model(mirror, manifest, files, model_id=model_id, family=family)


def _nothing_fetched(root: Path, model_id: str, family: str = "test") -> None:
    partial = StoreLayout(root).partial
    assert not partial.exists() or not any(partial.iterdir())
    assert not (root / family / model_id).exists()


def _suggested_gc(error: dict) -> list[str]:
    """The `wan models gc ...` command of an error's suggestions, run for real (without --dry-run)."""
    text = next(s for s in error["suggestions"] if "wan models gc" in s)
    command = text.split("`")[1]
    assert "--dry-run" in command
    return [word for word in shlex.split(command) if word != "--dry-run"]


def _run_suggested(command: list[str]) -> None:
    env = dict(word.split("=", 1) for word in command if "=" in word and not word.startswith("-"))
    args = [word for word in command if word not in {f"{k}={v}" for k, v in env.items()}]
    assert args[:3] == ["wan", "models", "gc"]
    result = run_wan(*args[1:], "--json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.json["removed"]


# -- quotas --------------------------------------------------------------------------------------------------


def test_store_quota_refuses_an_ensure_and_names_the_gc_that_makes_room(
    mirror: Path, manifest_path: Path, models_root: Path
) -> None:
    _add(mirror, manifest_path, "a@1.0.0", 400 * KiB)
    _add(mirror, manifest_path, "b@1.0.0", 300 * KiB)
    quota = {"WAN_QUOTA_BYTES": "600K"}
    assert run_wan("models", "ensure", "--only", "a", env=quota).returncode == 0  # 404 KiB of 600

    refused = run_wan("models", "ensure", "--only", "b", "--json", env=quota)
    assert refused.returncode == 20
    error = refused.json["error"]
    assert error["code"] == "QUOTA_EXCEEDED"
    assert "b@1.0.0" in error["message"] and "WAN_QUOTA_BYTES" in error["message"]
    assert f"{304 * KiB} bytes" in error["message"]  # what b needs
    assert f"{404 * KiB} bytes" in error["message"] and f"{600 * KiB} bytes" in error["message"]
    _nothing_fetched(models_root, "b@1.0.0")

    command = _suggested_gc(error)
    assert command == ["wan", "models", "gc", "--max-bytes", str(296 * KiB)]  # room for b under the quota
    _run_suggested(command)
    assert run_wan("models", "ensure", "--only", "b", env=quota).returncode == 0
    assert wanstudio.status("a").state == "missing"


def test_family_quota_counts_only_that_family(mirror: Path, manifest_path: Path, models_root: Path) -> None:
    _add(mirror, manifest_path, "a@1.0.0", 400 * KiB)
    _add(mirror, manifest_path, "b@1.0.0", 300 * KiB)
    _add(mirror, manifest_path, "x@1.0.0", 500 * KiB, family="other")
    quotas = {"WAN_FAMILY_QUOTAS": "test=600K"}
    for model in ("x", "a"):
        assert run_wan("models", "ensure", "--only", model, env=quotas).returncode == 0

    refused = run_wan("models", "ensure", "--only", "b", "--json", env=quotas)
    assert refused.returncode == 20
    error = refused.json["error"]
    assert error["code"] == "QUOTA_EXCEEDED" and "family test" in error["message"]
    assert "WAN_FAMILY_QUOTAS" in error["message"] and f"{404 * KiB} bytes" in error["message"]
    _nothing_fetched(models_root, "b@1.0.0")

    command = _suggested_gc(error)
    assert command == ["WAN_FAMILY_QUOTAS=test=" + str(296 * KiB), "wan", "models", "gc"]
    _run_suggested(command)
    assert run_wan("models", "ensure", "--only", "b", env=quotas).returncode == 0
    assert wanstudio.status("x").state == "complete"  # the other family was never a candidate


def test_a_quota_counts_a_shared_blob_once(mirror: Path, manifest_path: Path, models_root: Path) -> None:
    _add(mirror, manifest_path, "a@1.0.0", 100 * KiB, shared=True)
    _add(mirror, manifest_path, "b@1.0.0", 100 * KiB, shared=True)
    wanstudio.ensure("a")  # 4 + 100 + 256 KiB
    exact = {"WAN_QUOTA_BYTES": str((4 + 100 + 256 + 4 + 100) * KiB), "WAN_FAMILY_QUOTAS": "test=464K"}
    result = run_wan("models", "ensure", "--only", "b", "--json", env=exact)
    assert result.returncode == 0, result.stdout  # b needs only its own 104 KiB: the shared file is stored


# -- free space ----------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A 4 MiB tmpfs as MODELS_ROOT; skipped where mounting is not permitted."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root; the reported-free-space tests cover the same rules")
    command = ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    root = mount / "models"
    monkeypatch.setenv("MODELS_ROOT", str(root))
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_no_space_before_anything_is_transferred(small_disk: Path, mirror: Path, manifest_path: Path) -> None:
    _add(mirror, manifest_path, "big@1.0.0", 5 * MiB)
    source = mirror / "test" / "big@1.0.0" / "base"
    digests = {p: sha256_of(p) for p in source.rglob("*") if p.is_file()}

    result = run_wan("models", "ensure", "--only", "big", "--json")
    assert result.returncode == 19, result.stdout + result.stderr
    error = result.json["error"]
    assert error["code"] == "NO_SPACE"
    free = shutil.disk_usage(small_disk).free
    assert f"({5 * MiB + 4 * KiB} bytes) more" in error["message"]  # the file and the index
    assert f"({free} bytes) free" in error["message"]
    assert any("wan models gc" in s for s in error["suggestions"])
    _nothing_fetched(small_disk, "big@1.0.0")
    assert {p: sha256_of(p) for p in source.rglob("*") if p.is_file()} == digests


def test_no_space_names_a_gc_that_makes_room(small_disk: Path, mirror: Path, manifest_path: Path) -> None:
    _add(mirror, manifest_path, "old@1.0.0", 2 * MiB)
    _add(mirror, manifest_path, "new@1.0.0", 2 * MiB)
    assert run_wan("models", "ensure", "--only", "old").returncode == 0
    refused = run_wan("models", "ensure", "--only", "new", "--json")
    assert refused.returncode == 19 and refused.json["error"]["code"] == "NO_SPACE"
    _run_suggested(_suggested_gc(refused.json["error"]))
    assert run_wan("models", "ensure", "--only", "new").returncode == 0


def test_a_resume_on_a_nearly_full_disk_is_allowed(
    small_disk: Path, mirror: Path, manifest_path: Path
) -> None:
    _add(mirror, manifest_path, "big@1.0.0", 3 * MiB)
    data = (mirror / "test" / "big@1.0.0" / "base" / "transformer" / "weights.bin").read_bytes()
    _interrupted_download(small_disk, data, done=MiB)
    filler = small_disk.parent / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - 128 * KiB))
    assert shutil.disk_usage(small_disk).free < len(data)  # a fresh download of it would be refused

    result = run_wan("models", "ensure", "--only", "big", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert wanstudio.check("big", deep=True).state == "complete"
    assert not any(StoreLayout(small_disk).partial.iterdir())


def _interrupted_download(root: Path, data: bytes, *, done: int) -> None:
    """What a download killed after `done` bytes leaves in `.wan/partial`: all its space, and a journal."""
    partial = PartialDownload.open(StoreLayout(root).partial_file(sha256_hex(data)), len(data),
                                   part_size=64 * MiB, max_ranges=1, label="test")
    buffer = mmap.mmap(-1, done)  # page-aligned, as the transfer engine's buffers are (direct I/O needs it)
    buffer[:] = data[:done]
    partial.write(0, memoryview(buffer))
    partial.close()


def test_resumed_bytes_count_as_already_there(
    mirror: Path, manifest_path: Path, models_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same rule on any filesystem: free space as reported, a resume needing less than a fresh start."""
    _add(mirror, manifest_path, "big@1.0.0", 3 * MiB)
    data = (mirror / "test" / "big@1.0.0" / "base" / "transformer" / "weights.bin").read_bytes()
    _interrupted_download(models_root, data, done=MiB)
    real = shutil.disk_usage

    def nearly_full(path: object) -> object:
        usage = real(path)  # type: ignore[arg-type]
        return type(usage)(usage.total, usage.total - 64 * KiB, 64 * KiB)

    monkeypatch.setattr("wanstudio.orchestrator.usage.shutil.disk_usage", nearly_full)
    assert wanstudio.Orchestrator().ensure("big").sources == {"local": 2}
    _add(mirror, manifest_path, "other@1.0.0", 1 * MiB)
    with pytest.raises(wanstudio.NoSpaceError) as refused:
        wanstudio.Orchestrator().ensure("other")
    assert f"({64 * KiB} bytes) free" in refused.value.message
    assert "--max-bytes" in refused.value.suggestions[0]


def test_gc_gives_back_what_the_filesystem_reports(
    small_disk: Path, mirror: Path, manifest_path: Path
) -> None:
    _add(mirror, manifest_path, "a@1.0.0", 700 * KiB, shared=True)
    _add(mirror, manifest_path, "b@1.0.0", 500 * KiB, shared=True)
    for model in ("a", "b"):
        assert run_wan("models", "ensure", "--only", model).returncode == 0
    used = shutil.disk_usage(small_disk).used
    planned = run_wan("models", "gc", "--dry-run", "--max-bytes", "0", "--json").json
    assert shutil.disk_usage(small_disk).used == used
    done = run_wan("models", "gc", "--max-bytes", "0", "--json").json
    assert [r["id"] for r in done["removed"]] == ["a@1.0.0", "b@1.0.0"]
    assert used - shutil.disk_usage(small_disk).used == done["reclaimed_bytes"] == planned["reclaimed_bytes"]
    assert done["reclaimed_bytes"] >= (4 + 700 + 4 + 500 + 256) * KiB  # every blob, the shared one once
