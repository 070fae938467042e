"""Error codes, exit codes and HTTP statuses of CONTRACT section 7, and the error document."""

from __future__ import annotations

import json

import pytest

from wanstudio.errors import (
    ERRORS_BY_CODE,
    Attempt,
    InvalidParamsError,
    LockTimeoutError,
    ManifestInvalidError,
    ModelNotFoundError,
    NoSpaceError,
    PathInvalidError,
    SourceUnavailableError,
    WanError,
)

# CONTRACT section 7, copied as data: code -> (exit code, HTTP status; None where the table says "—").
CONTRACT_ERRORS: dict[str, tuple[int, int | None]] = {
    "MODELS_ROOT_UNSET": (10, 503),
    "MANIFEST_INVALID": (11, 500),
    "SIGNATURE_INVALID": (12, 500),
    "MODEL_NOT_FOUND": (13, 404),
    "PATH_INVALID": (14, 500),
    "SOURCE_UNAVAILABLE": (15, 502),
    "AUTH_FAIL": (16, 502),
    "RATE_LIMIT": (17, 429),
    "CHECKSUM_FAIL": (18, 502),
    "NO_SPACE": (19, 507),
    "QUOTA_EXCEEDED": (20, 507),
    "LOCK_TIMEOUT": (21, 503),
    "INTERRUPTED": (130, None),
    "INVALID_PARAMS": (30, 400),
    "OUT_OF_MEMORY": (31, 507),
    "GENERATION_FAILED": (32, 500),
    "CANCELLED": (33, None),
    # The server's codes (the last paragraph of section 7); their exit codes are ours to choose.
    "UNAUTHORIZED": (40, 401),
    "NOT_FOUND": (41, 404),
    "NOT_READY": (42, 409),
    "PAYLOAD_TOO_LARGE": (43, 413),
    "QUEUE_FULL": (44, 429),
}

# Exit codes CONTRACT section 5 gives to other outcomes: success, usage error, incomplete/corrupt.
OTHER_EXIT_CODES = {0, 2, 3}


@pytest.mark.parametrize("code, expected", CONTRACT_ERRORS.items(), ids=CONTRACT_ERRORS.keys())
def test_every_contract_code_has_a_class_with_its_exit_code_and_http_status(
    code: str, expected: tuple[int, int | None]
) -> None:
    cls = ERRORS_BY_CODE[code]
    assert issubclass(cls, WanError)
    assert cls.code == code
    assert (cls.exit_code, cls.http_status) == expected
    error = cls("something happened")
    assert (error.code, error.exit_code, error.http_status) == (code, *expected)


def test_errors_by_code_is_keyed_by_each_class_code() -> None:
    assert set(CONTRACT_ERRORS) <= set(ERRORS_BY_CODE)
    for code, cls in ERRORS_BY_CODE.items():
        assert cls.code == code


def test_exit_codes_are_distinct_and_free_of_the_reserved_ones() -> None:
    exit_codes = [cls.exit_code for cls in ERRORS_BY_CODE.values()]
    assert len(exit_codes) == len(set(exit_codes))
    assert not set(exit_codes) & OTHER_EXIT_CODES


def test_to_dict_is_the_contract_error_object() -> None:
    attempts = [
        Attempt(source="s3", file="vae/x", code="AUTH_FAIL", message="403", http_status=403),
        Attempt(source="hf", file="vae/x", code="SOURCE_UNAVAILABLE", message="down", url="https://hub/x"),
    ]
    error = SourceUnavailableError("no source had vae/x", attempts=attempts, suggestions=["check the network"])
    document = error.to_dict()
    assert document == {
        "code": "SOURCE_UNAVAILABLE",
        "message": "no source had vae/x",
        "attempts": [
            {"source": "s3", "file": "vae/x", "code": "AUTH_FAIL", "message": "403", "http_status": 403},
            {"source": "hf", "file": "vae/x", "code": "SOURCE_UNAVAILABLE", "message": "down", "url": "https://hub/x"},
        ],
        "suggestions": ["check the network"],
    }
    assert json.loads(json.dumps(document)) == document


def test_to_dict_of_a_bare_error_has_the_four_keys() -> None:
    document = ManifestInvalidError("bad").to_dict()
    assert document == {"code": "MANIFEST_INVALID", "message": "bad", "attempts": [], "suggestions": []}


def test_to_dict_names_the_parameter_when_given() -> None:
    document = InvalidParamsError("steps must be 1-100", param="steps").to_dict()
    assert document["param"] == "steps"
    assert {"code", "message", "attempts", "suggestions"} <= set(document)


def test_message_and_suggestions_are_kept() -> None:
    error = ModelNotFoundError("unknown model 'x'", suggestions=iter(["a", "b"]))
    assert str(error) == error.message == "unknown model 'x'"
    assert error.suggestions == ["a", "b"]
    assert error.attempts == []


@pytest.mark.parametrize(
    "cls, builtin",
    [
        (ModelNotFoundError, LookupError),
        (NoSpaceError, OSError),
        (LockTimeoutError, TimeoutError),
        (InvalidParamsError, ValueError),
        (ManifestInvalidError, ValueError),
        (PathInvalidError, ValueError),
    ],
)
def test_built_in_bases_let_callers_catch_what_they_know(cls: type[WanError], builtin: type[Exception]) -> None:
    with pytest.raises(builtin):
        raise cls("x")
    with pytest.raises(WanError):
        raise cls("x")


def test_every_error_is_a_wan_error_and_an_exception() -> None:
    for cls in ERRORS_BY_CODE.values():
        assert issubclass(cls, WanError) and issubclass(cls, Exception)
        assert not issubclass(cls, KeyboardInterrupt)
