"""The LoRA catalogue: LoRA files kept in the store, and LoRA entries of the manifest, found by name.

Two kinds of LoRA have names:

- **Catalogue files**: one flat folder, ``{MODELS_ROOT}/loras/<name>.safetensors``; the name is the file's
  stem. A name is letters, digits, ``.``, ``_``, ``-`` and ``+`` (at most 128, starting with a letter or
  digit, no ``..``), so a name can never leave the folder; a catalogue file that is a link out of the store
  is refused, as the store refuses such links everywhere. Sub-folders are not part of the catalogue (and
  the store's variant scan would take ``loras/<a>/<b>/`` for a variant folder), so keep it flat. Files are
  added by a rename after they passed ``inspect_lora``, so a half-written upload never shows up under its
  name.
- **Manifest LoRAs**: entries of ``models.toml`` with ``kind = "lora"`` (docs/manifest.md), one
  ``.safetensors`` file per variant, ensured by the orchestrator exactly like a model (sources, verification,
  atomic commit, locks, resume, gc, pins) into ``{MODELS_ROOT}/{family}/{id}/{variant}/``. They are named by
  canonical id (``film-grain@1.0``) or bare name (``film-grain``: the highest version).

``find_lora`` resolves a path, then a catalogue file, then a manifest LoRA (so a catalogue file shadows a
manifest LoRA's bare name, never its canonical id). Looking a manifest LoRA up touches neither the disk nor
the network; ``fetch=True`` (what applying a LoRA to a job does) ensures it first, downloading it if needed,
which also records the use for gc.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from dataclasses import replace as replace_fields
from pathlib import Path
from typing import TYPE_CHECKING

from wanstudio.config import Settings
from wanstudio.engine._lora_file import DEFAULT_MAX_LORA_BYTES, LoraInfo, inspect_lora
from wanstudio.errors import InvalidParamsError, ModelNotFoundError, WanError
from wanstudio.orchestrator._fsutil import resolves_outside, unique_name
from wanstudio.orchestrator.layout import StoreLayout
from wanstudio.orchestrator.manifest import Model, is_model_id, load_configured_manifest

if TYPE_CHECKING:
    from wanstudio.orchestrator.orchestrator import Orchestrator

LORA_SUFFIX = ".safetensors"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_MAX_ID_LENGTH = 200


@dataclass(frozen=True)
class CatalogEntry:
    """One LoRA: a catalogue file (`source` "catalogue") or a manifest LoRA (`source` "manifest", named by its
    id, with its variant's `state` on disk and its `base_models`); `info` when it was inspected, `problem`
    when it could not be. A manifest LoRA's `path` is where its file is once ensured."""

    name: str
    path: Path
    size_bytes: int
    info: LoraInfo | None = None
    problem: str | None = None
    source: str = "catalogue"
    state: str = "complete"  # a catalogue file is there; a manifest LoRA: complete, partial, missing or corrupt
    base_models: tuple[str, ...] | None = None  # None: not known (a catalogue file does not say)
    variant: str | None = None  # a manifest LoRA's variant

    def to_json(self) -> dict:
        document = {
            "name": self.name,
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "source": self.source,
            "state": self.state,
            "base_models": None if self.base_models is None else list(self.base_models),
        }
        if self.variant is not None:
            document["variant"] = self.variant
        if self.info is not None:
            document.update({k: v for k, v in self.info.to_json().items() if k not in document})
        if self.problem is not None:
            document["problem"] = self.problem
        return document


def lora_dir(settings: Settings) -> Path:
    """The catalogue folder, ``{MODELS_ROOT}/loras`` (MODELS_ROOT_UNSET when the store has no root)."""
    return settings.require_models_root() / "loras"


def is_lora_path(text: str) -> bool:
    """Whether `text` names a file (it has a folder separator, or starts with ``~``) rather than a catalogue name."""
    return "/" in text or "\\" in text or text.startswith("~")


def check_lora_name(name: str, *, param: str = "lora", catalogue: bool = False) -> str:
    """`name` without a ``.safetensors`` suffix, when it is a valid LoRA name: a catalogue name or, unless
    `catalogue` (the name of a file to write in the catalogue), a manifest id ``name@version``;
    INVALID_PARAMS otherwise."""
    if not isinstance(name, str):
        raise InvalidParamsError(f"a LoRA name must be text, not {type(name).__name__}", param=param)
    stem = name[: -len(LORA_SUFFIX)] if name.lower().endswith(LORA_SUFFIX) else name
    if not catalogue and len(stem) <= _MAX_ID_LENGTH and is_model_id(stem):
        return stem  # a manifest LoRA's canonical id: it names a manifest entry, never a file
    if not _NAME.match(stem) or ".." in stem:
        raise InvalidParamsError(
            f"LoRA name {name!r} is not valid: a name is 1 to 128 letters, digits, '.', '_', '-' or '+', starting "
            "with a letter or digit, without '..' or folder separators (it names a file in the LoRA catalogue)"
            + ("" if catalogue else ", or the id name@version of a LoRA entry of the manifest"),
            param=param,
            suggestions=["list the catalogue's names (the files in MODELS_ROOT/loras)"]
            + ([] if catalogue else ["or the manifest's LoRAs (GET /v1/loras, wan models list)"]),
        )
    return stem


def find_lora(
    name_or_path: str, settings: Settings, *, fetch: bool = False, orchestrator: Orchestrator | None = None
) -> Path:
    """The file of a path (only ones with a separator or ``~`` count as paths), a catalogue name, or a manifest
    LoRA (canonical id, or bare name for the highest version), in that order.

    A manifest LoRA is only looked up unless `fetch`: the path returned is where its file is once ensured (it
    may not be there yet), so validating a job stays cheap and off the network. With `fetch`, it is ensured
    through `orchestrator` (default: one for `settings`), downloading and verifying it if needed, and the
    committed file is returned. INVALID_PARAMS (param ``lora``) when the name is malformed, names no LoRA
    (the message lists the catalogue's and the manifest's), or the path is not a file; an ensure's own
    errors (SOURCE_UNAVAILABLE, CHECKSUM_FAIL, ...) as they are.
    """
    if is_lora_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            what = "does not exist" if not path.exists() else "is not a file"
            raise InvalidParamsError(
                f"LoRA file {name_or_path} {what}",
                param="lora",
                suggestions=["check the path, or put the file in MODELS_ROOT/loras and give its name"],
            )
        return path.absolute()
    stem = check_lora_name(name_or_path)
    folder = lora_dir(settings)
    path = folder / f"{stem}{LORA_SUFFIX}"
    if is_model_id(stem) or not path.is_file():
        model = manifest_lora(stem, settings)
        if model is not None:
            if not fetch:
                return lora_file_path(model, settings)
            from wanstudio.orchestrator.orchestrator import Orchestrator

            ensured = (orchestrator or Orchestrator(settings)).ensure(model.id)
            return ensured.path / model.variant().files[0].path
        names = [entry.name for entry in list_loras(settings)]
        more = " ..." if len(names) > 20 else ""
        available = f"available: {', '.join(names[:20])}{more}" if names else "it is empty"
        raise InvalidParamsError(
            f"there is no LoRA named {stem!r} in the catalogue {folder} or among the manifest's LoRAs ({available})",
            param="lora",
            suggestions=[f"copy the LoRA file to {folder / (stem.partition('@')[0] + LORA_SUFFIX)}",
                         "or give the file's path (e.g. ./my_lora.safetensors)",
                         'or add it to the manifest as an entry with kind = "lora" (docs/manifest.md)'],
        )
    if resolves_outside(path, folder):
        raise InvalidParamsError(
            f"LoRA {stem!r} is a link out of the catalogue {folder} to {os.path.realpath(path)}; the store does not "
            "follow links out of MODELS_ROOT",
            param="lora",
            suggestions=[f"copy the file into {folder} instead of linking it"],
        )
    return path


def manifest_lora(name: str, settings: Settings) -> Model | None:
    """The manifest's LoRA entry for a canonical id or a bare name; None when no LoRA entry has that name.
    Reads the configured manifest only (parsed once per file version): no store, no network."""
    try:
        model = load_configured_manifest(settings).resolve(name)
    except ModelNotFoundError:
        return None
    return model if model.is_lora else None


def lora_file_path(model: Model, settings: Settings, variant: str | None = None) -> Path:
    """Where a manifest LoRA's file is once ensured: ``{MODELS_ROOT}/{family}/{id}/{variant}/{path}``."""
    chosen = model.variant(variant)
    folder = StoreLayout(settings.require_models_root()).variant_dir(model.family, model.id, chosen.name)
    return folder / chosen.files[0].path


def list_loras(
    settings: Settings, *, inspect: bool = False, max_bytes: int | None = DEFAULT_MAX_LORA_BYTES
) -> list[CatalogEntry]:
    """The catalogue's files sorted by name, then the manifest's LoRAs sorted by id (default variant, with its
    state on disk); with `inspect`, each file present is read (a bad file gets a `problem`). Reads only."""
    return _catalogue_files(settings, inspect, max_bytes) + _manifest_loras(settings, inspect, max_bytes)


def _manifest_loras(settings: Settings, inspect: bool, max_bytes: int | None) -> list[CatalogEntry]:
    from wanstudio.orchestrator.orchestrator import Orchestrator

    manifest = load_configured_manifest(settings)
    models = sorted((m for m in manifest.models.values() if m.is_lora), key=lambda m: m.id)
    if not models:
        return []
    orchestrator = Orchestrator(settings, manifest=manifest)
    entries = []
    for model in models:
        variant = model.variant()
        status = orchestrator.status(model.id, variant.name)
        path = status.path / variant.files[0].path
        info, problem = None, None
        if inspect and status.complete:
            try:
                info = inspect_lora(path, max_bytes=max_bytes, label=model.id)
            except WanError as exc:
                problem = exc.message
        entries.append(CatalogEntry(model.id, path, variant.files[0].size, info, problem, source="manifest",
                                    state=status.state, base_models=model.base_models, variant=variant.name))
    return entries


def _catalogue_files(settings: Settings, inspect: bool, max_bytes: int | None) -> list[CatalogEntry]:
    folder = lora_dir(settings)
    try:
        candidates = sorted(folder.iterdir())
    except OSError:
        return []
    entries = []
    for path in candidates:
        if not path.name.endswith(LORA_SUFFIX) or path.name.startswith(".") or not path.is_file():
            continue
        stem = path.name[: -len(LORA_SUFFIX)]
        if not _NAME.match(stem) or ".." in stem or resolves_outside(path, folder):
            continue
        info, problem = None, None
        if inspect:
            try:
                info = inspect_lora(path, max_bytes=max_bytes, label=stem)
            except WanError as exc:
                problem = exc.message
        entries.append(CatalogEntry(stem, path, path.stat().st_size, info, problem))
    return entries


def install_lora(
    source: Path,
    name: str,
    settings: Settings,
    *,
    max_bytes: int | None = DEFAULT_MAX_LORA_BYTES,
    replace: bool = False,
    move: bool = False,
) -> CatalogEntry:
    """Add a file (an upload, say) to the catalogue under `name`, once it passed `inspect_lora`.

    The file is copied (or moved, with `move`) to a private temporary name in the catalogue folder and renamed
    into place, so readers never see half a file. INVALID_PARAMS for a bad name or file, or an existing name
    without `replace`.
    """
    stem = check_lora_name(name, catalogue=True)
    inspect_lora(source, max_bytes=max_bytes, label=stem)  # refuse early, before copying anything
    folder = lora_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{stem}{LORA_SUFFIX}"
    if target.exists() and not replace:
        raise InvalidParamsError(
            f"a LoRA named {stem!r} is already in the catalogue {folder}",
            param="name",
            suggestions=["choose another name, or replace the existing one"],
        )
    tmp = folder / (unique_name(f".{stem}") + ".tmp")
    try:
        if move:
            shutil.move(str(source), tmp)
        else:
            shutil.copyfile(source, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        info = inspect_lora(tmp, max_bytes=max_bytes, label=stem)  # what is published is what was checked
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return CatalogEntry(stem, target, info.size_bytes, replace_fields(info, path=target))
