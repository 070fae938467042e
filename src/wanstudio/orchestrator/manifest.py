"""The model manifest (`models.toml`, CONTRACT section 3): parsed once into frozen, validated objects.

Every problem is a MANIFEST_INVALID (or PATH_INVALID for unsafe file paths) that names the manifest, the
model and the key, so a broken manifest is fixed in one edit. Older schema versions are upgraded in memory
by the adapters in ``MIGRATIONS``; an unknown version says how to migrate.
"""

from __future__ import annotations

import re
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from functools import cache, cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from wanstudio.errors import ManifestInvalidError, ModelNotFoundError, PathInvalidError
from wanstudio.orchestrator._pathrules import case_collisions, path_problem

if TYPE_CHECKING:
    from wanstudio.config import Settings

SCHEMA_VERSION = 1
SHARD_INDEX_SUFFIX = ".index.json"
TASKS = ("t2v", "i2v", "ti2v")
KINDS = ("model", "lora")
"""What a manifest entry is: a video model (the default), or a LoRA overlay for some of the models."""
LORA_FILE_SUFFIX = ".safetensors"

_MODEL_ID = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)@(?P<version>[A-Za-z0-9][A-Za-z0-9._+-]*)$")
_SIMPLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class HubRef:
    """Where a variant's files live on the Hugging Face Hub."""

    repo: str
    revision: str = "main"
    subfolder: str | None = None


@dataclass(frozen=True)
class ManifestFile:
    """One file of a variant: its relative path, expected size and digest, and the component it belongs to."""

    path: str
    size: int
    sha256: str | None = None
    component: str | None = None
    optional: bool = False
    git_blob_id: str | None = None
    """The Hub's git blob id: the digest of a small file listed by the Hub, which gives no sha256 for it."""

    @property
    def is_shard_index(self) -> bool:
        return self.path.endswith(SHARD_INDEX_SUFFIX)

    @property
    def key(self) -> str:
        """A name for the file's content before its sha256 is known: partial downloads and locks use it."""
        if self.sha256:
            return self.sha256
        return f"git-{self.git_blob_id}" if self.git_blob_id else f"size-{self.size}-{_path_key(self.path)}"


@dataclass(frozen=True)
class Variant:
    """A named set of files of one model (`bf16`, `dev`, ...)."""

    name: str
    files: tuple[ManifestFile, ...] = ()
    dtype: str | None = None
    hf: HubRef | None = None
    hf_allow_patterns: tuple[str, ...] = ()

    @property
    def lists_files(self) -> bool:
        """True when the manifest lists the files; False when the Hub's listing provides them at ensure time."""
        return bool(self.files)

    @cached_property
    def components(self) -> tuple[str, ...]:
        return tuple(sorted({f.component for f in self.files if f.component}))

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class Model:
    """One model of the manifest under its canonical id `name@version`."""

    id: str
    family: str
    task: str
    default_variant: str
    variants: Mapping[str, Variant]
    description: str = ""
    optional_components: tuple[str, ...] = ()
    hf: HubRef | None = None
    kind: str = "model"
    """``model`` (a video model) or ``lora`` (a LoRA overlay: one .safetensors file per variant)."""
    base_models: tuple[str, ...] = ()
    """For a LoRA: the models it is made for, as written in the manifest (ids or bare names of models)."""

    @property
    def is_lora(self) -> bool:
        return self.kind == "lora"

    @property
    def name(self) -> str:
        return self.id.partition("@")[0]

    @property
    def version(self) -> str:
        return self.id.partition("@")[2]

    def variant(self, name: str | None = None) -> Variant:
        """The named variant (default: the model's default variant), or MODEL_NOT_FOUND listing the choices."""
        chosen = name or self.default_variant
        try:
            return self.variants[chosen]
        except KeyError:
            raise ModelNotFoundError(
                f"model {self.id} has no variant {chosen!r}; its variants are {', '.join(sorted(self.variants))}",
                param="variant",
                suggestions=[f"use --variant {v}" for v in sorted(self.variants)],
            ) from None


@dataclass(frozen=True)
class Manifest:
    """All models of one manifest file, by canonical id."""

    models: Mapping[str, Model]
    origin: str = "<memory>"
    schema_version: int = SCHEMA_VERSION
    _by_name: dict[str, list[str]] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for model_id in self.models:
            self._by_name.setdefault(model_id.partition("@")[0], []).append(model_id)
        for ids in self._by_name.values():
            ids.sort(key=lambda i: _version_key(i.partition("@")[2]))

    def resolve(self, model_id: str) -> Model:
        """The model for a canonical id, or for a bare name the highest version; MODEL_NOT_FOUND otherwise."""
        if model_id in self.models:
            return self.models[model_id]
        versions = self._by_name.get(model_id)
        if versions and "@" not in model_id:
            return self.models[versions[-1]]
        raise ModelNotFoundError(
            f"unknown model {model_id!r} in manifest {self.origin}; known models are {', '.join(sorted(self.models))}",
            param="model",
            suggestions=["run `wan models list` to see every model and its variants"]
            + _close_matches(model_id, list(self.models) + list(self._by_name)),
        )


def _path_key(path: str) -> str:
    import hashlib

    return hashlib.sha256(path.encode()).hexdigest()[:16]


def _close_matches(word: str, choices: list[str]) -> list[str]:
    import difflib

    return [f"did you mean {match}?" for match in difflib.get_close_matches(word, choices, n=2, cutoff=0.6)]


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Orders `2.10.0` after `2.9.1`: numeric parts compare as numbers, others as text (after numbers)."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"[.+-]", version))


# -- loading -------------------------------------------------------------------------------------------------


@cache
def packaged_manifest_path() -> Path:
    """The manifest shipped inside the package (with the bundled dev variants)."""
    return Path(str(resources.files("wanstudio.orchestrator") / "catalog" / "models.toml"))


def load_manifest(
    path: Path | None = None, *, require_signature: bool = False, trusted_keys: Sequence[Path | str] = ()
) -> Manifest:
    """Read and validate the manifest at `path` (default: the packaged one); parsed once per file version.

    With `require_signature`, a manifest given by path must carry a valid `models.toml.sig` by one of
    `trusted_keys` (files, folders or base64 keys, as in WAN_TRUSTED_KEYS), or SIGNATURE_INVALID is raised
    before its content is parsed at all. The result is cached by the stat of the manifest, its signature
    and the key files, so a warm call verifies nothing again. The packaged manifest (`path` None) is exempt:
    it is part of the installed package, as trustworthy as the code that would check it (docs/manifest.md).
    """
    packaged = path is None
    path = path or packaged_manifest_path()
    try:
        info = path.stat()
    except OSError as exc:
        raise ManifestInvalidError(
            f"cannot read the manifest {path}: {exc.strerror or exc}",
            suggestions=["check WAN_MODELS_MANIFEST, or unset it to use the packaged manifest"],
        ) from None
    if require_signature and not packaged:
        from wanstudio.orchestrator import signing  # a light module: cryptography loads on the first verification

        keys = tuple(trusted_keys)
        state = (signing.stat_key(signing.signature_path(path)), signing.trusted_keys_state(keys))
        return _load_signed_version(path, info.st_mtime_ns, info.st_size, keys, state)
    return _load_manifest_version(path, info.st_mtime_ns, info.st_size)


def load_configured_manifest(settings: Settings) -> Manifest:
    """The manifest the settings name (WAN_MODELS_MANIFEST, else the packaged one), its signature checked when
    WAN_REQUIRE_SIGNED_MANIFEST is set: the one way commands and the API should load it."""
    return load_manifest(
        settings.manifest_path, require_signature=settings.require_signed_manifest, trusted_keys=settings.trusted_keys
    )


@lru_cache(maxsize=8)
def _load_manifest_version(path: Path, _mtime_ns: int, _size: int) -> Manifest:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestInvalidError(f"cannot read the manifest {path}: {exc.strerror or exc}") from None
    return parse_manifest(text, origin=str(path))


@lru_cache(maxsize=8)
def _load_signed_version(path: Path, _mtime_ns: int, _size: int, keys: tuple[Path | str, ...], _state: object) -> Manifest:
    """Verify, then parse, the very same bytes (a failure is not cached: lru_cache keeps only results)."""
    from wanstudio.orchestrator.signing import verify_manifest_bytes

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ManifestInvalidError(f"cannot read the manifest {path}: {exc.strerror or exc}") from None
    verify_manifest_bytes(data, path, keys)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestInvalidError(f"manifest {path} is not UTF-8 text") from None
    return parse_manifest(text, origin=str(path))


def parse_manifest(text: str, origin: str = "<memory>") -> Manifest:
    """Validate manifest TOML text into a Manifest; errors name `origin`, the model and the key."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestInvalidError(
            f"manifest {origin} is not valid TOML: {exc}", suggestions=["fix the TOML syntax at the position named"]
        ) from None
    document = migrate_document(document, origin)
    models_table = document.get("models", {})
    if not isinstance(models_table, dict):
        raise ManifestInvalidError(f"manifest {origin}: 'models' must be a table of models keyed by id")
    models = {model_id: _parse_model(model_id, raw, origin) for model_id, raw in models_table.items()}
    manifest = Manifest(models=models, origin=origin)
    _check_base_models(manifest)
    return manifest


def is_model_id(text: str) -> bool:
    """Whether `text` has the form of a canonical id, ``name@version``."""
    return bool(_MODEL_ID.match(text))


# -- schema migration -----------------------------------------------------------------------------------------


def _migrate_0_to_1(document: dict[str, Any]) -> dict[str, Any]:
    """Schema 0 (pre-release) keyed files by path (`files = {"a.json" = {size, sha256}}`) and said `default`."""
    for model in document.get("models", {}).values():
        if isinstance(model, dict) and "default" in model and "default_variant" not in model:
            model["default_variant"] = model.pop("default")
        for variant in (model.get("variants", {}) if isinstance(model, dict) else {}).values():
            files = variant.get("files") if isinstance(variant, dict) else None
            if isinstance(files, dict):
                variant["files"] = [{"path": path, **meta} for path, meta in files.items()]
    document["schema_version"] = 1
    return document


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _migrate_0_to_1}
"""Adapters from schema version N to N+1, applied in order until SCHEMA_VERSION is reached."""


def migrate_document(document: dict[str, Any], origin: str = "<memory>") -> dict[str, Any]:
    """Upgrade a parsed manifest document to SCHEMA_VERSION, or MANIFEST_INVALID saying how to migrate."""
    version = document.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ManifestInvalidError(
            f"manifest {origin} has no integer schema_version; add `schema_version = {SCHEMA_VERSION}` at the top",
        )
    while version < SCHEMA_VERSION and version in MIGRATIONS:
        document = MIGRATIONS[version](document)
        version = document["schema_version"]
    if version != SCHEMA_VERSION:
        raise ManifestInvalidError(
            f"manifest {origin} has schema_version {version}, which this wanstudio does not know "
            f"(it reads versions {min(MIGRATIONS)} to {SCHEMA_VERSION}): upgrade wanstudio for a newer manifest, "
            "or rewrite an older one with `wan models migrate-manifest`",
            suggestions=[
                "upgrade wanstudio if the manifest is newer (pip install -U wanstudio)",
                f"or rewrite an older manifest with `wan models migrate-manifest {origin}`",
            ],
        )
    return document


@dataclass(frozen=True)
class MigrationResult:
    """What `migrate_manifest_file` did: versions, where the result went, whether a signature is now stale."""

    source: Path
    target: Path
    from_version: int
    written: bool
    signature_stale: bool
    to_version: int = SCHEMA_VERSION

    @property
    def migrated(self) -> bool:
        return self.from_version != self.to_version


def migrate_manifest_file(source: Path, target: Path | None = None) -> MigrationResult:
    """Rewrite an older manifest at SCHEMA_VERSION (in place, or to `target`), validated, in one rename.

    The document is rewritten whole with `tomli_w`, so comments are lost (a first line says so). A newer
    manifest is refused (upgrade wanstudio instead); a current one is left as it is, or copied verbatim to
    `target`. A `.sig` next to the target no longer matches after a rewrite: `signature_stale` says so.
    """
    from wanstudio.orchestrator.signing import signature_path, write_atomically

    target = target or source
    try:
        data = source.read_bytes()
        mode = source.stat().st_mode & 0o777
        document = tomllib.loads(data.decode("utf-8"))
    except OSError as exc:
        raise ManifestInvalidError(f"cannot read the manifest {source}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ManifestInvalidError(f"manifest {source} is not valid TOML: {exc}") from None
    version = document.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise ManifestInvalidError(
            f"manifest {source} has schema_version {version}, newer than this wanstudio understands (up to "
            f"{SCHEMA_VERSION}); migrate-manifest only upgrades older manifests: upgrade wanstudio to read it",
            suggestions=["pip install -U wanstudio", "or ask whoever publishes the manifest for a schema_version 1 copy"],
        )
    upgraded = migrate_document(document, str(source))  # MANIFEST_INVALID for a missing or unknown old version
    if version == SCHEMA_VERSION:
        out = data
    else:
        import tomli_w

        out = (f"# Migrated from schema_version {version} by `wan models migrate-manifest`; comments of the "
               f"original were not kept.\n{tomli_w.dumps(upgraded)}").encode("utf-8")
    try:
        parse_manifest(out.decode("utf-8"), origin=str(target))
    except (ManifestInvalidError, PathInvalidError) as exc:
        raise type(exc)(f"the migrated manifest would be invalid, so nothing was written: {exc.message}",
                        suggestions=exc.suggestions) from None
    written = out != data or target.resolve() != source.resolve()
    if written:
        write_atomically(target, out, mode=mode)
    stale = out != data and signature_path(target).exists()
    return MigrationResult(source, target, int(version), written, stale)


# -- validation -----------------------------------------------------------------------------------------------


class _Fields:
    """Typed access to one TOML table whose errors name the manifest, model and key."""

    def __init__(self, table: Any, where: str, origin: str, model_id: str) -> None:
        self.where, self.origin, self.model_id = where, origin, model_id
        if not isinstance(table, dict):
            self.fail(f"{where} must be a table")
        self.table: dict[str, Any] = table

    def fail(self, problem: str) -> None:
        raise ManifestInvalidError(
            f"manifest {self.origin}, model {self.model_id}: {problem}",
            suggestions=["fix the manifest entry named above (see the manifest format in docs/manifest.md)"],
        )

    def get(self, key: str, kind: type | tuple[type, ...], *, required: bool = False, default: Any = None) -> Any:
        if key not in self.table:
            if required:
                self.fail(f"{self.where}.{key} is required")
            return default
        value = self.table[key]
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            self.fail(f"{self.where}.{key} must be of type {names}, not {type(value).__name__}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        values = self.get(key, list, default=[])
        if not all(isinstance(v, str) for v in values):
            self.fail(f"{self.where}.{key} must be a list of strings")
        return tuple(values)


def _parse_model(model_id: str, raw: Any, origin: str) -> Model:
    where = f'models."{model_id}"'
    fields = _Fields(raw, where, origin, model_id)
    if not _MODEL_ID.match(model_id):
        fields.fail(f"{where}: the id must be name@version using letters, digits, '.', '_' and '-' (e.g. ti2v-5B@2.2.0)")
    family = fields.get("family", str, required=True)
    if not _SIMPLE_NAME.match(family):
        fields.fail(f"{where}.family {family!r} must use letters, digits, '.', '_' and '-' only")
    kind = fields.get("kind", str, default="model")
    if kind not in KINDS:
        fields.fail(f"{where}.kind {kind!r} must be one of {', '.join(KINDS)}")
    lora = kind == "lora"
    hf = _parse_hub_ref(fields.get("hf", dict), f"{where}.hf", fields)
    variants_raw = fields.get("variants", dict, required=True)
    variants: dict[str, Variant] = {}
    for name, raw_v in variants_raw.items():
        if lora:
            _check_lora_variant(raw_v, f"{where}.variants.{name}", fields)
        variants[name] = _parse_variant(name, raw_v, hf, f"{where}.variants.{name}", fields)
    if not variants:
        fields.fail(f"{where}.variants must define at least one variant")
    default_variant = fields.get("default_variant", str, required=True)
    if default_variant not in variants:
        fields.fail(f"{where}.default_variant {default_variant!r} is not one of its variants ({', '.join(sorted(variants))})")
    task = fields.get("task", str, required=not lora, default="")
    if task not in TASKS and not (lora and task == ""):
        fields.fail(f"{where}.task {task!r} must be one of {', '.join(TASKS)}")
    base_models = fields.strings("base_models")
    if lora and not base_models:
        fields.fail(f'{where}.base_models is required for kind = "lora": the ids of the models it is made for, '
                    'e.g. base_models = ["ti2v-5B@2.2.0"]')
    if not lora and "base_models" in fields.table:
        fields.fail(f'{where}.base_models is only for LoRA entries: add kind = "lora", or remove it')
    return Model(
        id=model_id,
        family=family,
        task=task,
        default_variant=default_variant,
        variants=variants,
        description=fields.get("description", str, default=""),
        optional_components=fields.strings("optional_components"),
        hf=hf,
        kind=kind,
        base_models=base_models,
    )


def _check_lora_variant(raw: Any, where: str, parent: _Fields) -> None:
    """A LoRA variant lists exactly one file, a required .safetensors: what `find_lora` hands to the loader.
    Checked on the raw table, before the generic variant rules, so that the message speaks of LoRAs."""
    fields = _Fields(raw, where, parent.origin, parent.model_id)
    files = fields.get("files", list, default=[])
    if "hf_allow_patterns" in fields.table or not files:
        fields.fail(f"{where} of a LoRA must list its one {LORA_FILE_SUFFIX} file in `files` (path, size, sha256); "
                    "a file list from the Hub (hf_allow_patterns) is for models")
    paths = [entry.get("path") if isinstance(entry, dict) else entry for entry in files]
    if len(files) != 1:
        fields.fail(f"{where} of a LoRA must list exactly one {LORA_FILE_SUFFIX} file, not {len(files)} "
                    f"({', '.join(repr(p) for p in paths)})")
    [entry] = files
    if isinstance(entry, dict):
        if isinstance(entry.get("path"), str) and not entry["path"].endswith(LORA_FILE_SUFFIX):
            fields.fail(f"{where}: the file of a LoRA must be a {LORA_FILE_SUFFIX} file, not {entry['path']!r}")
        if entry.get("optional") is True:
            fields.fail(f"{where}: the file of a LoRA is the LoRA itself and cannot be optional")


def _check_base_models(manifest: Manifest) -> None:
    """Each LoRA's base_models name video models of the same manifest (ids, or bare names of models)."""
    for model in manifest.models.values():
        for base in model.base_models:
            try:
                target = manifest.resolve(base)
            except ModelNotFoundError:
                target = None
            if target is None or target.is_lora:
                models = sorted(m.id for m in manifest.models.values() if not m.is_lora)
                what = "is a LoRA" if target is not None else "is not in the manifest"
                raise ManifestInvalidError(
                    f'manifest {manifest.origin}, model {model.id}: models."{model.id}".base_models names {base!r}, '
                    f"which {what}; base models are the video models of this manifest: {', '.join(models) or 'none'}",
                    suggestions=["fix the manifest entry named above (see the manifest format in docs/manifest.md)"],
                )


def _parse_hub_ref(raw: dict[str, Any] | None, where: str, parent: _Fields, inherited: HubRef | None = None) -> HubRef | None:
    if raw is None:
        return inherited
    fields = _Fields(raw, where, parent.origin, parent.model_id)
    repo = fields.get("repo", str, required=inherited is None) or (inherited.repo if inherited else "")
    if inherited is not None and repo != inherited.repo:
        inherited = None  # another repo: the model's revision and subfolder do not apply to it
    revision = fields.get("revision", str, default=inherited.revision if inherited else "main")
    subfolder = fields.get("subfolder", str, default=inherited.subfolder if inherited else None)
    return HubRef(repo=repo, revision=revision, subfolder=subfolder)


def _parse_variant(name: str, raw: Any, model_hf: HubRef | None, where: str, parent: _Fields) -> Variant:
    fields = _Fields(raw, where, parent.origin, parent.model_id)
    if not _SIMPLE_NAME.match(name):
        fields.fail(f"{where}: the variant name must use letters, digits, '.', '_' and '-' only")
    hf = _parse_hub_ref(fields.get("hf", dict), f"{where}.hf", fields, inherited=model_hf)
    patterns = fields.strings("hf_allow_patterns")
    files_raw = fields.get("files", list, default=[])
    if not files_raw and not patterns:
        fields.fail(f"{where} must list `files` or give `hf_allow_patterns` to take the file list from the Hub")
    if patterns and hf is None:
        fields.fail(f"{where}.hf_allow_patterns needs a Hub repository: add an `hf` table with `repo` to the model")
    files = tuple(_parse_file(i, entry, f"{where}.files[{i}]", fields, digest_required=not patterns) for i, entry in enumerate(files_raw))
    _check_paths(files, where, parent)
    return Variant(name=name, files=files, dtype=fields.get("dtype", str), hf=hf, hf_allow_patterns=patterns)


def _parse_file(index: int, raw: Any, where: str, parent: _Fields, *, digest_required: bool) -> ManifestFile:
    fields = _Fields(raw, where, parent.origin, parent.model_id)
    path = fields.get("path", str, required=True)
    size = fields.get("size", int, required=True)
    if size < 0:
        fields.fail(f"{where}.size must be 0 or more bytes, not {size}")
    sha256 = fields.get("sha256", str, required=digest_required)
    if sha256 is not None and not _SHA256.match(sha256):
        fields.fail(f"{where}.sha256 must be 64 lower-case hex characters, not {sha256!r}")
    return ManifestFile(
        path=path,
        size=size,
        sha256=sha256,
        component=fields.get("component", str),
        optional=fields.get("optional", bool, default=False),
    )


def _check_paths(files: Iterable[ManifestFile], where: str, parent: _Fields) -> None:
    paths = [f.path for f in files]
    for path in paths:
        problem = path_problem(path)
        if problem:
            raise PathInvalidError(
                f"manifest {parent.origin}, model {parent.model_id}, {where}: file {path!r} is unsafe: {problem}",
                suggestions=["use a relative, '/'-separated path inside the variant folder with portable names"],
            )
    duplicates = sorted(path for path, count in Counter(paths).items() if count > 1)
    if duplicates:
        parent.fail(f"{where} lists {duplicates[0]!r} more than once")
    collisions = case_collisions(paths)
    if collisions:
        first, second = collisions[0]
        raise PathInvalidError(
            f"manifest {parent.origin}, model {parent.model_id}, {where}: {first!r} and {second!r} differ only by case "
            "and would overwrite each other on Windows and macOS",
            suggestions=["rename one of them so that the names differ by more than letter case"],
        )
