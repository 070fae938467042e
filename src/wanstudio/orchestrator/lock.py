"""`wan models lock`: record what the Hub lists for a variant (paths, sizes, sha256, the commit) in a manifest.

A variant that takes its file list from the Hub (`hf_allow_patterns`) depends on the Hub at every cold
ensure and follows its branch as it moves. Locking pins it: the manifest then lists every file with its
size and sha256 and names the commit, so any source (a mirror, S3) can serve it, offline too, and a
changed file upstream is a CHECKSUM_FAIL instead of a silent update. The Hub gives sha256 for LFS files
only; small files are fetched (verified against their git blob id) and hashed.

The manifest is rewritten whole with `tomli_w`: values are kept, comments are not.
"""

from __future__ import annotations

import logging
import tempfile
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

from wanstudio.errors import InvalidParamsError, ManifestInvalidError
from wanstudio.orchestrator._fsutil import unique_name
from wanstudio.orchestrator.manifest import ManifestFile, Model, Variant, packaged_manifest_path, parse_manifest
from wanstudio.orchestrator.signing import signature_path
from wanstudio.orchestrator.orchestrator import Orchestrator
from wanstudio.orchestrator.sources import FileRequest
from wanstudio.orchestrator.transfer import Expected

log = logging.getLogger("wanstudio.lock")


@dataclass(frozen=True)
class LockedVariant:
    """One variant as locked: its repository, the commit, and the files recorded."""

    id: str
    variant: str
    repo: str
    revision: str
    files: int
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


def lock_manifest(orchestrator: Orchestrator, model_ids: Iterable[str], output: Path | None) -> tuple[Path, list[LockedVariant]]:
    """Lock the Hub-listed variants of the named models (all when none) and write the manifest to `output`."""
    source_path = orchestrator.settings.manifest_path or packaged_manifest_path()
    target = output or orchestrator.settings.manifest_path
    if target is None:
        raise InvalidParamsError(
            "the packaged manifest cannot be changed: say where the locked manifest goes",
            param="output",
            suggestions=["wan models lock --output models.toml, then export WAN_MODELS_MANIFEST=$PWD/models.toml"],
        )
    manifest = orchestrator.manifest
    models = [manifest.resolve(m) for m in model_ids] or list(manifest.models.values())
    document = tomllib.loads(source_path.read_text(encoding="utf-8"))
    locked: list[LockedVariant] = []
    for model in models:
        for variant in model.variants.values():
            if not variant.hf_allow_patterns:
                continue
            listed = orchestrator.list_from_hub(model, variant)
            files = _with_sha256(orchestrator, model, listed)
            assert listed.hf is not None
            _record(document, model, listed, files)
            locked.append(LockedVariant(model.id, variant.name, listed.hf.repo, listed.hf.revision, len(files),
                                        sum(f.size for f in files)))
            log.info("locked %s [%s] at %s@%s: %d files", model.id, variant.name, listed.hf.repo, listed.hf.revision, len(files))
    if not locked:
        raise InvalidParamsError(
            f"none of {', '.join(m.id for m in models)} has a variant that takes its files from the Hub "
            "(`hf_allow_patterns`): there is nothing to lock",
            param="model",
        )
    _write(document, target)
    return target, locked


def _with_sha256(orchestrator: Orchestrator, model: Model, variant: Variant) -> list[ManifestFile]:
    """The variant's files, each with its sha256: small files are fetched through the transfer engine."""
    hub = orchestrator.hub_source()
    assert hub is not None  # list_from_hub succeeded
    result = []
    with tempfile.TemporaryDirectory(prefix="wan-lock-") as scratch:
        for file in variant.files:
            if file.sha256 is None:
                request = FileRequest(model, variant, file)
                fetched = orchestrator.transfer.fetch(
                    hub.locate(request),
                    Path(scratch) / unique_name("lock"),
                    Expected(file.size, None, file.git_blob_id, request.label, hub.name, file.path),
                )
                file = replace(file, sha256=fetched.sha256, git_blob_id=None)
            result.append(file)
    return result


def _record(document: dict[str, Any], model: Model, variant: Variant, files: list[ManifestFile]) -> None:
    assert variant.hf is not None
    table = document["models"][model.id]["variants"][variant.name]
    table["files"] = [
        {k: v for k, v in {"path": f.path, "size": f.size, "sha256": f.sha256, "component": f.component}.items() if v is not None}
        for f in files
    ]
    pinned: dict[str, str] = {"repo": variant.hf.repo, "revision": variant.hf.revision}
    if variant.hf.subfolder:
        pinned["subfolder"] = variant.hf.subfolder
    table["hf"] = pinned


def _write(document: dict[str, Any], target: Path) -> None:
    """Validate the new manifest, then replace `target` with it in one rename."""
    import tomli_w

    text = tomli_w.dumps(document)
    try:
        parse_manifest(text, origin=str(target))
    except ManifestInvalidError as exc:  # a bug here must not leave a manifest that no command can read
        raise ManifestInvalidError(f"the locked manifest would be invalid, so {target} was left as it was: {exc.message}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{unique_name('lock')}")
    staging.write_text(text, encoding="utf-8")
    staging.replace(target)
    if signature_path(target).exists():
        log.warning("%s changed, so its signature %s no longer matches it: sign it again with `wan models sign`",
                    target, signature_path(target))
