"""Detached Ed25519 signatures of the manifest (CONTRACT section 3): who may say which files are the models.

The manifest decides what every ensure downloads and which digests it accepts, so whoever can change it can
make wanstudio fetch and load anything. A signature ties the exact bytes of ``models.toml`` to a key the
operator trusts; with ``WAN_REQUIRE_SIGNED_MANIFEST=1`` an unsigned or changed manifest is refused
(SIGNATURE_INVALID) before it is even parsed.

Files:

- ``models.toml.sig``, next to the manifest: one line ``ed25519 <key id> <base64 of the 64-byte
  signature>``. The signature covers the manifest's bytes exactly as stored (no normalisation), so any edit,
  a re-encoding or changed line endings included, needs a new signature.
- private key (``wan models keygen``): PKCS#8 PEM, unencrypted, mode 0600. OpenSSH ``ed25519`` private keys
  are accepted for signing too.
- public keys: PEM (``-----BEGIN PUBLIC KEY-----``), a line of raw base64 (the 32-byte key), or an OpenSSH
  line (``ssh-ed25519 AAAA... comment``); one file may hold several, ``#`` starts a comment line.
- key id: the first 16 hex digits of the sha256 of the raw 32-byte public key. It lets the verifier pick
  the key and name the signer in errors; it is not a secret and proves nothing by itself.

``cryptography`` is imported inside the functions that need it: loading an unsigned manifest never pays
for it, and a verified one pays once per process (verification is cached by the files' stat, in
``manifest.load_manifest``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from wanstudio.errors import InvalidParamsError, SignatureInvalidError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SIGNATURE_SUFFIX = ".sig"
SIGNATURE_ALGORITHM = "ed25519"
KEY_FILE_SUFFIXES = (".pub", ".pem")
"""In a folder of trusted keys, only these files are read (a README or a private key next to them is not)."""

_PEM_PUBLIC = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.S)
_SIGNATURE_LINE = re.compile(r"^ed25519 ([0-9a-f]{16}) ([A-Za-z0-9+/]{86}==)$")
_RESIGN = "if the manifest is the one you mean to use, sign it again: wan models sign {manifest} --key SIGNER.key"


@dataclass(frozen=True)
class PublicKey:
    """A trusted Ed25519 public key (its 32 raw bytes) and where it was configured."""

    raw: bytes
    origin: str = field(default="<memory>", compare=False)

    @property
    def key_id(self) -> str:
        return key_id(self.raw)

    @property
    def base64(self) -> str:
        return base64.b64encode(self.raw).decode("ascii")


@dataclass(frozen=True)
class KeyPair:
    """A new signing key: the private key as PEM (never shown: it is kept out of repr) and its public half."""

    private_pem: bytes = field(repr=False)
    public: PublicKey

    @property
    def public_pem(self) -> bytes:
        return _public_pem(self.public.raw)


def key_id(raw_public_key: bytes) -> str:
    """The short name of a public key: 16 hex digits of its sha256."""
    return hashlib.sha256(raw_public_key).hexdigest()[:16]


def signature_path(manifest_path: Path) -> Path:
    """Where a manifest's detached signature lives: `models.toml.sig` next to `models.toml`."""
    return manifest_path.with_name(manifest_path.name + SIGNATURE_SUFFIX)


def write_atomically(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace `path` with `data` in one rename, so readers see the old file or the new one, never a mix.

    The temporary file is created with `mode` (before any byte is written), so a private key is never
    readable by others, not even for a moment.
    """
    from wanstudio.orchestrator._fsutil import unique_name

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(unique_name(f".{path.name}") + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed it; never widen a key beyond `mode` either
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# -- keys ---------------------------------------------------------------------------------------------------


def generate_key_pair() -> KeyPair:
    """A fresh Ed25519 key pair for signing manifests."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return KeyPair(private_pem=pem, public=PublicKey(_raw_public(private), origin="<generated>"))


def write_key_pair(prefix: Path, *, overwrite: bool = False) -> tuple[Path, Path, KeyPair]:
    """Generate a key pair and write `PREFIX.key` (private, mode 0600) and `PREFIX.pub` (PEM public key)."""
    private_path, public_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    existing = [str(p) for p in (private_path, public_path) if p.exists()]
    if existing and not overwrite:
        raise InvalidParamsError(
            f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''}: a signing key is not "
            "replaced by accident (manifests signed with it would no longer verify against a new key)",
            param="--out",
            suggestions=["choose another --out prefix", "or pass --force to replace the key pair"],
        )
    pair = generate_key_pair()
    write_atomically(private_path, pair.private_pem, mode=0o600)
    write_atomically(public_path, pair.public_pem, mode=0o644)
    return private_path, public_path, pair


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in `path` (PKCS#8 PEM or OpenSSH); errors never quote the file's content."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    def bad(problem: str, *hints: str) -> InvalidParamsError:
        return InvalidParamsError(
            f"private key {path}: {problem}",
            param="--key",
            suggestions=[*hints, "make a key pair with: wan models keygen --out signer"],
        )

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise bad(f"cannot be read ({exc.strerror or exc})") from None
    try:
        if b"-----BEGIN OPENSSH PRIVATE KEY-----" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography's way of saying "this key needs a password"
        raise bad("is encrypted; wanstudio signs with unencrypted keys only",
                  "decrypt a copy, e.g. openssl pkey -in encrypted.pem -out signer.key, and keep it mode 0600") from None
    except (ValueError, binascii.Error):
        raise bad("is not a PEM or OpenSSH private key") from None
    except Exception:  # unsupported algorithm and the like: the library's text could echo key material
        raise bad("cannot be loaded as a private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        kind = type(key).__name__.removeprefix("_")
        raise bad(f"holds a {kind}, not an Ed25519 key; manifests are signed with Ed25519 keys")
    return key


def parse_public_keys(data: bytes, origin: str) -> list[PublicKey]:
    """Every public key in a key file's content: PEM blocks, raw base64 lines, `ssh-ed25519` lines.

    Raises SignatureInvalidError naming `origin` when something in it is not an Ed25519 public key, or when
    it holds none: a trusted-key file that silently trusts nothing would be a confusing failure later.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys: list[PublicKey] = []

    def problem(what: str) -> SignatureInvalidError:
        return SignatureInvalidError(
            f"trusted key {origin}: {what}",
            suggestions=["give WAN_TRUSTED_KEYS (or --key) Ed25519 public keys: the .pub file of `wan models keygen`, "
                         "a PEM public key, a raw base64 key or an `ssh-ed25519` line"],
        )

    for block in _PEM_PUBLIC.findall(data):
        try:
            key = serialization.load_pem_public_key(block)
        except ValueError:
            raise problem("a PEM block is not a valid public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise problem(f"a PEM block holds a {type(key).__name__.removeprefix('_')}, not an Ed25519 public key")
        keys.append(PublicKey(_raw_public(key), origin))
    rest = _PEM_PUBLIC.sub(b"", data).decode("utf-8", "replace")
    for number, line in enumerate(rest.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("ssh-"):
            try:
                key = serialization.load_ssh_public_key(line.encode())
            except (ValueError, TypeError) as exc:
                raise problem(f"line {number} is not a valid OpenSSH public key ({exc})") from None
            if not isinstance(key, Ed25519PublicKey):
                raise problem(f"line {number} is an {line.split()[0]} key, not ssh-ed25519")
            keys.append(PublicKey(_raw_public(key), origin))
            continue
        raw = _decode_base64(line)
        if raw is None or len(raw) != 32:
            raise problem(f"line {number} is neither a PEM public key, a 32-byte base64 key nor an ssh-ed25519 line")
        keys.append(PublicKey(raw, origin))
    if not keys:
        raise problem("holds no public key")
    return keys


def load_trusted_keys(entries: Iterable[PublicKey | Path | str]) -> tuple[PublicKey, ...]:
    """Resolve configured entries (WAN_TRUSTED_KEYS, `--key`) to keys: a Path is a key file, or a folder whose
    `.pub`/`.pem` files are read; a str is an inline base64 key (or key text); PublicKeys pass through."""
    keys: list[PublicKey] = []
    for number, entry in enumerate(entries, 1):
        if isinstance(entry, PublicKey):
            keys.append(entry)
        elif isinstance(entry, str):
            keys.extend(parse_public_keys(entry.encode(), f"inline key #{number}"))
        else:
            for path in _key_files(entry):
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    raise SignatureInvalidError(
                        f"trusted key {path} cannot be read ({exc.strerror or exc})",
                        suggestions=["check the paths in WAN_TRUSTED_KEYS (or --key)"],
                    ) from None
                keys.extend(parse_public_keys(data, str(path)))
    return tuple(keys)


def trusted_keys_state(entries: Sequence[Path | str]) -> tuple[object, ...]:
    """A cheap fingerprint of the configured keys (stat of each file, names in each folder): verification
    results are cached under it, so editing or adding a key file is noticed without reading any key."""
    state: list[object] = []
    for entry in entries:
        if isinstance(entry, str):
            state.append(entry)
        elif entry.is_dir():
            state.append((str(entry), tuple((str(p), stat_key(p)) for p in _key_files(entry))))
        else:
            state.append((str(entry), stat_key(entry)))
    return tuple(state)


def _key_files(entry: Path) -> list[Path]:
    if entry.is_dir():
        files = sorted(p for p in entry.iterdir() if p.suffix in KEY_FILE_SUFFIXES and p.is_file() and not p.name.startswith("."))
        if not files:
            raise SignatureInvalidError(
                f"trusted key folder {entry} holds no {' or '.join(KEY_FILE_SUFFIXES)} files",
                suggestions=["put the signers' public keys (e.g. signer.pub from `wan models keygen`) in it"],
            )
        return files
    if not entry.exists():
        raise SignatureInvalidError(
            f"trusted key {entry} does not exist",
            suggestions=["fix the path in WAN_TRUSTED_KEYS (or --key): a key file, a folder of .pub files, or a base64 key"],
        )
    return [entry]


def stat_key(path: Path) -> tuple[int, int] | None:
    """(mtime, size) of a file, or None when it is absent: the part of a cache key that notices edits."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


def _decode_base64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _raw_public(key: object) -> bytes:
    from cryptography.hazmat.primitives import serialization

    public = key.public_key() if hasattr(key, "public_key") else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)  # type: ignore[attr-defined]


def _public_pem(raw: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = Ed25519PublicKey.from_public_bytes(raw)
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


# -- signing and verification -------------------------------------------------------------------------------


def sign_manifest(manifest_path: Path, private_key_path: Path) -> Path:
    """Sign the manifest's bytes and write `models.toml.sig` next to it (atomically); returns its path.

    The manifest is validated first: a signature vouches for a manifest that every command can read.
    """
    from wanstudio.errors import ManifestInvalidError
    from wanstudio.orchestrator.manifest import parse_manifest

    key = load_private_key(private_key_path)
    try:
        data = manifest_path.read_bytes()
    except OSError as exc:
        raise ManifestInvalidError(f"cannot read the manifest {manifest_path}: {exc.strerror or exc}") from None
    try:
        parse_manifest(data.decode("utf-8"), origin=str(manifest_path))
    except UnicodeDecodeError:
        raise ManifestInvalidError(f"manifest {manifest_path} is not UTF-8 text") from None
    line = format_signature(key.sign(data), key_id(_raw_public(key)))
    target = signature_path(manifest_path)
    write_atomically(target, line.encode("ascii"))
    return target


def format_signature(signature: bytes, signer_key_id: str) -> str:
    """The one line of a `.sig` file."""
    return f"{SIGNATURE_ALGORITHM} {signer_key_id} {base64.b64encode(signature).decode('ascii')}\n"


def read_signature(manifest_path: Path) -> tuple[str, bytes]:
    """The (key id, signature) of the manifest's `.sig` file; SIGNATURE_INVALID when missing or malformed."""
    sig_path = signature_path(manifest_path)
    try:
        text = sig_path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise SignatureInvalidError(
            f"manifest {manifest_path} is not signed: {sig_path} does not exist, and only a manifest signed by a "
            "trusted key is accepted",
            suggestions=[
                f"sign it: wan models sign {manifest_path} --key SIGNER.key, and trust SIGNER.pub in WAN_TRUSTED_KEYS",
                "or get the manifest together with its .sig file from whoever publishes it",
            ],
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else "it is not ASCII text"
        raise _malformed(manifest_path, sig_path, f"cannot be read ({problem})") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    match = _SIGNATURE_LINE.match(lines[0]) if len(lines) == 1 else None
    if match is None:
        raise _malformed(manifest_path, sig_path, "is not one line `ed25519 <16 hex key id> <base64 of 64 bytes>`")
    raw = _decode_base64(match.group(2))
    if raw is None or len(raw) != 64:
        raise _malformed(manifest_path, sig_path, "does not hold a 64-byte base64 signature")
    return match.group(1), raw


def verify_manifest(manifest_path: Path, trusted_keys: Sequence[PublicKey | Path | str]) -> str:
    """Check the manifest's signature against the trusted keys; returns the signer's key id.

    SIGNATURE_INVALID names the manifest and the reason (no trusted key configured, missing or malformed
    signature, a signer that is not trusted, a signature that does not match the bytes) and what to do.
    """
    try:
        data = manifest_path.read_bytes()
    except OSError as exc:
        raise SignatureInvalidError(
            f"cannot read the manifest {manifest_path} to verify it: {exc.strerror or exc}",
            suggestions=["check the path (WAN_MODELS_MANIFEST)"],
        ) from None
    return verify_manifest_bytes(data, manifest_path, trusted_keys)


def verify_manifest_bytes(data: bytes, manifest_path: Path, trusted_keys: Sequence[PublicKey | Path | str]) -> str:
    """`verify_manifest` for bytes already read: the caller parses exactly the bytes that were verified."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not trusted_keys:
        raise SignatureInvalidError(
            f"manifest {manifest_path} cannot be verified: no trusted public key is configured (WAN_TRUSTED_KEYS "
            "is empty), so no signature can be accepted",
            suggestions=[
                "export WAN_TRUSTED_KEYS=/path/to/signer.pub   (a key file, a folder of .pub files, or base64 keys; comma separated)",
                "or unset WAN_REQUIRE_SIGNED_MANIFEST to accept unsigned manifests",
            ],
        )
    keys = load_trusted_keys(trusted_keys)
    signer, signature = read_signature(manifest_path)
    candidates = [key for key in keys if key.key_id == signer]
    if not candidates:
        trusted = ", ".join(sorted({f"{k.key_id} ({k.origin})" for k in keys}))
        raise SignatureInvalidError(
            f"manifest {manifest_path} is signed by key {signer}, which is not trusted; trusted keys: {trusted}",
            suggestions=[
                f"if you trust the signer, add its public key (key id {signer}) to WAN_TRUSTED_KEYS",
                _RESIGN.format(manifest=manifest_path).replace("SIGNER.key", "TRUSTED.key"),
            ],
        )
    for key in candidates:
        try:
            Ed25519PublicKey.from_public_bytes(key.raw).verify(signature, data)
            return key.key_id
        except InvalidSignature:
            continue
    raise SignatureInvalidError(
        f"manifest {manifest_path} does not match its signature {signature_path(manifest_path)} by trusted key "
        f"{signer}: the manifest was changed after it was signed (or the signature was damaged)",
        suggestions=[
            "do not use this manifest until you know who changed it; restore it from a trusted copy",
            _RESIGN.format(manifest=manifest_path),
        ],
    )


def _malformed(manifest_path: Path, sig_path: Path, problem: str) -> SignatureInvalidError:
    return SignatureInvalidError(
        f"the signature of manifest {manifest_path} is malformed: {sig_path} {problem}",
        suggestions=[_RESIGN.format(manifest=manifest_path), "or fetch the .sig file again from whoever publishes the manifest"],
    )
