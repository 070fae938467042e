"""Secret masking: what must never leave the process in text."""

from __future__ import annotations

import pytest

from wanstudio._secrets import display_url, mask, register_secret
from wanstudio.errors import Attempt, SourceUnavailableError


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("GET http://127.0.0.1:9000/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=abc123def456", "abc123def456"),
        ('"GET /b/k?X-Amz-Date=20261125T0&X-Amz-SignedHeaders=host HTTP/1.1" 200', "X-Amz-Date"),
        ("redirected to https://cdn.example/blob?Expires=1&Signature=Zm9vYmFyYmF6&Key-Pair-Id=K2", "Zm9vYmFyYmF6"),
        ("headers: {'Authorization': 'Bearer hf_abcdefghijklmnop'}", "hf_abcdefghijklmnop"),
        ("Authorization: AWS4-HMAC-SHA256 Credential=AKIA/2026/s3, Signature=0123456789abcdef0123", "0123456789abcdef0123"),
        ("token hf_AbCdEfGhIjKlMnOpQr in a message", "hf_AbCdEfGhIjKlMnOpQr"),
        ("'x-amz-server-side-encryption-customer-key': 'MDEyMzQ1Njc4OWFiY2RlZg=='", "MDEyMzQ1Njc4OWFiY2RlZg=="),
    ],
)
def test_secret_shapes_are_masked(text: str, secret: str) -> None:
    masked = mask(text)
    assert secret not in masked and "***" in masked


def test_registered_values_are_masked_anywhere() -> None:
    register_secret("plain-secret-value-42")
    assert mask("the key plain-secret-value-42 leaked") == "the key *** leaked"


def test_short_values_are_not_registered() -> None:
    register_secret("abc")
    assert mask("abc abc") == "abc abc"


def test_display_url_drops_query_and_user_info() -> None:
    assert display_url("https://user:pw@host:8080/a/b?sig=1#frag") == "https://host:8080/a/b"


def test_errors_and_attempts_are_masked_at_construction() -> None:
    error = SourceUnavailableError(
        "failed at http://h/x?X-Amz-Signature=deadbeefdeadbeef",
        attempts=[Attempt("s3", "a.bin", "SOURCE_UNAVAILABLE", "HTTP 500", url="http://h/x?X-Amz-Signature=deadbeefdeadbeef")],
        suggestions=["retry with Bearer hf_zzzzzzzzzzzzzzzz"],
    )
    text = str(error.to_dict())
    assert "deadbeefdeadbeef" not in text and "hf_zzzzzzzzzzzzzzzz" not in text
    assert error.attempts[0].url == "http://h/x"
