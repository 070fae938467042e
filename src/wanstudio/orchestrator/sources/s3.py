"""The S3 source (AWS S3, MinIO and other S3-compatible stores): presigned URLs for the transfer engine.

boto3 finds the object (a HEAD that also checks its size before a byte moves) and signs a GET URL; the
transfer engine fetches it like any other URL, with ranges, resume and in-stream verification.
Credentials, region and endpoint come from the standard AWS chain only (AWS_* variables, profiles,
instance roles; AWS_ENDPOINT_URL for MinIO). Objects encrypted with a customer key (SSE-C) need that
key on every read: WAN_S3_SSE_CUSTOMER_KEY (32 bytes, raw or base64) sends it.

Keys are `<prefix>/<family>/<model_id>/<variant>/<path>` (CONTRACT section 2).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
from typing import Any

from wanstudio._secrets import register_secret
from wanstudio.errors import AuthFailError, ChecksumFailError, RateLimitError, SourceUnavailableError
from wanstudio.orchestrator.sources.base import FileRequest, RemoteObject

PRESIGN_SECONDS = 6 * 3600
_AUTH_STEPS = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) for an identity that may read the "
    "bucket",
    "for MinIO or another S3-compatible store, set AWS_ENDPOINT_URL to its address",
)
_REFUSED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
_THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"}


class S3Source:
    """Objects under `s3://bucket/prefix`, read through presigned GET URLs."""

    name = "s3"

    def __init__(self, url: str, sse_customer_key: str | None = None) -> None:
        self.url = url
        self.bucket, self.prefix = parse_s3_url(url)
        self._sse = _sse_customer_params(sse_customer_key)
        self._client: Any = None
        self._lock = threading.Lock()

    def key_for(self, request: FileRequest) -> str:
        parts = (self.prefix, request.model.family, request.model.id, request.variant.name, request.file.path)
        return "/".join(part for part in parts if part)

    def locate(self, request: FileRequest) -> RemoteObject:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        key = self.key_for(request)
        where = f"s3://{self.bucket}/{key}"
        params = {"Bucket": self.bucket, "Key": key, **self._sse}
        try:
            client = self.client()
            head = client.head_object(**params)
            url = client.generate_presigned_url("get_object", Params=params, ExpiresIn=PRESIGN_SECONDS)
        except NoCredentialsError:
            raise AuthFailError(
                f"source s3 has no AWS credentials to read {where}", suggestions=list(_AUTH_STEPS)
            ) from None
        except ClientError as exc:
            raise _client_error(exc, where, request.label) from None
        except BotoCoreError as exc:
            raise SourceUnavailableError(
                f"source s3 cannot reach {where} for {request.label}: {exc}",
                suggestions=["check AWS_ENDPOINT_URL and the connection to the store"],
            ) from None
        size = int(head.get("ContentLength", -1))
        if size != request.file.size:
            from wanstudio.observability import metrics

            metrics.checksum_failure(self.name)
            raise ChecksumFailError(
                f"{request.label} is {size} bytes at {where}, "
                f"where the manifest expects {request.file.size}; "
                "not downloaded",
                suggestions=[
                    "the store holds a different file than the manifest describes: fix the store or the manifest"
                ],
            )
        return RemoteObject(url, _sse_headers(self._sse), auth_suggestions=_AUTH_STEPS)

    def client(self) -> Any:
        """One boto3 client per source (boto3 clients are thread-safe)."""
        with self._lock:
            if self._client is None:
                from botocore.config import Config

                retries = {"mode": "standard", "max_attempts": 3}
                self._client = s3_client(Config(signature_version="s3v4", retries=retries))
            return self._client


def s3_client(config: Any) -> Any:
    """A boto3 S3 client from the standard AWS chain; its secret key and token are registered for masking."""
    import boto3

    session = boto3.session.Session()
    credentials = session.get_credentials()
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        register_secret(frozen.secret_key)
        register_secret(frozen.token)
    return session.client("s3", config=config)


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://bucket/prefix`; ValueError for anything else."""
    scheme, sep, rest = url.partition("://")
    bucket, _, prefix = rest.partition("/")
    if scheme != "s3" or not sep or not bucket:
        raise ValueError(f"expected s3://bucket or s3://bucket/prefix, got {url!r}")
    return bucket, prefix.strip("/")


def _client_error(exc: Any, where: str, label: str) -> Exception:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
        return SourceUnavailableError(f"source s3 has no {label} (looked for {where})")
    if status in (401, 403) or code in _REFUSED:
        return AuthFailError(f"source s3 refused access to {where} for {label} ({code or status})",
                             suggestions=list(_AUTH_STEPS))
    if status in (429, 503) or code in _THROTTLED:
        return RateLimitError(f"source s3 kept throttling {where} for {label} ({code or status})",
                              suggestions=["wait a few minutes and run the command again"])
    detail = f"{code or status} {error.get('Message', '')}".strip()
    return SourceUnavailableError(f"source s3 failed to find {where} for {label}: {detail}")


def _sse_customer_params(key: str | None) -> dict[str, str]:
    """boto3 parameters for a customer-provided encryption key (32 bytes given raw or in base64)."""
    if not key:
        return {}
    register_secret(key)
    raw = key
    if len(key) != 32:
        try:
            raw = base64.b64decode(key, validate=True).decode("latin-1")
        except (binascii.Error, ValueError):
            raise ValueError("WAN_S3_SSE_CUSTOMER_KEY must be 32 bytes, raw or base64-encoded") from None
    if len(raw) != 32:
        raise ValueError("WAN_S3_SSE_CUSTOMER_KEY must be 32 bytes, raw or base64-encoded")
    register_secret(base64.b64encode(raw.encode("latin-1")).decode())
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": raw}


def _sse_headers(params: dict[str, str]) -> dict[str, str]:
    """The headers a presigned GET of an SSE-C object must carry (they are signed, not in the URL)."""
    if not params:
        return {}
    raw = params["SSECustomerKey"].encode("latin-1")
    return {
        "x-amz-server-side-encryption-customer-algorithm": "AES256",
        "x-amz-server-side-encryption-customer-key": base64.b64encode(raw).decode(),
        "x-amz-server-side-encryption-customer-key-MD5": base64.b64encode(hashlib.md5(raw).digest()).decode(),
    }
