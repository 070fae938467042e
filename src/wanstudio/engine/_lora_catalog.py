"""The LoRA catalogue: LoRA files kept in the store, found by name.

Layout: one flat folder, ``{MODELS_ROOT}/loras/<name>.safetensors``; the name is the file's stem. A name is
letters, digits, ``.``, ``_``, ``-`` and ``+`` (at most 128, starting with a letter or digit, no ``..``),
so a name can never leave the folder; a catalogue file that is a link out of the store is refused, as the
store refuses such links everywhere. Sub-folders are not part of the catalogue (and the store's variant
scan would take ``loras/<a>/<b>/`` for a variant folder), so keep it flat. Files are added by a rename
after they passed ``inspect_lora``, so a half-written upload never shows up under its name.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from dataclasses import replace as replace_fields
from pathlib import Path

from wanstudio.config import Settings
from wanstudio.engine._lora_file import DEFAULT_MAX_LORA_BYTES, LoraInfo, inspect_lora
from wanstudio.errors import InvalidParamsError, WanError
from wanstudio.orchestrator._fsutil import resolves_outside, unique_name

LORA_SUFFIX = ".safetensors"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


@dataclass(frozen=True)
class CatalogEntry:
    """One file of the catalogue; `info` when it was inspected, `problem` when it could not be."""

    name: str
    path: Path
    size_bytes: int
    info: LoraInfo | None = None
    problem: str | None = None

    def to_json(self) -> dict:
        document = {"name": self.name, "path": str(self.path), "size_bytes": self.size_bytes}
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


def check_lora_name(name: str, *, param: str = "lora") -> str:
    """`name` without a ``.safetensors`` suffix, when it is a valid catalogue name; INVALID_PARAMS otherwise."""
    if not isinstance(name, str):
        raise InvalidParamsError(f"a LoRA name must be text, not {type(name).__name__}", param=param)
    stem = name[: -len(LORA_SUFFIX)] if name.lower().endswith(LORA_SUFFIX) else name
    if not _NAME.match(stem) or ".." in stem:
        raise InvalidParamsError(
            f"LoRA name {name!r} is not valid: a name is 1 to 128 letters, digits, '.', '_', '-' or '+', starting "
            "with a letter or digit, without '..' or folder separators (it names a file in the LoRA catalogue)",
            param=param,
            suggestions=["list the catalogue's names (the files in MODELS_ROOT/loras)"],
        )
    return stem


def find_lora(name_or_path: str, settings: Settings) -> Path:
    """The file of a catalogue name, or of a path (only ones with a separator or ``~`` count as paths).

    INVALID_PARAMS (param ``lora``) when the name is malformed, absent from the catalogue (the message lists
    what is there), or the path is not a file.
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
    if not path.is_file():
        names = [entry.name for entry in list_loras(settings)]
        more = " ..." if len(names) > 20 else ""
        available = f"available: {', '.join(names[:20])}{more}" if names else "it is empty"
        raise InvalidParamsError(
            f"there is no LoRA named {stem!r} in the catalogue {folder} ({available})",
            param="lora",
            suggestions=[f"copy the LoRA file to {path}", "or give the file's path (e.g. ./my_lora.safetensors)"],
        )
    if resolves_outside(path, folder):
        raise InvalidParamsError(
            f"LoRA {stem!r} is a link out of the catalogue {folder} to {os.path.realpath(path)}; the store does not "
            "follow links out of MODELS_ROOT",
            param="lora",
            suggestions=[f"copy the file into {folder} instead of linking it"],
        )
    return path


def list_loras(
    settings: Settings, *, inspect: bool = False, max_bytes: int | None = DEFAULT_MAX_LORA_BYTES
) -> list[CatalogEntry]:
    """The catalogue, sorted by name; with `inspect`, each file's header is read (a bad file gets a `problem`)."""
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
    stem = check_lora_name(name)
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
