"""`wan models keygen`, `sign`, `verify-manifest` and `migrate-manifest`: the manifest's integrity and its schema.

The commands are thin: keys and signatures live in `wanstudio.orchestrator.signing`, migration in
`wanstudio.orchestrator.manifest`. Both (and `cryptography`) are imported inside the commands, so that
`wan` starts as fast as before for every other command. No output ever contains private key material.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from wanstudio.cli._output import emit_json, reporting
from wanstudio.cli.models import JsonOption, models_app
from wanstudio.config import Settings
from wanstudio.errors import InvalidParamsError


@models_app.command("keygen")
def keygen(
    out: Path = typer.Option(..., "--out", help="Prefix of the files to write: PREFIX.key (private, 0600) and PREFIX.pub."),
    force: bool = typer.Option(False, "--force", help="Replace an existing key pair with the same prefix."),
    as_json: bool = JsonOption,
) -> None:
    """Make an Ed25519 key pair for signing manifests (PREFIX.key stays secret; PREFIX.pub is trusted)."""
    schema = "wan.models.keygen/1"
    with reporting(schema, as_json):
        from wanstudio.orchestrator.signing import write_key_pair

        private_path, public_path, pair = write_key_pair(out.expanduser().absolute(), overwrite=force)
        document = {
            "private_key": str(private_path),
            "public_key": str(public_path),
            "key_id": pair.public.key_id,
            "public_key_base64": pair.public.base64,
        }
        if as_json:
            emit_json(schema, document)
            return
        print(f"wrote private key {private_path} (mode 0600: keep it secret, it signs manifests)")
        print(f"wrote public key  {public_path} (key id {pair.public.key_id})")
        print(f"trust it with:    export WAN_TRUSTED_KEYS={public_path}")
        print(f"  or inline:      export WAN_TRUSTED_KEYS={pair.public.base64}")
        print(f"sign with:        wan models sign models.toml --key {private_path}")


@models_app.command("sign")
def sign(
    manifest: Optional[Path] = typer.Argument(None, help="Manifest to sign (default: WAN_MODELS_MANIFEST)."),
    key: Path = typer.Option(..., "--key", help="Private key file (PREFIX.key from `wan models keygen`)."),
    as_json: bool = JsonOption,
) -> None:
    """Write MANIFEST.sig, a detached Ed25519 signature of the manifest's bytes (the manifest is validated first)."""
    schema = "wan.models.sign/1"
    with reporting(schema, as_json):
        from wanstudio.orchestrator.signing import read_signature, sign_manifest

        target = _manifest_argument(manifest, action="sign")
        sig_path = sign_manifest(target, key.expanduser())
        signer, _ = read_signature(target)
        if as_json:
            emit_json(schema, {"manifest": str(target), "signature": str(sig_path), "key_id": signer})
            return
        print(f"signed {target} with key {signer}: wrote {sig_path}")


@models_app.command("verify-manifest")
def verify_manifest(
    manifest: Optional[Path] = typer.Argument(None, help="Manifest to verify (default: WAN_MODELS_MANIFEST)."),
    keys: Optional[List[str]] = typer.Option(
        None, "--key", help="Trusted public key (a file, a folder of .pub files, or base64); repeatable. Default: WAN_TRUSTED_KEYS."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Check the manifest's signature against the trusted keys: exit 0 when valid, 12 (SIGNATURE_INVALID) when not."""
    schema = "wan.models.verify-manifest/1"
    with reporting(schema, as_json):
        from wanstudio.config import parse_trusted_keys
        from wanstudio.orchestrator.manifest import packaged_manifest_path
        from wanstudio.orchestrator.signing import signature_path, verify_manifest as verify

        settings = Settings.from_env()
        target = manifest.expanduser().absolute() if manifest else settings.manifest_path
        if target is None:
            packaged = packaged_manifest_path()
            document = {"manifest": str(packaged), "packaged": True, "verified": False, "key_id": None}
            if as_json:
                emit_json(schema, document)
            else:
                print(f"{packaged} is the packaged manifest: it is not signed, and needs no signature "
                      "(it is trusted as part of the installed wanstudio, WAN_REQUIRE_SIGNED_MANIFEST included)")
            return
        trusted = tuple(entry for value in keys for entry in parse_trusted_keys(value)) if keys else settings.trusted_keys
        signer = verify(target, trusted)
        document = {"manifest": str(target), "packaged": False, "verified": True, "key_id": signer,
                    "signature": str(signature_path(target))}
        if as_json:
            emit_json(schema, document)
            return
        print(f"{target}: valid signature by trusted key {signer}")


@models_app.command("migrate-manifest")
def migrate_manifest(
    path: Path = typer.Argument(..., help="Manifest of an older schema_version to upgrade."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the result here (default: replace PATH)."),
    as_json: bool = JsonOption,
) -> None:
    """Rewrite a manifest of an older schema_version at the current one. Comments are not kept."""
    schema = "wan.models.migrate-manifest/1"
    with reporting(schema, as_json):
        from wanstudio.orchestrator.manifest import migrate_manifest_file

        result = migrate_manifest_file(path.expanduser().absolute(), output.expanduser().absolute() if output else None)
        document = {
            "manifest": str(result.source),
            "output": str(result.target),
            "from_version": result.from_version,
            "to_version": result.to_version,
            "migrated": result.migrated,
            "written": result.written,
            "comments_lost": result.migrated,
            "signature_stale": result.signature_stale,
        }
        if as_json:
            emit_json(schema, document)
            return
        if not result.migrated:
            where = f"; copied to {result.target}" if result.written else ""
            print(f"{result.source} is already at schema_version {result.to_version}: nothing to migrate{where}")
        else:
            print(f"migrated {result.source} from schema_version {result.from_version} to {result.to_version}: "
                  f"wrote {result.target} (comments of the original were not kept)")
        if result.signature_stale:
            print(f"its signature no longer matches: sign it again with wan models sign {result.target} --key SIGNER.key")


def _manifest_argument(manifest: Path | None, *, action: str) -> Path:
    """The manifest a command works on: the argument, else WAN_MODELS_MANIFEST; never the packaged one."""
    if manifest is not None:
        return manifest.expanduser().absolute()
    configured = Settings.from_env().manifest_path
    if configured is None:
        raise InvalidParamsError(
            f"name the manifest to {action}: WAN_MODELS_MANIFEST is not set, and the packaged manifest is "
            "not signed (it is trusted as part of the installed package)",
            param="MANIFEST",
            suggestions=[f"wan models {action} path/to/models.toml --key signer.key"],
        )
    return configured
