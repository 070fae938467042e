"""`wan models migrate-manifest` (CONTRACT section 3): older manifests rewritten at the current schema_version."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from wanstudio.errors import ManifestInvalidError
from wanstudio.orchestrator.manifest import SCHEMA_VERSION, load_manifest, migrate_manifest_file, parse_manifest
from wanstudio.orchestrator.signing import sign_manifest, signature_path, write_key_pair

SHA = "ab" * 32

# Schema 0 (see manifest._migrate_0_to_1): files keyed by path, `default` instead of `default_variant`.
SCHEMA_0 = f"""\
# The team's manifest, before the 1.0 schema.
schema_version = 0

[models."m@1.0"]
family = "wan22"
task = "t2v"
default = "dev"  # the variant used when none is asked for
description = "a test model"
optional_components = ["vae"]

[models."m@1.0".hf]
repo = "org/m"
revision = "main"

[models."m@1.0".variants.dev.files]
"model_index.json" = {{ size = 10, sha256 = "{SHA}" }}
"vae/config.json" = {{ size = 20, sha256 = "{SHA}", component = "vae", optional = true }}

[models."m@1.0".variants.bf16]
dtype = "bfloat16"
hf_allow_patterns = ["*.json", "*.safetensors"]

[models."n@2.0"]
family = "other"
task = "i2v"
default = "base"

[models."n@2.0".variants.base.files]
"a.json" = {{ size = 1, sha256 = "{SHA}" }}
"""


@pytest.fixture
def old_manifest(tmp_path: Path) -> Path:
    path = tmp_path / "old.toml"
    path.write_text(SCHEMA_0, encoding="utf-8")
    return path


def test_cli_upgrades_schema_0_to_what_the_in_memory_migration_gives(wan, old_manifest: Path, tmp_path: Path) -> None:
    output = tmp_path / "new.toml"
    result = wan("models", "migrate-manifest", str(old_manifest), "--output", str(output), "--json")
    assert result.returncode == 0, result.stderr
    document = result.json
    assert document["schema"] == "wan.models.migrate-manifest/1"
    assert (document["from_version"], document["to_version"]) == (0, SCHEMA_VERSION)
    assert document["migrated"] is True and document["comments_lost"] is True and document["output"] == str(output)
    text = output.read_text(encoding="utf-8")
    assert tomllib.loads(text)["schema_version"] == SCHEMA_VERSION
    assert "comments of the original were not kept" in text.splitlines()[0]
    migrated = load_manifest(output)
    assert migrated.schema_version == SCHEMA_VERSION
    assert migrated.models == parse_manifest(SCHEMA_0).models
    assert migrated.resolve("m").default_variant == "dev"
    assert [f.path for f in migrated.resolve("m").variant("dev").files] == ["model_index.json", "vae/config.json"]


def test_the_input_is_untouched_when_output_is_given(wan, old_manifest: Path, tmp_path: Path) -> None:
    before = old_manifest.read_bytes()
    mtime = old_manifest.stat().st_mtime_ns
    result = wan("models", "migrate-manifest", str(old_manifest), "-o", str(tmp_path / "out" / "models.toml"))
    assert result.returncode == 0, result.stderr
    assert "comments" in result.stdout and "schema_version 0 to 1" in result.stdout
    assert old_manifest.read_bytes() == before and old_manifest.stat().st_mtime_ns == mtime
    assert (tmp_path / "out" / "models.toml").exists()


def test_in_place_migration_replaces_the_file_and_leaves_no_temporary_file(wan, old_manifest: Path) -> None:
    result = wan("models", "migrate-manifest", str(old_manifest), "--json")
    assert result.returncode == 0, result.stderr
    assert result.json["output"] == str(old_manifest)
    assert parse_manifest(old_manifest.read_text()).models == parse_manifest(SCHEMA_0).models
    assert sorted(p.name for p in old_manifest.parent.iterdir()) == ["old.toml"]
    again = wan("models", "migrate-manifest", str(old_manifest), "--json")  # already current: nothing to do
    assert again.returncode == 0 and again.json["migrated"] is False and again.json["written"] is False


@pytest.mark.parametrize("version", [99, SCHEMA_VERSION + 1])
def test_a_newer_version_is_refused_saying_to_upgrade(wan, old_manifest: Path, tmp_path: Path, version: int) -> None:
    old_manifest.write_text(SCHEMA_0.replace("schema_version = 0", f"schema_version = {version}"))
    before = old_manifest.read_bytes()
    output = tmp_path / "new.toml"
    result = wan("models", "migrate-manifest", str(old_manifest), "--output", str(output), "--json")
    assert result.returncode == 11
    error = result.json["error"]
    assert error["code"] == "MANIFEST_INVALID"
    assert f"schema_version {version}" in error["message"] and str(old_manifest) in error["message"]
    assert "upgrade wanstudio" in error["message"]
    assert any("pip install -U wanstudio" in s for s in error["suggestions"])
    assert old_manifest.read_bytes() == before and not output.exists()


def test_an_unknown_older_version_and_bad_toml_are_manifest_invalid(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(SCHEMA_0.replace("schema_version = 0", "schema_version = -1"))
    with pytest.raises(ManifestInvalidError, match="schema_version -1"):
        migrate_manifest_file(path)
    path.write_text("schema_version = 0\n[models\n")
    with pytest.raises(ManifestInvalidError, match="not valid TOML"):
        migrate_manifest_file(path)


def test_a_migration_whose_result_is_invalid_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(SCHEMA_0.replace('task = "t2v"', 'task = "nope"'))
    before = path.read_bytes()
    with pytest.raises(ManifestInvalidError, match="nothing was written"):
        migrate_manifest_file(path)
    assert path.read_bytes() == before


def test_a_current_manifest_is_copied_verbatim_to_output(tmp_path: Path, old_manifest: Path) -> None:
    current = tmp_path / "current.toml"
    migrate_manifest_file(old_manifest, current)
    copy = tmp_path / "copy.toml"
    result = migrate_manifest_file(current, copy)
    assert not result.migrated and result.written and copy.read_bytes() == current.read_bytes()


def test_migrating_a_signed_manifest_says_the_signature_is_stale(wan, old_manifest: Path, tmp_path: Path) -> None:
    private, _, _ = write_key_pair(tmp_path / "signer")
    # a schema-0 manifest can be signed too: the signature covers bytes, and sign validates through migration
    sign_manifest(old_manifest, private)
    result = wan("models", "migrate-manifest", str(old_manifest), "--json")
    assert result.returncode == 0 and result.json["signature_stale"] is True
    human = wan("models", "migrate-manifest", str(old_manifest))
    assert human.returncode == 0  # already current now: the stale signature is not reported twice
    assert signature_path(old_manifest).exists()
