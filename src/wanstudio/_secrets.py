"""Secret masking: no token, key, signature or presigned query string leaves the process in text.

Two nets, both applied by `mask`:
- values registered at the moment wanstudio obtains them (a Hub token, an AWS secret key, an encryption
  key) are replaced wherever they appear;
- shapes that are secret whatever their value: URL query strings (presigned S3 and CDN URLs carry their
  signature there), `Authorization`/`Bearer` values, AWS signatures and credentials, Hub tokens.

`mask` runs on every error message (errors.py), on every log line (the CLI's log formatter, for our logs
and the libraries' alike) and on JSON output, so a secret that slips into an exception from a library
is still caught on its way out.
"""

from __future__ import annotations

import re
import threading

REDACTED = "***"
_MIN_SECRET_LENGTH = 6

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_registered: re.Pattern[str] | None = None

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # The query string of any URL: presigned S3 URLs and CDN redirects carry signatures and credentials.
    (re.compile(r"((?:https?|s3)://[^\s?#\"'<>]+)\?[^\s#\"'<>]*"), r"\1?" + REDACTED),
    # ... and of request lines as HTTP libraries log them ("GET /bucket/key?X-Amz-... HTTP/1.1").
    (re.compile(r"\b((?:GET|HEAD|POST|PUT|DELETE|PATCH) /[^\s?#\"']*)\?[^\s#\"']*"), r"\1?" + REDACTED),
    # Authorization headers and their values as printed by HTTP libraries (Bearer, AWS4-HMAC-SHA256, Basic).
    (re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*b?['\"]?)[^'\"\r\n]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)\b(bearer\s+)[^\s'\",]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)\b(signature\s*=\s*)[0-9a-f]{16,}"), r"\1" + REDACTED),
    (re.compile(r"(?i)\b(x-amz-(?:signature|credential|security-token)\s*[=:]\s*['\"]?)[^&\s'\"]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)(x-amz-server-side-encryption-customer-key(?:-md5)?['\"]?\s*[:=]\s*b?['\"]?)[^'\"\r\n,}]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)(aws_secret_access_key\s*[=:]\s*['\"]?)[^\s'\"]+"), r"\1" + REDACTED),
    # Hugging Face user and organisation tokens.
    (re.compile(r"\bhf_[A-Za-z0-9]{8,}\b"), "hf_" + REDACTED),
)


def register_secret(value: str | None) -> None:
    """Mask `value` from now on wherever it appears (values under 6 characters are too short to find safely)."""
    global _registered
    if not value or len(value) < _MIN_SECRET_LENGTH:
        return
    with _secrets_lock:
        if value in _secrets:
            return
        _secrets.add(value)
        alternatives = sorted(_secrets, key=len, reverse=True)
        _registered = re.compile("|".join(re.escape(secret) for secret in alternatives))


def mask(text: str) -> str:
    """`text` with every registered secret and every secret-shaped value replaced by ***."""
    if not text:
        return text
    registered = _registered
    if registered is not None:
        text = registered.sub(REDACTED, text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def display_url(url: str) -> str:
    """A URL fit for messages and attempts: scheme, host and path, without its query string or user info."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return mask(url)
    netloc, slash, path = rest.partition("/")
    host = netloc.rpartition("@")[2]
    return f"{scheme}://{host}{slash}{path.split('?', 1)[0].split('#', 1)[0]}"
