"""The store refuses to follow symlinks out of MODELS_ROOT; check --deep hashes files in parallel; the
variant lock is a POSIX record lock, which holds across hosts on network filesystems (docs/platforms.md)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

import wanstudio
from wanstudio.errors import PathInvalidError
from wanstudio.orchestrator._locks import hold_lock
from wanstudio.orchestrator.layout import StoreLayout

from conftest import run_wan, write_model


def test_check_deep_reports_a_file_linked_out_of_the_store_as_corrupt(mirror: Path, manifest_path: Path, models_root: Path, tmp_path: Path) -> None:
    write_model(mirror, manifest_path, {"a.bin": b"payload", "vae/b.bin": b"other"})
    final = wanstudio.ensure("toy")
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"payload")  # the right bytes, but not the store's
    (final / "a.bin").unlink()
    (final / "a.bin").symlink_to(outside)
    result = run_wan("models", "check", "toy", "--deep", "--json")
    assert result.returncode == 3
    model = result.json["models"][0]
    assert model["state"] == "corrupt" and model["corrupt_files"] == ["a.bin"]


def test_check_deep_hashes_many_files(mirror: Path, manifest_path: Path) -> None:
    files = {f"t/part-{i}.bin": os.urandom(100_000 + i) for i in range(9)}
    write_model(mirror, manifest_path, files)
    final = wanstudio.ensure("toy")
    os.chmod(final / "t/part-4.bin", 0o644)
    (final / "t/part-4.bin").write_bytes(b"\0" * len(files["t/part-4.bin"]))  # same size, other bytes
    result = run_wan("models", "check", "toy", "--deep", "--json")
    assert result.returncode == 3 and result.json["models"][0]["corrupt_files"] == ["t/part-4.bin"]


def test_ensure_refuses_a_store_folder_linked_out(mirror: Path, manifest_path: Path, models_root: Path, tmp_path: Path) -> None:
    write_model(mirror, manifest_path, {"a.bin": b"payload"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (models_root / ".wan").mkdir(parents=True)
    (models_root / ".wan" / "tmp").symlink_to(elsewhere)
    with pytest.raises(PathInvalidError, match="symbolic link"):
        wanstudio.ensure("toy")
    assert list(elsewhere.iterdir()) == []


def test_the_variant_lock_is_a_posix_record_lock(mirror: Path, manifest_path: Path, models_root: Path) -> None:
    write_model(mirror, manifest_path, {"a.bin": b"payload"})
    lock = StoreLayout(models_root).variant_lock("test", "toy@1.0.0", "base")
    with hold_lock(lock, timeout=5, what="test"):
        result = run_wan("models", "ensure", "--only", "toy", "--json", env={"WAN_LOCK_TIMEOUT": "1"})
        assert result.returncode == 21  # another process waits for it...
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ...and it is not a flock() lock
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def test_blobs_are_read_only_and_state_records_hold_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    manifest = tmp_path / "models.toml"
    write_model(mirror, manifest, {"weights.bin": b"w" * 1000, "config.json": b"{}"})
    monkeypatch.setenv("WAN_LOCAL_MIRROR", str(mirror))
    monkeypatch.setenv("WAN_MODELS_MANIFEST", str(manifest))
    monkeypatch.setenv("WAN_SOURCES", "local")
    monkeypatch.setenv("HF_TOKEN", "hf_neverWrittenToTheStore0123")
    path = wanstudio.ensure("toy")
    root = Path(os.environ["MODELS_ROOT"])
    for blob in (root / ".wan" / "blobs").rglob("*"):
        if blob.is_file():
            assert blob.stat().st_mode & 0o222 == 0, blob
    assert (path / "weights.bin").stat().st_mode & 0o222 == 0  # the variant's file is the blob itself
    for record in (root / ".wan" / "state").rglob("*.json"):
        assert record.stat().st_mode & 0o002 == 0
        assert "hf_neverWrittenToTheStore0123" not in record.read_text()
