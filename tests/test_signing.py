"""Manifest signatures (CONTRACT section 3, issue 7): keys, signing, verification, WAN_REQUIRE_SIGNED_MANIFEST.

The last tests go through the real CLI, whose orchestrator loads the manifest with
`load_configured_manifest`.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_model
from wanstudio.config import Settings, is_inline_key, parse_trusted_keys
from wanstudio.errors import InvalidParamsError, ManifestInvalidError, SignatureInvalidError
from wanstudio.orchestrator import signing
from wanstudio.orchestrator.manifest import load_configured_manifest, load_manifest, packaged_manifest_path
from wanstudio.orchestrator.signing import (
    KeyPair,
    generate_key_pair,
    load_trusted_keys,
    sign_manifest,
    signature_path,
    verify_manifest,
    write_key_pair,
)

SHA = "ab" * 32
MANIFEST = f"""\
schema_version = 1

[models."m@1.0"]
family = "wan22"
task = "t2v"
default_variant = "dev"

[models."m@1.0".variants.dev]
files = [{{ path = "model_index.json", size = 10, sha256 = "{SHA}" }}]
"""

@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path, KeyPair]:
    """A signer's key pair on disk: (PREFIX.key, PREFIX.pub, pair)."""
    return write_key_pair(tmp_path / "keys" / "signer")


@pytest.fixture
def signed(tmp_path: Path, keys: tuple[Path, Path, KeyPair]) -> Path:
    """A valid manifest signed by the `keys` signer."""
    manifest = tmp_path / "models.toml"
    manifest.write_text(MANIFEST, encoding="utf-8")
    sign_manifest(manifest, keys[0])
    return manifest


def _private_secrets(private_key: Path) -> list[str]:
    """Every text form of a private key that must never appear in output: the PEM body and the raw seed."""
    from cryptography.hazmat.primitives import serialization

    pem = private_key.read_text()
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return [body, body[:40], base64.b64encode(seed).decode(), seed.hex()]


# -- keys ----------------------------------------------------------------------------------------------------


def test_keygen_writes_a_private_key_only_its_owner_can_read(keys: tuple[Path, Path, KeyPair]) -> None:
    private, public, pair = keys
    assert private.name == "signer.key" and public.name == "signer.pub"
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    if os.name != "nt":
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert load_trusted_keys([public])[0] == pair.public
    assert len(pair.public.key_id) == 16 and pair.public.key_id == signing.key_id(pair.public.raw)
    assert "PRIVATE" not in repr(pair) and pair.private_pem.decode() not in repr(pair)


def test_keygen_does_not_replace_an_existing_key(keys: tuple[Path, Path, KeyPair]) -> None:
    private = keys[0]
    before = private.read_bytes()
    with pytest.raises(InvalidParamsError, match="already exist"):
        write_key_pair(private.with_suffix(""))
    assert private.read_bytes() == before
    write_key_pair(private.with_suffix(""), overwrite=True)
    assert private.read_bytes() != before


def test_public_keys_in_every_accepted_form(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pairs = [generate_key_pair() for _ in range(3)]
    ssh = Ed25519PrivateKey.generate().public_key()
    ssh_line = ssh.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    keyfile = tmp_path / "several.pub"
    keyfile.write_text(
        f"# the release team\n{pairs[0].public_pem.decode()}\n{pairs[1].public.base64}\n{ssh_line} someone@host\n"
    )
    loaded = load_trusted_keys([keyfile, pairs[2].public.base64])
    raw_ssh = ssh.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert [k.raw for k in loaded] == [pairs[0].public.raw, pairs[1].public.raw, raw_ssh, pairs[2].public.raw]


def test_a_folder_of_keys_reads_only_pub_and_pem_files(tmp_path: Path) -> None:
    folder = tmp_path / "trusted"
    _, _, pair = write_key_pair(folder / "a")  # a.key sits in the folder too, and is not read
    (folder / "README.md").write_text("keys of the release team\n")
    assert load_trusted_keys([folder]) == (pair.public,)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SignatureInvalidError, match="holds no"):
        load_trusted_keys([empty])


@pytest.mark.parametrize(
    "content, fragment",
    [(b"", "holds no public key"), (b"not a key\n", "line 1"), (b"QUJD\n", "line 1")],
    ids=["empty", "text", "short base64"],
)
def test_a_bad_trusted_key_file_is_named(tmp_path: Path, content: bytes, fragment: str) -> None:
    bad = tmp_path / "bad.pub"
    bad.write_bytes(content)
    with pytest.raises(SignatureInvalidError) as caught:
        load_trusted_keys([bad])
    assert str(bad) in caught.value.message and fragment in caught.value.message


def test_a_private_key_given_as_a_trusted_key_is_refused_without_echoing_it(keys: tuple[Path, Path, KeyPair]) -> None:
    private = keys[0]
    with pytest.raises(SignatureInvalidError) as caught:
        load_trusted_keys([private])
    shown = caught.value.message + " ".join(caught.value.suggestions)
    assert not any(secret in shown for secret in _private_secrets(private))


def test_wan_trusted_keys_setting_separates_inline_keys_from_paths(tmp_path: Path) -> None:
    inline = generate_key_pair().public.base64
    assert is_inline_key(inline) and is_inline_key(inline.rstrip("=")) and not is_inline_key("signer.pub")
    entries = parse_trusted_keys(f" {inline} , {tmp_path / 'a.pub'},, ~/keys ")
    assert entries == (inline, tmp_path / "a.pub", Path("~/keys").expanduser().absolute())
    settings = Settings.from_env({"WAN_TRUSTED_KEYS": inline, "WAN_REQUIRE_SIGNED_MANIFEST": "1"})
    assert settings.trusted_keys == (inline,) and settings.require_signed_manifest
    assert Settings.from_env({}).trusted_keys == ()


# -- sign and verify -----------------------------------------------------------------------------------------


def test_sign_then_verify(signed: Path, keys: tuple[Path, Path, KeyPair]) -> None:
    sig = signature_path(signed)
    assert sig.name == "models.toml.sig"
    algorithm, key_id, value = sig.read_text().split()
    assert algorithm == "ed25519" and key_id == keys[2].public.key_id and len(base64.b64decode(value)) == 64
    assert verify_manifest(signed, [keys[1]]) == key_id
    assert verify_manifest(signed, [keys[2].public.base64]) == key_id
    assert verify_manifest(signed, [generate_key_pair().public, keys[1].parent]) == key_id


def test_sign_refuses_an_invalid_manifest(tmp_path: Path, keys: tuple[Path, Path, KeyPair]) -> None:
    manifest = tmp_path / "models.toml"
    manifest.write_text(MANIFEST.replace('task = "t2v"', 'task = "nope"'))
    with pytest.raises(ManifestInvalidError):
        sign_manifest(manifest, keys[0])
    assert not signature_path(manifest).exists()


def test_sign_with_an_openssh_private_key(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = tmp_path / "id_ed25519"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    manifest = tmp_path / "models.toml"
    manifest.write_text(MANIFEST)
    sign_manifest(manifest, private)
    assert verify_manifest(manifest, [line])


def test_a_tampered_manifest_is_rejected(signed: Path, keys: tuple[Path, Path, KeyPair]) -> None:
    data = bytearray(signed.read_bytes())
    data[data.index(b"size = 10") + 7] = ord("9")  # one byte: size 10 -> 90
    signed.write_bytes(bytes(data))
    with pytest.raises(SignatureInvalidError) as caught:
        verify_manifest(signed, [keys[1]])
    error = caught.value
    assert error.code == "SIGNATURE_INVALID" and error.exit_code == 12
    assert str(signed) in error.message and "changed after it was signed" in error.message
    assert keys[2].public.key_id in error.message
    assert any("wan models sign" in s for s in error.suggestions)


def test_a_signature_by_an_untrusted_key_is_rejected(signed: Path, keys: tuple[Path, Path, KeyPair]) -> None:
    stranger = generate_key_pair().public
    with pytest.raises(SignatureInvalidError) as caught:
        verify_manifest(signed, [stranger])
    message = caught.value.message
    assert str(signed) in message and "not trusted" in message
    assert keys[2].public.key_id in message and stranger.key_id in message
    assert any("WAN_TRUSTED_KEYS" in s for s in caught.value.suggestions)


def test_a_missing_signature_is_rejected(signed: Path, keys: tuple[Path, Path, KeyPair]) -> None:
    signature_path(signed).unlink()
    with pytest.raises(SignatureInvalidError) as caught:
        verify_manifest(signed, [keys[1]])
    assert "not signed" in caught.value.message and str(signature_path(signed)) in caught.value.message
    assert any("wan models sign" in s for s in caught.value.suggestions)


def test_no_trusted_key_configured_is_rejected(signed: Path) -> None:
    with pytest.raises(SignatureInvalidError) as caught:
        verify_manifest(signed, [])
    assert "no trusted public key" in caught.value.message
    assert any("WAN_TRUSTED_KEYS" in s for s in caught.value.suggestions)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda line: "",
        lambda line: "garbage\n",
        lambda line: line.replace("ed25519", "rsa"),
        lambda line: line[:-10] + "\n",  # truncated base64
        lambda line: line + line,  # two signatures
        lambda line: line.replace(line.split()[1], "XYZ"),  # not a key id
    ],
    ids=["empty", "garbage", "other algorithm", "truncated", "two lines", "bad key id"],
)
def test_a_malformed_signature_file_is_rejected(signed: Path, keys: tuple[Path, Path, KeyPair], mangle) -> None:  # type: ignore[no-untyped-def]
    sig = signature_path(signed)
    sig.write_text(mangle(sig.read_text()))
    with pytest.raises(SignatureInvalidError) as caught:
        verify_manifest(signed, [keys[1]])
    assert "malformed" in caught.value.message and str(sig) in caught.value.message


def test_a_signature_over_other_bytes_is_rejected(signed: Path, keys: tuple[Path, Path, KeyPair], tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text(MANIFEST.replace("m@1.0", "n@1.0"))
    signature_path(other).write_bytes(signature_path(signed).read_bytes())
    with pytest.raises(SignatureInvalidError, match="does not match"):
        verify_manifest(other, [keys[1]])


# -- enforcement when loading --------------------------------------------------------------------------------


def _settings(manifest: Path | None, *keys: Path | str, required: bool = True) -> Settings:
    environ = {"WAN_REQUIRE_SIGNED_MANIFEST": "1" if required else ""}
    if manifest is not None:
        environ["WAN_MODELS_MANIFEST"] = str(manifest)
    environ["WAN_TRUSTED_KEYS"] = ",".join(str(k) for k in keys)
    return Settings.from_env(environ)


def test_required_signature_accepts_a_signed_manifest(signed: Path, keys: tuple[Path, Path, KeyPair]) -> None:
    manifest = load_configured_manifest(_settings(signed, keys[1]))
    assert list(manifest.models) == ["m@1.0"] and manifest.origin == str(signed)


@pytest.mark.parametrize("damage", ["tamper", "unsign", "stranger", "no keys"])
def test_required_signature_refuses_before_parsing(signed: Path, keys: tuple[Path, Path, KeyPair], damage: str) -> None:
    trusted: list[Path | str] = [keys[1]]
    if damage == "tamper":  # also breaks the TOML: SIGNATURE_INVALID wins over MANIFEST_INVALID
        signed.write_text(signed.read_text() + "[[[ not toml\n")
    elif damage == "unsign":
        signature_path(signed).unlink()
    elif damage == "stranger":
        trusted = [generate_key_pair().public.base64]
    else:
        trusted = []
    with pytest.raises(SignatureInvalidError) as caught:
        load_configured_manifest(_settings(signed, *trusted))
    assert str(signed) in caught.value.message


def test_unsigned_manifest_loads_when_no_signature_is_required(signed: Path) -> None:
    signature_path(signed).unlink()
    assert "m@1.0" in load_configured_manifest(_settings(signed, required=False)).models


def test_the_packaged_manifest_is_exempt(keys: tuple[Path, Path, KeyPair]) -> None:
    assert not signature_path(packaged_manifest_path()).exists()
    manifest = load_configured_manifest(_settings(None))  # required, and no key configured at all
    assert "ti2v-5B@2.2.0" in manifest.models
    with pytest.raises(SignatureInvalidError):  # named by path it is a manifest like any other
        load_manifest(packaged_manifest_path(), require_signature=True, trusted_keys=(keys[1],))


def test_verification_is_cached_until_a_file_changes(
    signed: Path, keys: tuple[Path, Path, KeyPair], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    real = signing.verify_manifest_bytes

    def counting(data: bytes, path: Path, trusted):  # type: ignore[no-untyped-def]
        calls.append(path)
        return real(data, path, trusted)

    monkeypatch.setattr(signing, "verify_manifest_bytes", counting)
    settings = _settings(signed, keys[1].parent)  # a folder: adding a key to it is noticed as well
    for _ in range(5):
        load_configured_manifest(settings)
    assert len(calls) == 1
    write_key_pair(keys[1].parent / "second")
    load_configured_manifest(settings)
    assert len(calls) == 2
    stranger_key = keys[1].parent.parent / "stranger"
    write_key_pair(stranger_key)
    sign_manifest(signed, Path(f"{stranger_key}.key"))  # the .sig changes: verified again, and refused
    with pytest.raises(SignatureInvalidError, match="not trusted"):
        load_configured_manifest(settings)
    sign_manifest(signed, keys[0])
    signed.write_text(MANIFEST.replace("size = 10", "size = 11"))  # the manifest changes
    with pytest.raises(SignatureInvalidError, match="does not match"):
        load_configured_manifest(settings)


def test_loading_without_a_required_signature_does_not_import_cryptography(signed: Path, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from wanstudio.config import Settings\n"
        "from wanstudio.orchestrator.manifest import load_configured_manifest\n"
        f"load_configured_manifest(Settings.from_env({{'WAN_MODELS_MANIFEST': {str(signed)!r}}}))\n"
        "load_configured_manifest(Settings.from_env({'WAN_REQUIRE_SIGNED_MANIFEST': '1'}))  # packaged: exempt\n"
        "print(sorted(m for m in sys.modules if m.startswith(('cryptography', 'wanstudio.orchestrator.signing'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- the command line ----------------------------------------------------------------------------------------


def test_cli_keygen_sign_verify_show_no_private_key(wan, tmp_path: Path) -> None:
    manifest = tmp_path / "models.toml"
    manifest.write_text(MANIFEST)
    made = wan("models", "keygen", "--out", str(tmp_path / "k" / "release"), "--json")
    assert made.returncode == 0, made.stderr
    document = made.json
    assert document["schema"] == "wan.models.keygen/1"
    private, public = Path(document["private_key"]), Path(document["public_key"])
    assert private.exists() and public.exists() and len(document["key_id"]) == 16
    human = wan("models", "keygen", "--out", str(tmp_path / "k" / "second"))
    assert human.returncode == 0 and "WAN_TRUSTED_KEYS" in human.stdout
    again = wan("models", "keygen", "--out", str(tmp_path / "k" / "release"))
    assert again.returncode == 30 and "--force" in again.stderr
    signed = wan("models", "sign", str(manifest), "--key", str(private), "--json")
    assert signed.returncode == 0, signed.stderr
    assert signed.json["key_id"] == document["key_id"] and Path(signed.json["signature"]).exists()
    default = wan("models", "sign", "--key", str(private), env={"WAN_MODELS_MANIFEST": str(manifest)})
    assert default.returncode == 0 and str(manifest) in default.stdout
    verified = wan("models", "verify-manifest", str(manifest), "--key", str(public), "--json")
    assert verified.returncode == 0, verified.stderr
    assert verified.json["verified"] is True and verified.json["key_id"] == document["key_id"]
    by_env = wan("models", "verify-manifest", env={"WAN_MODELS_MANIFEST": str(manifest), "WAN_TRUSTED_KEYS": str(public)})
    assert by_env.returncode == 0 and document["key_id"] in by_env.stdout
    secrets = _private_secrets(private)
    for result in (made, human, again, signed, default, verified, by_env):
        assert not any(secret in result.stdout + result.stderr for secret in secrets)


def test_cli_verify_manifest_failures_exit_12(wan, signed: Path, keys: tuple[Path, Path, KeyPair]) -> None:
    signed.write_text(signed.read_text().replace("size = 10", "size = 11"))
    result = wan("models", "verify-manifest", str(signed), "--key", str(keys[1]), "--json")
    assert result.returncode == 12
    error = result.json["error"]
    assert result.json["schema"] == "wan.models.verify-manifest/1"
    assert error["code"] == "SIGNATURE_INVALID" and str(signed) in error["message"] and error["suggestions"]
    human = wan("models", "verify-manifest", str(signed))  # no key configured at all
    assert human.returncode == 12 and "SIGNATURE_INVALID" in human.stderr and "WAN_TRUSTED_KEYS" in human.stderr


def test_cli_verify_manifest_of_the_packaged_manifest_says_it_is_exempt(wan) -> None:
    result = wan("models", "verify-manifest", "--json")
    assert result.returncode == 0 and result.json["packaged"] is True and result.json["verified"] is False


def test_cli_sign_errors_do_not_echo_the_key_file(wan, tmp_path: Path) -> None:
    manifest = tmp_path / "models.toml"
    manifest.write_text(MANIFEST)
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("-----BEGIN PRIVATE KEY-----\nTOPSECRETMATERIAL0123456789\n-----END PRIVATE KEY-----\n")
    result = wan("models", "sign", str(manifest), "--key", str(bad_key), "--json")
    assert result.returncode == 30 and result.json["error"]["param"] == "--key"
    assert "TOPSECRET" not in result.stdout + result.stderr
    nothing = wan("models", "sign", "--key", str(bad_key))
    assert nothing.returncode == 30 and "WAN_MODELS_MANIFEST" in nothing.stderr


def test_cli_with_a_signed_manifest_and_signature_required_works(wan, signed: Path, keys: tuple[Path, Path, KeyPair]) -> None:
    env = {"WAN_MODELS_MANIFEST": str(signed), "WAN_REQUIRE_SIGNED_MANIFEST": "1", "WAN_TRUSTED_KEYS": str(keys[1])}
    result = wan("models", "list", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert [m["id"] for m in result.json["models"]] == ["m@1.0"]


def test_cli_list_refuses_an_unsigned_manifest_when_required(wan, signed: Path, keys: tuple[Path, Path, KeyPair]) -> None:
    signature_path(signed).unlink()
    env = {"WAN_MODELS_MANIFEST": str(signed), "WAN_REQUIRE_SIGNED_MANIFEST": "1", "WAN_TRUSTED_KEYS": str(keys[1])}
    result = wan("models", "list", "--json", env=env)
    assert result.returncode == 12, result.stdout
    assert result.json["error"]["code"] == "SIGNATURE_INVALID"


def test_cli_ensure_of_a_tampered_manifest_touches_nothing(
    wan, mirror: Path, tmp_path: Path, models_root: Path, keys: tuple[Path, Path, KeyPair]
) -> None:
    manifest = Path(os.environ["WAN_MODELS_MANIFEST"])
    write_model(mirror, manifest, {"model_index.json": b"{}", "vae/config.json": b'{"a": 1}'})
    sign_manifest(manifest, keys[0])
    env = {"WAN_REQUIRE_SIGNED_MANIFEST": "1", "WAN_TRUSTED_KEYS": str(keys[1])}
    manifest.write_text(manifest.read_text().replace('task = "t2v"', 'task = "ti2v"'))
    result = wan("models", "ensure", "--only", "toy@1.0.0", "--json", env=env)
    assert result.returncode == 12, result.stdout
    assert json.loads(result.stdout)["error"]["code"] == "SIGNATURE_INVALID"
    assert not models_root.exists() or not any(models_root.iterdir())
