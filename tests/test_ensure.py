"""ensure / status / check through the Python API, against real files in a real store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import wanstudio
from wanstudio import Orchestrator, Settings
from wanstudio.errors import (
    ChecksumFailError,
    InvalidParamsError,
    ModelNotFoundError,
    ModelsRootUnsetError,
    NoSpaceError,
    SourceUnavailableError,
)
from wanstudio.orchestrator.store import sha256_of

from conftest import write_model

DEV_IDS = ("t2v-A14B@2.2.0", "i2v-A14B@2.2.0", "ti2v-5B@2.2.0")


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_ensure_dev_variant_from_the_bundled_source(models_root: Path) -> None:
    path = wanstudio.ensure("ti2v-5B", "dev")
    assert path == models_root / "wan22" / "ti2v-5B@2.2.0" / "dev"
    model = wanstudio.load_manifest().resolve("ti2v-5B@2.2.0")
    listed = {f.path: f for f in model.variant("dev").files}
    on_disk = _tree(path)
    assert set(on_disk) == set(listed)
    for relative, data in on_disk.items():
        assert len(data) == listed[relative].size
    status = wanstudio.status("ti2v-5B@2.2.0", "dev")
    assert status.state == "complete" and status.missing_files == () and status.bytes_needed == 0


def test_identical_files_are_stored_once(models_root: Path) -> None:
    for model_id in DEV_IDS:
        wanstudio.ensure(model_id, "dev")
    t2v = models_root / "wan22" / "t2v-A14B@2.2.0" / "dev" / "text_encoder" / "model.safetensors"
    ti2v = models_root / "wan22" / "ti2v-5B@2.2.0" / "dev" / "text_encoder" / "model.safetensors"
    assert os.stat(t2v).st_ino == os.stat(ti2v).st_ino  # one blob, linked into both variants
    blobs = [p for p in (models_root / ".wan" / "blobs").rglob("*") if p.is_file()]
    digests = {sha256_of(b) for b in blobs}
    assert len(blobs) == len(digests)
    assert all(b.name == sha256_of(b) for b in blobs)


def test_second_ensure_is_warm_and_copies_nothing() -> None:
    orchestrator = Orchestrator(Settings.from_env())
    first = orchestrator.ensure("ti2v-5B", "dev")
    second = orchestrator.ensure("ti2v-5B", "dev")
    assert first.bytes_downloaded > 0 and first.sources == {"bundled": 10}
    assert second.warm and second.bytes_downloaded == 0 and second.sources == {}
    assert second.path == first.path


def test_ensured_dev_model_loads_with_diffusers() -> None:
    diffusers = pytest.importorskip("diffusers")
    path = wanstudio.ensure("t2v-A14B", "dev")
    pipeline = diffusers.DiffusionPipeline.from_pretrained(path)
    assert type(pipeline).__name__ == "WanPipeline"
    assert pipeline.transformer is not None and pipeline.transformer_2 is not None


def test_get_wan_paths_names_each_component(models_root: Path) -> None:
    paths = wanstudio.get_wan_paths("i2v-A14B", "dev")
    assert paths.root == models_root / "wan22" / "i2v-A14B@2.2.0" / "dev"
    assert set(paths.components) == {"scheduler", "text_encoder", "tokenizer", "transformer", "transformer_2", "vae"}
    assert (paths["vae"] / "config.json").is_file()


def test_models_root_unset_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELS_ROOT")
    with pytest.raises(ModelsRootUnsetError) as caught:
        wanstudio.ensure("ti2v-5B", "dev")
    assert "MODELS_ROOT" in caught.value.message


def test_unknown_model_variant_and_component_fail_before_any_download(models_root: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="known models are"):
        wanstudio.ensure("t2v-A15B", "dev")
    with pytest.raises(ModelNotFoundError, match="its variants are"):
        wanstudio.ensure("ti2v-5B", "int4")
    with pytest.raises(ModelNotFoundError, match="its components are"):
        wanstudio.ensure("ti2v-5B", "dev", without=["image_encoder"])
    with pytest.raises(InvalidParamsError, match="'vae' .* is required"):
        wanstudio.ensure("ti2v-5B", "dev", without=["vae"])
    assert not models_root.exists() or not any((models_root / "wan22").glob("*/*"))


def test_optional_component_can_be_left_out_and_added_later(models_root: Path) -> None:
    orchestrator = Orchestrator(Settings.from_env())
    lean = orchestrator.ensure("ti2v-5B", "dev", without=["text_encoder"])
    assert not (lean.path / "text_encoder").exists()
    assert orchestrator.status("ti2v-5B", "dev").state == "complete"
    assert orchestrator.ensure("ti2v-5B", "dev", without=["text_encoder"]).warm
    full = orchestrator.ensure("ti2v-5B", "dev")
    assert not full.warm and (full.path / "text_encoder" / "model.safetensors").is_file()
    assert full.sources == {"bundled": 2}  # only the text encoder's two files were fetched


def test_unreferenced_shards_are_not_fetched(mirror: Path, manifest_path: Path, models_root: Path) -> None:
    index = {"weight_map": {"a.weight": "w-00001-of-00002.safetensors", "b.weight": "w-00002-of-00002.safetensors"}}
    files = {
        "model_index.json": b"{}",
        "transformer/w.safetensors.index.json": json.dumps(index).encode(),
        "transformer/w-00001-of-00002.safetensors": b"shard one",
        "transformer/w-00002-of-00002.safetensors": b"shard two",
        "transformer/old-unsharded.safetensors": b"not referenced by the index",
    }
    write_model(mirror, manifest_path, files)
    result = Orchestrator(Settings.from_env()).ensure("toy", "base")
    assert result.sources == {"local": 4}
    assert not (result.path / "transformer" / "old-unsharded.safetensors").exists()
    assert (result.path / "transformer" / "w-00002-of-00002.safetensors").read_bytes() == b"shard two"
    assert wanstudio.status("toy").state == "complete"


def test_bad_copy_on_one_source_falls_back_to_the_next(mirror: Path, manifest_path: Path, tmp_path: Path, monkeypatch) -> None:
    good = {"model_index.json": b'{"a": 1}', "vae/weights.bin": b"good bytes"}
    write_model(mirror, manifest_path, good)
    (mirror / "test" / "toy@1.0.0" / "base" / "vae" / "weights.bin").write_bytes(b"BAD! bytes")  # same size
    second = tmp_path / "second-mirror" / "test" / "toy@1.0.0" / "base"
    for relative, data in good.items():
        (second / relative).parent.mkdir(parents=True, exist_ok=True)
        (second / relative).write_bytes(data)
    from wanstudio.orchestrator.sources import LocalMirrorSource

    sources = [LocalMirrorSource("local", mirror), LocalMirrorSource("backup", tmp_path / "second-mirror")]
    result = Orchestrator(Settings.from_env(), sources=sources).ensure("toy")
    assert result.sources == {"local": 1, "backup": 1}
    assert (result.path / "vae" / "weights.bin").read_bytes() == b"good bytes"


def test_checksum_failure_on_every_source_lists_the_attempts(mirror: Path, manifest_path: Path, models_root: Path) -> None:
    write_model(mirror, manifest_path, {"a.bin": b"12345"}, listed={"a.bin": {"sha256": "0" * 64}})
    with pytest.raises(ChecksumFailError) as caught:
        wanstudio.ensure("toy")
    error = caught.value
    assert "toy@1.0.0" in error.message and "a.bin" in error.message
    assert [(a.source, a.code) for a in error.attempts] == [("bundled", "SOURCE_UNAVAILABLE"), ("local", "CHECKSUM_FAIL")]
    assert "sha256" in error.attempts[1].message
    assert not (models_root / "test" / "toy@1.0.0" / "base").exists()
    assert not any((models_root / ".wan" / "partial").iterdir())  # the bad copy was discarded


def test_wrong_size_is_a_checksum_failure(mirror: Path, manifest_path: Path) -> None:
    write_model(mirror, manifest_path, {"a.bin": b"12345"}, listed={"a.bin": {"size": 4}})
    with pytest.raises(ChecksumFailError, match="is 5 bytes at the source, where 4 are expected"):
        wanstudio.ensure("toy")


def test_file_on_no_source_is_source_unavailable(mirror: Path, manifest_path: Path, models_root: Path) -> None:
    write_model(mirror, manifest_path, {"a.bin": b"aaa", "b.bin": b"bbb"})
    (mirror / "test" / "toy@1.0.0" / "base" / "b.bin").unlink()
    with pytest.raises(SourceUnavailableError) as caught:
        wanstudio.ensure("toy")
    assert "b.bin" in caught.value.message
    assert {a.source for a in caught.value.attempts} == {"bundled", "local"}
    assert wanstudio.status("toy").state == "partial"  # a.bin is kept for the next try
    assert wanstudio.status("toy").missing_files == ("b.bin",)


def test_hub_listed_variant_needs_a_hub_source(models_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAN_SOURCES", "local,s3")
    with pytest.raises(SourceUnavailableError, match="WAN_SOURCES does not include hf") as caught:
        wanstudio.ensure("ti2v-5B")  # the default variant, bf16, takes its files from the Hub
    assert any("wan models lock" in s for s in caught.value.suggestions)


def test_hub_listed_variant_with_an_unreachable_hub_names_the_endpoint(models_root: Path) -> None:
    with pytest.raises(SourceUnavailableError, match="cannot reach the Hub at http://127.0.0.1:9"):
        wanstudio.ensure("ti2v-5B")


def test_preflight_refuses_a_download_larger_than_the_free_space(mirror: Path, manifest_path: Path, models_root: Path) -> None:
    import shutil

    write_model(mirror, manifest_path, {"a.bin": b"x"}, listed={"a.bin": {"size": shutil.disk_usage(mirror).free * 2}})
    with pytest.raises(NoSpaceError) as caught:
        wanstudio.ensure("toy")
    assert "toy@1.0.0" in caught.value.message and "free" in caught.value.message
    assert not (models_root / ".wan" / "partial").exists() or not any((models_root / ".wan" / "partial").iterdir())


def test_status_states(mirror: Path, manifest_path: Path, models_root: Path) -> None:
    write_model(mirror, manifest_path, {"a.bin": b"aaaa", "b/c.bin": b"cc"})
    assert wanstudio.status("toy").state == "missing"
    assert wanstudio.status("toy").bytes_needed == 6
    path = wanstudio.ensure("toy")
    assert wanstudio.status("toy").state == "complete"
    os.chmod(path / "b" / "c.bin", 0o644)
    (path / "b" / "c.bin").write_bytes(b"c")
    status = wanstudio.status("toy")
    assert status.state == "corrupt" and status.corrupt_files == ("b/c.bin",)
    (path / "b" / "c.bin").unlink()
    status = wanstudio.status("toy")
    assert status.state == "partial" and status.missing_files == ("b/c.bin",) and status.bytes_needed == 2


def test_check_deep_finds_a_flipped_byte_and_force_repairs_it(models_root: Path) -> None:
    path = wanstudio.ensure("ti2v-5B", "dev")
    target = path / "vae" / "diffusion_pytorch_model.safetensors"
    os.chmod(target, 0o644)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    assert wanstudio.check("ti2v-5B", "dev").state == "complete"  # sizes still match
    deep = wanstudio.check("ti2v-5B", "dev", deep=True)
    assert deep.state == "corrupt" and deep.corrupt_files == ("vae/diffusion_pytorch_model.safetensors",)
    repaired = Orchestrator(Settings.from_env()).ensure("ti2v-5B", "dev", force=True)
    assert repaired.sources == {"bundled": 1}
    assert wanstudio.check("ti2v-5B", "dev", deep=True).state == "complete"


def test_a_deleted_file_makes_ensure_fetch_it_again(models_root: Path) -> None:
    path = wanstudio.ensure("ti2v-5B", "dev")
    (path / "model_index.json").unlink()
    result = Orchestrator(Settings.from_env()).ensure("ti2v-5B", "dev")
    assert not result.warm and (path / "model_index.json").is_file()
    assert result.sources == {}  # the blob was still in the store: relinked, not copied


def test_store_paths_follow_models_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("one", "two"):
        monkeypatch.setenv("MODELS_ROOT", str(tmp_path / name))
        assert wanstudio.ensure("ti2v-5B@2.2.0", "dev") == tmp_path / name / "wan22" / "ti2v-5B@2.2.0" / "dev"


def test_a_reused_orchestrator_notices_a_removed_variant_and_a_changed_manifest(
    mirror: Path, manifest_path: Path, models_root: Path
) -> None:
    import shutil

    write_model(mirror, manifest_path, {"a.bin": b"first"})
    orchestrator = Orchestrator(Settings.from_env())
    path = orchestrator.ensure("toy").path
    assert orchestrator.ensure("toy").warm
    shutil.rmtree(path)
    again = orchestrator.ensure("toy")
    assert not again.warm and (path / "a.bin").read_bytes() == b"first"

    manifest_path.unlink()
    write_model(mirror, manifest_path, {"a.bin": b"second version"})
    updated = orchestrator.ensure("toy")
    assert not updated.warm and (path / "a.bin").read_bytes() == b"second version"
