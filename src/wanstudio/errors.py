"""Every failure wanstudio reports, with the stable codes of the public contract (CONTRACT section 7).

The hierarchy, one class per code; built-in bases let callers catch what they already know::

    WanError
     ├── ModelsRootUnsetError      MODELS_ROOT_UNSET
     ├── ManifestInvalidError      MANIFEST_INVALID     (ValueError)
     ├── SignatureInvalidError     SIGNATURE_INVALID
     ├── ModelNotFoundError        MODEL_NOT_FOUND      (LookupError)
     ├── PathInvalidError          PATH_INVALID         (ValueError)
     ├── SourceUnavailableError    SOURCE_UNAVAILABLE
     ├── AuthFailError             AUTH_FAIL            (PermissionError)
     ├── RateLimitError            RATE_LIMIT
     ├── ChecksumFailError         CHECKSUM_FAIL
     ├── NoSpaceError              NO_SPACE             (OSError)
     ├── QuotaExceededError        QUOTA_EXCEEDED
     ├── LockTimeoutError          LOCK_TIMEOUT         (TimeoutError)
     ├── OperationInterruptedError INTERRUPTED          (Ctrl-C or SIGTERM; partial data kept for resume)
     ├── InvalidParamsError        INVALID_PARAMS       (ValueError)
     ├── OutOfMemoryError          OUT_OF_MEMORY        (MemoryError)
     ├── GenerationFailedError     GENERATION_FAILED
     ├── JobCancelledError         CANCELLED
     │   the server's own (CONTRACT section 7, last paragraph):
     ├── UnauthorizedError         UNAUTHORIZED         (PermissionError)
     ├── VideoNotFoundError        NOT_FOUND            (LookupError)
     ├── NotReadyError             NOT_READY
     ├── PayloadTooLargeError      PAYLOAD_TOO_LARGE    (ValueError)
     ├── QueueFullError            QUEUE_FULL
     └── InternalError             INTERNAL_ERROR       (an unexpected server failure; added code)

Each error carries a message that names the model, file, source or parameter, the ``suggestions`` that tell
the user what to do next, and for downloads the ``attempts`` made on each source.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Iterable

from wanstudio._secrets import display_url, mask


@dataclass(frozen=True)
class Attempt:
    """One try of one source for one file, as reported in errors (URLs and messages are masked of secrets)."""

    source: str
    file: str
    code: str
    message: str
    url: str | None = None
    http_status: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", mask(self.message))
        if self.url is not None:
            object.__setattr__(self, "url", display_url(self.url))

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


class WanError(Exception):
    """Root of every wanstudio error: a stable ``code``, an exit code and an HTTP status."""

    code: ClassVar[str] = "GENERATION_FAILED"
    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int | None] = 500

    def __init__(
        self,
        message: str,
        *,
        suggestions: Iterable[str] = (),
        attempts: Iterable[Attempt] = (),
        param: str | None = None,
    ) -> None:
        message = mask(message)  # a library's exception text may carry a URL with a signature in it
        super().__init__(message)
        self.message = message
        self.suggestions = [mask(s) for s in suggestions]
        self.attempts = list(attempts)
        self.param = param

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` object of the contract's JSON documents."""
        document: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "attempts": [attempt.to_dict() for attempt in self.attempts],
            "suggestions": self.suggestions,
        }
        if self.param is not None:
            document["param"] = self.param
        return document

    def __str__(self) -> str:
        return self.message


class ModelsRootUnsetError(WanError):
    code, exit_code, http_status = "MODELS_ROOT_UNSET", 10, 503


class ManifestInvalidError(WanError, ValueError):
    code, exit_code, http_status = "MANIFEST_INVALID", 11, 500


class SignatureInvalidError(WanError):
    code, exit_code, http_status = "SIGNATURE_INVALID", 12, 500


class ModelNotFoundError(WanError, LookupError):
    code, exit_code, http_status = "MODEL_NOT_FOUND", 13, 404


class PathInvalidError(WanError, ValueError):
    code, exit_code, http_status = "PATH_INVALID", 14, 500


class SourceUnavailableError(WanError):
    code, exit_code, http_status = "SOURCE_UNAVAILABLE", 15, 502


class AuthFailError(WanError, PermissionError):
    code, exit_code, http_status = "AUTH_FAIL", 16, 502


class RateLimitError(WanError):
    code, exit_code, http_status = "RATE_LIMIT", 17, 429


class ChecksumFailError(WanError):
    code, exit_code, http_status = "CHECKSUM_FAIL", 18, 502


class NoSpaceError(WanError, OSError):
    code, exit_code, http_status = "NO_SPACE", 19, 507


class QuotaExceededError(WanError):
    code, exit_code, http_status = "QUOTA_EXCEEDED", 20, 507


class LockTimeoutError(WanError, TimeoutError):
    code, exit_code, http_status = "LOCK_TIMEOUT", 21, 503


class OperationInterruptedError(WanError):
    code, exit_code, http_status = "INTERRUPTED", 130, None


class InvalidParamsError(WanError, ValueError):
    code, exit_code, http_status = "INVALID_PARAMS", 30, 400


class OutOfMemoryError(WanError, MemoryError):
    code, exit_code, http_status = "OUT_OF_MEMORY", 31, 507


class GenerationFailedError(WanError):
    code, exit_code, http_status = "GENERATION_FAILED", 32, 500


class JobCancelledError(WanError):
    code, exit_code, http_status = "CANCELLED", 33, None


class UnauthorizedError(WanError, PermissionError):
    code, exit_code, http_status = "UNAUTHORIZED", 40, 401


class VideoNotFoundError(WanError, LookupError):
    code, exit_code, http_status = "NOT_FOUND", 41, 404


class NotReadyError(WanError):
    code, exit_code, http_status = "NOT_READY", 42, 409


class PayloadTooLargeError(WanError, ValueError):
    code, exit_code, http_status = "PAYLOAD_TOO_LARGE", 43, 413


class QueueFullError(WanError):
    code, exit_code, http_status = "QUEUE_FULL", 44, 429


class InternalError(WanError):
    code, exit_code, http_status = "INTERNAL_ERROR", 45, 500


ERRORS_BY_CODE: dict[str, type[WanError]] = {
    cls.code: cls
    for cls in (
        ModelsRootUnsetError,
        ManifestInvalidError,
        SignatureInvalidError,
        ModelNotFoundError,
        PathInvalidError,
        SourceUnavailableError,
        AuthFailError,
        RateLimitError,
        ChecksumFailError,
        NoSpaceError,
        QuotaExceededError,
        LockTimeoutError,
        OperationInterruptedError,
        InvalidParamsError,
        OutOfMemoryError,
        GenerationFailedError,
        JobCancelledError,
        UnauthorizedError,
        VideoNotFoundError,
        NotReadyError,
        PayloadTooLargeError,
        QueueFullError,
        InternalError,
    )
}
