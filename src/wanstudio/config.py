"""Settings from the environment: the one place that reads ``os.environ`` (CONTRACT section 2).

A frozen dataclass rather than a pydantic-settings class on purpose: importing pydantic-settings costs
~150 ms, and a warm ``wan models ensure`` must finish in well under 100 ms (docs/architecture.md).
Settings are built by the caller (``Settings.from_env()``) and passed down, never at import time.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from wanstudio._units import parse_duration, parse_size
from wanstudio.errors import InvalidParamsError, ModelsRootUnsetError

KNOWN_SOURCES = ("local", "s3", "hf")
DEFAULT_SOURCES = ("local", "s3", "hf")
DEFAULT_MAX_CONCURRENT_DOWNLOADS = 8
DEFAULT_LOCK_TIMEOUT_SECONDS = 3600.0
DEFAULT_PIPELINE_CACHE_SIZE = 1
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
DEFAULT_DOWNLOAD_PART_SIZE = 2 * 2**30
DEFAULT_DOWNLOAD_STALL_TIMEOUT_SECONDS = 30.0
DEFAULT_DOWNLOAD_RETRIES = 5
DEFAULT_QUEUE_MAX = 100
DEFAULT_MAX_UPLOAD_BYTES = 20 * 2**20
DEFAULT_JOB_RETENTION_SECONDS = 7 * 86400.0
DEFAULT_RESULTS_MAX_BYTES = 50 * 2**30
DEFAULT_MAX_LORA_BYTES = 4 * 2**30


ENVIRONMENT_VARIABLES = (
    "MODELS_ROOT",
    "WAN_MODELS_MANIFEST",
    "WAN_SOURCES",
    "WAN_LOCAL_MIRROR",
    "WAN_S3_URL",
    "WAN_MAX_CONCURRENT_DOWNLOADS",
    "WAN_LOCK_TIMEOUT",
    "WAN_QUOTA_BYTES",
    "WAN_FAMILY_QUOTAS",
    "WAN_LOG_LEVEL",
    "WAN_LOG_FORMAT",
    "WAN_REQUIRE_SIGNED_MANIFEST",
    "WAN_TRUSTED_KEYS",
    "WAN_DEVICE",
    "WAN_PIPELINE_CACHE_SIZE",
    "WAN_DOWNLOAD_PART_SIZE",
    "WAN_DOWNLOAD_STALL_TIMEOUT",
    "WAN_DOWNLOAD_RETRIES",
    "WAN_S3_SSE_CUSTOMER_KEY",
    "WAN_DATA_DIR",
    "WAN_API_KEYS",
    "WAN_QUEUE_MAX",
    "WAN_MAX_UPLOAD_BYTES",
    "WAN_JOB_RETENTION",
    "WAN_RESULTS_MAX_BYTES",
    "WAN_MAX_LORA_BYTES",
    "WAN_ALLOW_MOCK",
    "XDG_DATA_HOME",
    "HF_ENDPOINT",
    "HF_TOKEN",
    "HF_HUB_CACHE",
    "HF_HOME",
)


def environment_key() -> tuple[str | None, ...]:
    """The values of every variable the settings read: equal keys give equal settings."""
    return tuple(os.environ.get(name) for name in ENVIRONMENT_VARIABLES)


@dataclass(frozen=True)
class Settings:
    """Everything configurable about wanstudio, with the documented defaults."""

    models_root: Path | None = None
    manifest_path: Path | None = None
    sources: tuple[str, ...] = DEFAULT_SOURCES
    local_mirror: Path | None = None
    s3_url: str | None = None
    max_concurrent_downloads: int = DEFAULT_MAX_CONCURRENT_DOWNLOADS
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_SECONDS
    quota_bytes: int | None = None
    family_quotas: Mapping[str, int] = field(default_factory=dict)
    log_level: str | None = None  # None: unset, so each program's default (WARNING for the CLI, INFO for serve)
    log_format: str | None = None  # None: unset, so each program's default (text for the CLI, json for serve)
    require_signed_manifest: bool = False
    trusted_keys: tuple[Path | str, ...] = ()
    """Public keys a manifest signature may come from: a Path is a key file or a folder of them, a str one
    inline base64 key (see ``parse_trusted_keys``)."""
    device: str = "auto"
    pipeline_cache_size: int = DEFAULT_PIPELINE_CACHE_SIZE
    download_part_size: int = DEFAULT_DOWNLOAD_PART_SIZE
    download_stall_timeout: float = DEFAULT_DOWNLOAD_STALL_TIMEOUT_SECONDS
    download_retries: int = DEFAULT_DOWNLOAD_RETRIES
    s3_sse_customer_key: str | None = field(default=None, repr=False)
    hf_endpoint: str = DEFAULT_HF_ENDPOINT
    hf_token: str | None = field(default=None, repr=False)
    hf_cache_dir: Path = field(default_factory=lambda: Path("~/.cache/huggingface/hub").expanduser())
    # The server (`wan serve`): where jobs, uploads and videos live, who may call it, and how much it keeps.
    data_dir: Path = field(default_factory=lambda: Path("~/.local/share/wanstudio").expanduser())
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    queue_max: int = DEFAULT_QUEUE_MAX
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    job_retention: float = DEFAULT_JOB_RETENTION_SECONDS
    results_max_bytes: int = DEFAULT_RESULTS_MAX_BYTES
    max_lora_bytes: int = DEFAULT_MAX_LORA_BYTES
    # A job whose model cannot be obtained or run gives a test pattern marked `mock` instead of an error.
    allow_mock: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Read the settings from `environ` (default: the process environment); bad values name the variable."""
        source = os.environ if environ is None else environ
        # Only the names of ENVIRONMENT_VARIABLES can be read, so that environment_key() covers them all.
        values = {name: source.get(name, "").strip() for name in ENVIRONMENT_VARIABLES}

        def path(name: str) -> Path | None:
            value = values[name]
            return Path(value).expanduser().absolute() if value else None

        def convert(name: str, parse, default):  # type: ignore[no-untyped-def]
            value = values[name]
            if not value:
                return default
            try:
                return parse(value)
            except ValueError as exc:
                raise InvalidParamsError(f"{name}={value!r} is invalid: {exc}", param=name) from None

        sources = tuple(s.strip() for s in values["WAN_SOURCES"].split(",") if s.strip()) or DEFAULT_SOURCES
        unknown = [s for s in sources if s not in KNOWN_SOURCES]
        if unknown:
            raise InvalidParamsError(
                f"WAN_SOURCES names unknown source(s) {', '.join(unknown)}; valid sources are {', '.join(KNOWN_SOURCES)}",
                param="WAN_SOURCES",
                suggestions=[f"export WAN_SOURCES={','.join(DEFAULT_SOURCES)}"],
            )
        return cls(
            models_root=path("MODELS_ROOT"),
            manifest_path=path("WAN_MODELS_MANIFEST"),
            sources=sources,
            local_mirror=path("WAN_LOCAL_MIRROR"),
            s3_url=values["WAN_S3_URL"] or None,
            max_concurrent_downloads=convert("WAN_MAX_CONCURRENT_DOWNLOADS", _positive_int, DEFAULT_MAX_CONCURRENT_DOWNLOADS),
            lock_timeout=convert("WAN_LOCK_TIMEOUT", parse_duration, DEFAULT_LOCK_TIMEOUT_SECONDS),
            quota_bytes=convert("WAN_QUOTA_BYTES", parse_size, None),
            family_quotas=convert("WAN_FAMILY_QUOTAS", _family_quotas, {}),
            log_level=values["WAN_LOG_LEVEL"].upper() or None,
            log_format=values["WAN_LOG_FORMAT"].lower() or None,
            require_signed_manifest=values["WAN_REQUIRE_SIGNED_MANIFEST"] in ("1", "true", "yes"),
            trusted_keys=parse_trusted_keys(values["WAN_TRUSTED_KEYS"]),
            device=convert("WAN_DEVICE", _device, "auto"),
            pipeline_cache_size=convert("WAN_PIPELINE_CACHE_SIZE", _non_negative_int, DEFAULT_PIPELINE_CACHE_SIZE),
            download_part_size=convert("WAN_DOWNLOAD_PART_SIZE", _part_size, DEFAULT_DOWNLOAD_PART_SIZE),
            download_stall_timeout=convert("WAN_DOWNLOAD_STALL_TIMEOUT", parse_duration, DEFAULT_DOWNLOAD_STALL_TIMEOUT_SECONDS),
            download_retries=convert("WAN_DOWNLOAD_RETRIES", _non_negative_int, DEFAULT_DOWNLOAD_RETRIES),
            s3_sse_customer_key=values["WAN_S3_SSE_CUSTOMER_KEY"] or None,
            hf_endpoint=(values["HF_ENDPOINT"] or DEFAULT_HF_ENDPOINT).rstrip("/"),
            hf_token=values["HF_TOKEN"] or None,
            hf_cache_dir=path("HF_HUB_CACHE") or (path("HF_HOME") or Path("~/.cache/huggingface").expanduser()) / "hub",
            data_dir=path("WAN_DATA_DIR") or (path("XDG_DATA_HOME") or Path("~/.local/share").expanduser()) / "wanstudio",
            api_keys=_api_keys(values["WAN_API_KEYS"]),
            queue_max=convert("WAN_QUEUE_MAX", _positive_int, DEFAULT_QUEUE_MAX),
            max_upload_bytes=convert("WAN_MAX_UPLOAD_BYTES", parse_size, DEFAULT_MAX_UPLOAD_BYTES),
            job_retention=convert("WAN_JOB_RETENTION", parse_duration, DEFAULT_JOB_RETENTION_SECONDS),
            results_max_bytes=convert("WAN_RESULTS_MAX_BYTES", parse_size, DEFAULT_RESULTS_MAX_BYTES),
            max_lora_bytes=convert("WAN_MAX_LORA_BYTES", parse_size, DEFAULT_MAX_LORA_BYTES),
            allow_mock=values["WAN_ALLOW_MOCK"].lower() in ("1", "true", "yes"),
        )

    def require_models_root(self) -> Path:
        """The store root, or MODELS_ROOT_UNSET with an example of how to set it."""
        if self.models_root is None:
            raise ModelsRootUnsetError(
                "MODELS_ROOT is not set: wanstudio needs to know where to keep models",
                suggestions=[
                    "export MODELS_ROOT=$HOME/models   # any folder with room for the models you use",
                    "then run: wan models ensure --only ti2v-5B --variant dev",
                ],
            )
        return self.models_root


_INLINE_KEY = re.compile(r"^[A-Za-z0-9+/]{43}=?$")


def is_inline_key(text: str) -> bool:
    """Whether `text` is a raw Ed25519 public key in base64 (32 bytes: 43 characters and one `=`)."""
    import binascii

    if not _INLINE_KEY.match(text):
        return False
    try:
        return len(binascii.a2b_base64(text.rstrip("=") + "=")) == 32
    except binascii.Error:
        return False


def parse_trusted_keys(text: str) -> tuple[Path | str, ...]:
    """WAN_TRUSTED_KEYS: comma-separated entries, each a raw base64 public key (kept as a str) or the path of
    a key file or of a folder of key files (made absolute). Whether the paths hold valid keys is checked when
    a signature is verified, so a bad entry fails only the commands that need a signature, naming it."""
    entries: list[Path | str] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        entries.append(item if is_inline_key(item) else Path(item).expanduser().absolute())
    return tuple(entries)


def _api_keys(text: str) -> tuple[str, ...]:
    """WAN_API_KEYS: comma-separated keys; each is masked in logs and errors from the moment it is read."""
    from wanstudio._secrets import register_secret

    keys = tuple(key.strip() for key in text.split(",") if key.strip())
    for key in keys:
        register_secret(key)
    return keys


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be 1 or more")
    return value


def _part_size(text: str) -> int:
    value = parse_size(text)
    if value < 2**20:
        raise ValueError("must be at least 1M")
    return value - value % 2**20  # whole MiB keep every part boundary aligned for direct I/O


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _device(text: str) -> str:
    value = text.lower()
    if value in ("auto", "cpu", "cuda", "mps") or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise ValueError("expected auto, cpu, cuda, cuda:N or mps")


def _family_quotas(text: str) -> dict[str, int]:
    quotas: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        family, sep, size = item.partition("=")
        if not sep or not family.strip():
            raise ValueError(f"expected family=size pairs such as wan22=400G, got {item!r}")
        quotas[family.strip()] = parse_size(size)
    return quotas
