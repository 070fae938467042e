"""The manifest (CONTRACT section 3): packaged models, id resolution, validation, migration, shard indexes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from wanstudio.errors import ManifestInvalidError, ModelNotFoundError
from wanstudio.orchestrator._shards import needed_files
from wanstudio.orchestrator.manifest import (
    MIGRATIONS,
    SCHEMA_VERSION,
    HubRef,
    ManifestFile,
    load_manifest,
    migrate_document,
    packaged_manifest_path,
    parse_manifest,
)

SHA = "ab" * 32
ORIGIN = "test-models.toml"

PACKAGED = {
    "t2v-A14B@2.2.0": ("t2v", "Wan-AI/Wan2.2-T2V-A14B-Diffusers"),
    "i2v-A14B@2.2.0": ("i2v", "Wan-AI/Wan2.2-I2V-A14B-Diffusers"),
    "ti2v-5B@2.2.0": ("ti2v", "Wan-AI/Wan2.2-TI2V-5B-Diffusers"),
}

# One valid model; the validation tests below each break one thing in it.
MODEL = """\
schema_version = 1

[models."m@1.0"]
family = "wan22"
task = "t2v"
default_variant = "dev"

[models."m@1.0".variants.dev]
files = [
  { path = "model_index.json", size = 10, sha256 = "SHA" },
  { path = "vae/config.json", size = 20, sha256 = "SHA", component = "vae" },
]
""".replace("SHA", SHA)


def edit(old: str, new: str, text: str = MODEL) -> str:
    """`text` with `old` replaced by `new`; fails if `old` is absent, so no case silently tests nothing."""
    assert old in text, old
    return text.replace(old, new, 1)


# -- the packaged manifest -----------------------------------------------------------------------------------


def test_packaged_manifest_has_the_three_wan22_models() -> None:
    manifest = load_manifest()
    assert set(manifest.models) == set(PACKAGED)
    for model_id, (task, repo) in PACKAGED.items():
        model = manifest.models[model_id]
        assert (model.family, model.task, model.default_variant) == ("wan22", task, "bf16")
        assert model.hf == HubRef(repo=repo, revision="main")
        assert {"dev", "bf16", "fp16"} <= set(model.variants)
        assert model.variant().name == "bf16"
        assert model.variant().dtype == "bfloat16"
        assert not model.variant("bf16").lists_files and model.variant("bf16").hf_allow_patterns
        assert model.variant("dev").lists_files
        assert "text_encoder" in model.optional_components


def test_load_manifest_without_a_path_is_the_packaged_one() -> None:
    assert load_manifest().origin == str(packaged_manifest_path())
    assert load_manifest(packaged_manifest_path()).models == load_manifest().models


@pytest.mark.parametrize("model_id", sorted(PACKAGED))
def test_bundled_dev_files_match_the_packaged_manifest(model_id: str) -> None:
    model = load_manifest().resolve(model_id)
    folder = packaged_manifest_path().parent / "dev" / model.family / model_id / "dev"
    listed = {f.path: f for f in model.variant("dev").files}
    on_disk = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
    assert set(on_disk) == set(listed), "bundled files and the manifest's dev list differ"
    for path, file in listed.items():
        data = on_disk[path].read_bytes()
        assert len(data) == file.size, path
        assert hashlib.sha256(data).hexdigest() == file.sha256, path


def test_packaged_dev_variant_components_and_total() -> None:
    dev = load_manifest().resolve("t2v-A14B").variant("dev")
    assert dev.components == ("scheduler", "text_encoder", "tokenizer", "transformer", "transformer_2", "vae")
    assert dev.total_bytes == sum(f.size for f in dev.files) > 0


def test_packaged_sharded_transformer_needs_every_listed_shard() -> None:
    model = load_manifest().resolve("t2v-A14B@2.2.0")
    folder = packaged_manifest_path().parent / "dev" / model.family / model.id / "dev"
    files = model.variant("dev").files
    assert any(f.is_shard_index for f in files)
    needed = needed_files(files, lambda f: (folder / f.path).read_bytes(), model.id)
    assert [f.path for f in needed] == [f.path for f in files]


# -- resolving ids -------------------------------------------------------------------------------------------

VERSIONS = """\
schema_version = 1
""" + "".join(
    f"""
[models."m@{version}"]
family = "f"
task = "t2v"
default_variant = "dev"
[models."m@{version}".variants.dev]
files = [{{ path = "a.json", size = 1, sha256 = "{SHA}" }}]
[models."m@{version}".variants.int8]
files = [{{ path = "a.json", size = 1, sha256 = "{SHA}" }}]
"""
    for version in ("2.9.1", "2.10.0", "2.2.0", "1.99.99")
)


def test_canonical_id_resolves_exactly() -> None:
    manifest = parse_manifest(VERSIONS)
    assert manifest.resolve("m@2.9.1").id == "m@2.9.1"
    assert manifest.resolve("m@2.2.0").version == "2.2.0"


def test_bare_name_resolves_to_the_highest_version_numerically() -> None:
    model = parse_manifest(VERSIONS).resolve("m")
    assert model.id == "m@2.10.0"
    assert (model.name, model.version) == ("m", "2.10.0")


def test_packaged_bare_names_resolve() -> None:
    manifest = load_manifest()
    for model_id in PACKAGED:
        assert manifest.resolve(model_id.partition("@")[0]).id == model_id


@pytest.mark.parametrize("wrong", ["T2V-A14B", "t2v-a14b@2.2.0", "t2v-A14B@9.9.9", "t2v", "t2v-A14B@", "nope"])
def test_unknown_or_miscased_id_is_model_not_found_listing_the_choices(wrong: str) -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        load_manifest().resolve(wrong)
    error = caught.value
    assert error.code == "MODEL_NOT_FOUND" and error.exit_code == 13
    assert repr(wrong) in error.message
    for model_id in PACKAGED:
        assert model_id in error.message
    assert error.suggestions


def test_unknown_variant_is_model_not_found_listing_the_variants() -> None:
    model = parse_manifest(VERSIONS).resolve("m@2.9.1")
    with pytest.raises(ModelNotFoundError) as caught:
        model.variant("fp8")
    message = caught.value.message
    assert "m@2.9.1" in message and "'fp8'" in message
    assert "dev" in message and "int8" in message
    assert caught.value.param == "variant"


def test_default_variant_when_none_is_named() -> None:
    model = parse_manifest(VERSIONS).resolve("m@2.9.1")
    assert model.variant().name == model.variant(None).name == "dev"
    assert model.variant("int8").name == "int8"


# -- MANIFEST_INVALID ----------------------------------------------------------------------------------------

WITHOUT_VARIANTS = MODEL.split('[models."m@1.0".variants.dev]')[0]
WITHOUT_FILES = MODEL.split("files = [")[0]
DEV_SHA = f'sha256 = "{SHA}", component'  # the second file's digest


def renamed(model_id: str) -> str:
    return MODEL.replace('models."m@1.0"', f'models."{model_id}"')


INVALID = {
    "bad model id": (renamed("m 1.0"), ["m 1.0", "name@version"]),
    "id without version": (renamed("m"), ['models."m"', "name@version"]),
    "missing family": (edit('family = "wan22"\n', ""), ["m@1.0", "family", "required"]),
    "bad family": (edit('family = "wan22"', 'family = "wan/22"'), ["m@1.0", "family", "wan/22"]),
    "missing task": (edit('task = "t2v"\n', ""), ["m@1.0", "task", "required"]),
    "task not a string": (edit('task = "t2v"', "task = 3"), ["m@1.0", "task", "str"]),
    "missing default_variant": (edit('default_variant = "dev"\n', ""), ["m@1.0", "default_variant", "required"]),
    "default_variant not a variant": (
        edit('default_variant = "dev"', 'default_variant = "bf16"'),
        ["m@1.0", "default_variant", "'bf16'", "dev"],
    ),
    "missing variants": (WITHOUT_VARIANTS, ["m@1.0", "variants", "required"]),
    "empty variants": (WITHOUT_VARIANTS + "variants = {}\n", ["m@1.0", "variants", "at least one"]),
    "bad variant name": (
        edit("variants.dev]", 'variants."d v"]', edit('"dev"', '"d v"')),
        ["m@1.0", "d v", "variant name"],
    ),
    "file without size": (
        edit('{ path = "model_index.json", size = 10,', '{ path = "model_index.json",'),
        ["m@1.0", "variants.dev.files[0].size", "required"],
    ),
    "file with negative size": (edit("size = 20", "size = -5"), ["m@1.0", "variants.dev.files[1].size", "-5"]),
    "size not an integer": (edit("size = 20", 'size = "20"'), ["m@1.0", "files[1].size", "int"]),
    "size a boolean": (edit("size = 20", "size = true"), ["m@1.0", "files[1].size", "int"]),
    "file without path": (edit('path = "vae/config.json", ', ""), ["m@1.0", "files[1].path", "required"]),
    "upper-case sha256": (
        edit(DEV_SHA, f'sha256 = "{SHA.upper()}", component'),
        ["m@1.0", "files[1].sha256", SHA.upper()],
    ),
    "short sha256": (edit(DEV_SHA, 'sha256 = "abc123", component'), ["m@1.0", "files[1].sha256", "abc123"]),
    "missing sha256 in a listed variant": (
        edit(f', sha256 = "{SHA}" }}', " }"),
        ["m@1.0", "files[0].sha256", "required"],
    ),
    "neither files nor hf_allow_patterns": (
        WITHOUT_FILES,
        ["m@1.0", "variants.dev", "files", "hf_allow_patterns"],
    ),
    "empty files list": (
        WITHOUT_FILES + "files = []\n",
        ["m@1.0", "variants.dev", "files", "hf_allow_patterns"],
    ),
    "hf_allow_patterns without an hf repo": (
        WITHOUT_FILES + 'hf_allow_patterns = ["*.json"]\n',
        ["m@1.0", "hf_allow_patterns", "hf"],
    ),
    "hf table without repo": (
        WITHOUT_VARIANTS + '[models."m@1.0".hf]\nrevision = "main"\n\n' + MODEL[len(WITHOUT_VARIANTS) :],
        ["m@1.0", "hf.repo", "required"],
    ),
    "duplicate path": (
        edit('path = "vae/config.json"', 'path = "model_index.json"'),
        ["m@1.0", "variants.dev", "'model_index.json'", "more than once"],
    ),
    "component not a string": (edit('component = "vae"', "component = 1"), ["m@1.0", "files[1].component"]),
    "models not a table": ("schema_version = 1\nmodels = 3\n", ["'models'", "table"]),
}


@pytest.mark.parametrize("text, fragments", INVALID.values(), ids=INVALID.keys())
def test_invalid_manifest_names_model_and_key(text: str, fragments: list[str]) -> None:
    with pytest.raises(ManifestInvalidError) as caught:
        parse_manifest(text, origin=ORIGIN)
    error = caught.value
    assert error.code == "MANIFEST_INVALID" and error.exit_code == 11
    assert ORIGIN in error.message
    for fragment in fragments:
        assert fragment in error.message


def test_the_valid_base_model_parses() -> None:
    """The base of the INVALID cases is itself valid, so each case fails for the one thing it changes."""
    model = parse_manifest(MODEL).resolve("m@1.0")
    assert [f.path for f in model.variant().files] == ["model_index.json", "vae/config.json"]
    assert model.variant().files[1] == ManifestFile("vae/config.json", 20, SHA, component="vae")


def test_bad_toml_is_manifest_invalid() -> None:
    with pytest.raises(ManifestInvalidError) as caught:
        parse_manifest('schema_version = 1\n[models."m@1.0"\nfamily = ', origin=ORIGIN)
    assert ORIGIN in caught.value.message and "TOML" in caught.value.message


@pytest.mark.parametrize("first_line", ["", "schema_version = '1'", "schema_version = true", "schema_version = 1.5"])
def test_missing_or_non_integer_schema_version(first_line: str) -> None:
    with pytest.raises(ManifestInvalidError) as caught:
        parse_manifest(edit("schema_version = 1", first_line), origin=ORIGIN)
    assert "schema_version" in caught.value.message and ORIGIN in caught.value.message


@pytest.mark.parametrize("version", [2, 99, -1])
def test_unknown_schema_version_says_how_to_migrate(version: int) -> None:
    with pytest.raises(ManifestInvalidError) as caught:
        parse_manifest(edit("schema_version = 1", f"schema_version = {version}"), origin=ORIGIN)
    error = caught.value
    assert f"schema_version {version}" in error.message and ORIGIN in error.message
    assert any("wan models migrate-manifest" in s for s in error.suggestions)


def test_unknown_schema_version_message_itself_names_migrate_manifest() -> None:
    with pytest.raises(ManifestInvalidError) as caught:
        parse_manifest(edit("schema_version = 1", "schema_version = 2"), origin=ORIGIN)
    assert "wan models migrate-manifest" in caught.value.message


def test_unknown_task_is_manifest_invalid() -> None:
    with pytest.raises(ManifestInvalidError, match="task"):
        parse_manifest(edit('task = "t2v"', 'task = "text-to-video"'), origin=ORIGIN)


def test_load_manifest_of_a_missing_file_is_manifest_invalid(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ManifestInvalidError) as caught:
        load_manifest(missing)
    assert str(missing) in caught.value.message


def test_load_manifest_rereads_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(MODEL, encoding="utf-8")
    assert load_manifest(path).resolve("m").task == "t2v"
    assert load_manifest(path).origin == str(path)
    path.write_text(edit('task = "t2v"', 'task = "ti2v"'), encoding="utf-8")
    assert load_manifest(path).resolve("m").task == "ti2v"


# -- migration -----------------------------------------------------------------------------------------------

SCHEMA_0 = f"""\
schema_version = 0

[models."m@1.0"]
family = "wan22"
task = "t2v"
default = "dev"

[models."m@1.0".variants.dev.files]
"model_index.json" = {{ size = 10, sha256 = "{SHA}" }}
"vae/config.json" = {{ size = 20, sha256 = "{SHA}", component = "vae" }}
"""


def test_schema_0_manifest_is_upgraded_in_memory() -> None:
    old = parse_manifest(SCHEMA_0)
    assert old.schema_version == SCHEMA_VERSION == 1
    assert old.models == parse_manifest(MODEL).models
    assert old.resolve("m").default_variant == "dev"


def test_migrate_document_upgrades_schema_0_to_1() -> None:
    assert 0 in MIGRATIONS
    document = {
        "schema_version": 0,
        "models": {"m@1.0": {"default": "dev", "variants": {"dev": {"files": {"a.json": {"size": 1}}}}}},
    }
    upgraded = migrate_document(document)
    assert upgraded["schema_version"] == 1
    assert upgraded["models"]["m@1.0"]["default_variant"] == "dev"
    assert "default" not in upgraded["models"]["m@1.0"]
    assert upgraded["models"]["m@1.0"]["variants"]["dev"]["files"] == [{"path": "a.json", "size": 1}]


def test_schema_0_migration_is_still_validated() -> None:
    with pytest.raises(ManifestInvalidError, match=r"files\[0\]\.size"):
        parse_manifest(edit('{ size = 10, sha256 = "' + SHA + '" }', '{ sha256 = "' + SHA + '" }', SCHEMA_0))


# -- Hub variants --------------------------------------------------------------------------------------------

HUB = f"""\
schema_version = 1

[models."m@1.0"]
family = "wan22"
task = "ti2v"
default_variant = "bf16"

[models."m@1.0".hf]
repo = "Org/model"
revision = "main"

[models."m@1.0".variants.bf16]
dtype = "bfloat16"
hf_allow_patterns = ["*.json", "*.safetensors"]

[models."m@1.0".variants.int8]
hf_allow_patterns = ["*.safetensors"]
[models."m@1.0".variants.int8.hf]
repo = "Other/model-int8"
revision = "0123456789abcdef0123456789abcdef01234567"
subfolder = "quantized"

[models."m@1.0".variants.sub]
hf_allow_patterns = ["*.json"]
[models."m@1.0".variants.sub.hf]
subfolder = "extra"

[models."m@1.0".variants.dev]
files = [{{ path = "a.json", size = 1, sha256 = "{SHA}" }}]
"""


def test_variant_hf_table_overrides_the_models() -> None:
    model = parse_manifest(HUB).resolve("m@1.0")
    assert model.hf == HubRef("Org/model", "main")
    assert model.variant("bf16").hf == HubRef("Org/model", "main")
    assert model.variant("bf16").hf_allow_patterns == ("*.json", "*.safetensors")
    assert model.variant("int8").hf == HubRef("Other/model-int8", "0123456789abcdef" * 2 + "01234567", "quantized")
    assert model.variant("sub").hf == HubRef("Org/model", "main", "extra")


def test_variant_hf_without_a_model_hf_is_enough_for_patterns() -> None:
    text = WITHOUT_FILES + 'hf_allow_patterns = ["*.json"]\n[models."m@1.0".variants.dev.hf]\nrepo = "Org/x"\n'
    variant = parse_manifest(text).resolve("m").variant()
    assert variant.hf == HubRef("Org/x") and not variant.lists_files


def test_sha256_is_optional_in_hub_listed_variants() -> None:
    text = edit(
        'hf_allow_patterns = ["*.safetensors"]\n[',
        'hf_allow_patterns = ["*.safetensors"]\nfiles = [{ path = "w.safetensors", size = 5 }, '
        f'{{ path = "x.safetensors", size = 6, sha256 = "{SHA}" }}]\n[',
        HUB,
    )
    variant = parse_manifest(text).resolve("m").variant("int8")
    assert variant.files == (ManifestFile("w.safetensors", 5), ManifestFile("x.safetensors", 6, SHA))
    assert variant.lists_files and variant.total_bytes == 11


def test_sha256_is_still_checked_when_given_in_a_hub_variant() -> None:
    patterns = 'hf_allow_patterns = ["*.safetensors"]\n'
    text = edit(patterns, patterns + 'files = [{ path = "w", size = 5, sha256 = "XYZ" }]\n', HUB)
    with pytest.raises(ManifestInvalidError, match=r"variants\.int8\.files\[0\]\.sha256"):
        parse_manifest(text)


# -- through the CLI -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, fragments",
    [
        (edit('task = "t2v"\n', ""), ["m@1.0", "task"]),
        (edit("size = 20", "size = -5"), ["m@1.0", "files[1].size"]),
        (edit("schema_version = 1", "schema_version = 7"), ["schema_version 7"]),
    ],
    ids=["missing task", "negative size", "future schema"],
)
def test_cli_list_with_a_bad_manifest_exits_11(wan, tmp_path: Path, text: str, fragments: list[str]) -> None:
    manifest = tmp_path / "bad.toml"
    manifest.write_text(text, encoding="utf-8")
    result = wan("models", "list", "--json", env={"WAN_MODELS_MANIFEST": str(manifest)})
    assert result.returncode == 11, result.stderr
    document = result.json
    assert document["schema"] == "wan.models.list/1"
    error = document["error"]
    assert error["code"] == "MANIFEST_INVALID"
    assert str(manifest) in error["message"]
    for fragment in fragments:
        assert fragment in error["message"]
    assert isinstance(error["attempts"], list) and isinstance(error["suggestions"], list)


def test_cli_list_with_a_valid_replacement_manifest(wan, tmp_path: Path) -> None:
    manifest = tmp_path / "models.toml"
    manifest.write_text(MODEL, encoding="utf-8")
    result = wan("models", "list", "--json", env={"WAN_MODELS_MANIFEST": str(manifest)})
    assert result.returncode == 0, result.stderr
    assert [m["id"] for m in result.json["models"]] == ["m@1.0"]


# -- shard indexes (_shards.needed_files) --------------------------------------------------------------------


def _index(*shards: str) -> bytes:
    return json.dumps({"metadata": {}, "weight_map": {f"w{i}": s for i, s in enumerate(shards)}}).encode()


SHARDED = [
    ManifestFile("model_index.json", 1, SHA),
    ManifestFile("transformer/config.json", 1, SHA),
    ManifestFile("transformer/diffusion_pytorch_model.safetensors.index.json", 1, SHA),
    ManifestFile("transformer/diffusion_pytorch_model-00001-of-00002.safetensors", 1, SHA),
    ManifestFile("transformer/diffusion_pytorch_model-00002-of-00002.safetensors", 1, SHA),
    ManifestFile("transformer/diffusion_pytorch_model.safetensors", 1, SHA),  # an old unsharded copy
    ManifestFile("transformer/extra.bin", 1, SHA),
    ManifestFile("vae/diffusion_pytorch_model.safetensors", 1, SHA),  # a folder without an index
]


def _paths(files: list[ManifestFile]) -> list[str]:
    return [f.path for f in files]


def test_needed_files_skips_unreferenced_shards_beside_an_index() -> None:
    content = _index(
        "diffusion_pytorch_model-00001-of-00002.safetensors",
        "diffusion_pytorch_model-00002-of-00002.safetensors",
        "diffusion_pytorch_model-00001-of-00002.safetensors",
    )
    needed = needed_files(SHARDED, lambda f: content, "m@1.0")
    assert _paths(needed) == [
        "model_index.json",
        "transformer/config.json",
        "transformer/diffusion_pytorch_model.safetensors.index.json",
        "transformer/diffusion_pytorch_model-00001-of-00002.safetensors",
        "transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    ]


def test_needed_files_keeps_everything_when_the_index_cannot_be_read() -> None:
    assert needed_files(SHARDED, lambda f: None, "m@1.0") == SHARDED


def test_needed_files_without_an_index_keeps_everything() -> None:
    files = [f for f in SHARDED if not f.is_shard_index]
    assert needed_files(files, lambda f: pytest.fail("no index to read"), "m@1.0") == files


def test_needed_files_with_an_index_at_the_variant_root() -> None:
    files = [
        ManifestFile("model.safetensors.index.json", 1),
        ManifestFile("model-1.safetensors", 1),
        ManifestFile("model.safetensors", 1),
        ManifestFile("sub/model.safetensors", 1),
    ]
    needed = needed_files(files, lambda f: _index("model-1.safetensors"), "m@1.0")
    assert _paths(needed) == ["model.safetensors.index.json", "model-1.safetensors", "sub/model.safetensors"]


def test_index_referencing_an_unlisted_shard_is_manifest_invalid() -> None:
    content = _index(
        "diffusion_pytorch_model-00001-of-00002.safetensors", "diffusion_pytorch_model-00009-of-00009.safetensors"
    )
    with pytest.raises(ManifestInvalidError) as caught:
        needed_files(SHARDED, lambda f: content, "m@1.0")
    message = caught.value.message
    assert "m@1.0" in message
    assert "transformer/diffusion_pytorch_model.safetensors.index.json" in message
    assert "transformer/diffusion_pytorch_model-00009-of-00009.safetensors" in message


@pytest.mark.parametrize(
    "content", [b"{}", b'{"metadata": {}}', b"not json", b"[1, 2]", b'{"weight_map": [1]}', b"\xff\xfe"]
)
def test_index_without_a_valid_weight_map_is_manifest_invalid(content: bytes) -> None:
    with pytest.raises(ManifestInvalidError) as caught:
        needed_files(SHARDED, lambda f: content, "m@1.0")
    assert "weight_map" in caught.value.message
    assert "transformer/diffusion_pytorch_model.safetensors.index.json" in caught.value.message


@pytest.mark.parametrize("value", [1, None])
def test_index_with_non_string_shard_names_is_manifest_invalid(value: object) -> None:
    content = json.dumps({"weight_map": {"w": value}}).encode()
    with pytest.raises(ManifestInvalidError):
        needed_files(SHARDED, lambda f: content, "m@1.0")
