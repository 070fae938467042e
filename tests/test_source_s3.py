"""The s3 source against a real S3-compatible server (moto's server mode) on loopback.

Objects are read through presigned URLs by the transfer engine, so these tests run the whole path: boto3
finds and signs, our engine fetches, verifies and commits. No stub stands in for S3.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote

import pytest

from conftest import run_wan, sha256_hex, write_model

ACCESS_KEY = "AKIAWANSTUDIOTESTKEY"
SECRET_KEY = "wanstudio-test-secret-key-0123456789abcdef"


class S3Store:
    """One bucket on the loopback S3 server, with the environment that points wanstudio at it."""

    def __init__(self, endpoint: str, bucket: str) -> None:
        import boto3

        self.endpoint, self.bucket, self.prefix = endpoint, bucket, "models"
        self.client = boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name="us-east-1"
        )
        self.client.create_bucket(Bucket=bucket)

    @property
    def env(self) -> dict[str, str]:
        return {
            "WAN_SOURCES": "s3",
            "WAN_S3_URL": f"s3://{self.bucket}/{self.prefix}",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
        }

    def upload_tree(self, folder: Path, **extra: Any) -> None:
        """Upload every file under a mirror folder to `<prefix>/<relative path>`."""
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            key = f"{self.prefix}/{path.relative_to(folder).as_posix()}"
            self.client.put_object(Bucket=self.bucket, Key=key, Body=path.read_bytes(), **extra)

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}", Body=data)


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3Store:
    store = S3Store(moto_endpoint, f"wan-{uuid.uuid4().hex[:12]}")
    for name, value in store.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WAN_MODELS_MANIFEST", str(tmp_path / "models.toml"))
    return store


def _model(tmp_path: Path, files: dict[str, bytes], **kwargs: Any) -> Path:
    """A model written to a staging mirror (uploaded by the test) and the manifest; returns the mirror."""
    staging = tmp_path / "staging"
    write_model(staging, tmp_path / "models.toml", files, **kwargs)
    return staging


def test_ensure_from_s3_through_the_cli(s3: S3Store, tmp_path: Path, models_root: Path) -> None:
    files = {"model_index.json": b'{"_class_name": "Toy"}', "transformer/weights.bin": os.urandom(3 * 2**20 + 17)}
    s3.upload_tree(_model(tmp_path, files))
    result = run_wan("models", "ensure", "--only", "toy", "--json")
    assert result.returncode == 0, result.stderr
    (entry,) = result.json["results"]
    assert entry["sources"] == {"s3": 2} and entry["bytes_downloaded"] == sum(map(len, files.values()))
    for path, data in files.items():
        assert (Path(entry["path"]) / path).read_bytes() == data
    assert "X-Amz-Signature" not in result.stdout + result.stderr and SECRET_KEY not in result.stdout + result.stderr
    assert not any((models_root / ".wan" / "partial").iterdir())


def test_a_large_file_comes_in_several_ranges(s3: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(5 * 2**20 + 4097)  # six 1 MiB parts, fetched over up to four connections
    s3.upload_tree(_model(tmp_path, {"big.bin": data}))
    monkeypatch.setenv("WAN_DOWNLOAD_PART_SIZE", "1M")
    monkeypatch.setenv("WAN_MAX_CONCURRENT_DOWNLOADS", "4")
    import wanstudio

    path = wanstudio.ensure("toy")
    assert (path / "big.bin").read_bytes() == data


def test_missing_object_lists_the_attempt_without_secrets(s3: S3Store, tmp_path: Path) -> None:
    _model(tmp_path, {"a.bin": b"never uploaded"})
    result = run_wan("models", "ensure", "--only", "toy", "--json")
    assert result.returncode == 15, result.stderr
    error = result.json["error"]
    assert error["code"] == "SOURCE_UNAVAILABLE"
    s3_attempts = [a for a in error["attempts"] if a["source"] == "s3"]
    assert s3_attempts and f"s3://{s3.bucket}/models/test/toy@1.0.0/base/a.bin" in s3_attempts[0]["message"]


def test_no_credentials_is_auth_fail_with_the_fix(s3: S3Store, tmp_path: Path) -> None:
    s3.upload_tree(_model(tmp_path, {"a.bin": b"data"}))
    result = run_wan("models", "ensure", "--only", "toy", "--json",
                     env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})
    assert result.returncode == 16, result.stderr
    error = result.json["error"]
    assert error["code"] == "AUTH_FAIL" and "AWS_ACCESS_KEY_ID" in " ".join(error["suggestions"])


def test_wrong_size_at_the_store_is_refused_before_downloading(s3: S3Store, tmp_path: Path) -> None:
    _model(tmp_path, {"a.bin": b"right bytes"})
    s3.put("test/toy@1.0.0/base/a.bin", b"a longer, different file")
    result = run_wan("models", "ensure", "--only", "toy", "--json")
    assert result.returncode == 18 and result.json["error"]["code"] == "CHECKSUM_FAIL"
    assert "not downloaded" in result.json["error"]["message"]


def test_corrupt_object_falls_back_to_the_next_source(s3: S3Store, tmp_path: Path, models_root: Path) -> None:
    good = b"the right content"
    mirror = _model(tmp_path, {"a.bin": good})
    s3.put("test/toy@1.0.0/base/a.bin", b"the wrong content")  # same size, other bytes
    result = run_wan("models", "ensure", "--only", "toy", "--json",
                     env={"WAN_SOURCES": "s3,local", "WAN_LOCAL_MIRROR": str(mirror)})
    assert result.returncode == 0, result.stderr
    assert result.json["results"][0]["sources"] == {"local": 1}
    assert (models_root / "test" / "toy@1.0.0" / "base" / "a.bin").read_bytes() == good
    assert "CHECKSUM" in result.stderr or "sha256" in result.stderr  # the bad copy was reported


def test_corrupt_object_on_every_source_is_checksum_fail_and_nothing_is_committed(s3: S3Store, tmp_path: Path, models_root: Path) -> None:
    _model(tmp_path, {"a.bin": b"the right content"})
    s3.put("test/toy@1.0.0/base/a.bin", b"the wrong content")
    result = run_wan("models", "ensure", "--only", "toy", "--json")
    assert result.returncode == 18
    assert result.json["error"]["attempts"][-1]["source"] == "s3"
    assert not (models_root / "test" / "toy@1.0.0" / "base").exists()
    assert not any((models_root / ".wan" / "partial").iterdir())


def test_customer_encryption_key_is_sent_and_never_shown(s3: S3Store, tmp_path: Path) -> None:
    key = "0123456789abcdef0123456789abcdef"
    data = b"encrypted at rest with our key"
    s3.upload_tree(_model(tmp_path, {"a.bin": data}), SSECustomerAlgorithm="AES256", SSECustomerKey=key)
    encoded = base64.b64encode(key.encode()).decode()
    result = run_wan("-v", "models", "ensure", "--only", "toy", "--json", env={"WAN_S3_SSE_CUSTOMER_KEY": encoded})
    assert result.returncode == 0, result.stderr
    assert key not in result.stdout + result.stderr and encoded not in result.stdout + result.stderr
    assert json.loads(result.stdout)["results"][0]["sources"] == {"s3": 1}
    assert sha256_hex(data) in {b["sha256"] for b in _state_files(Path(os.environ["MODELS_ROOT"]))}


def _state_files(root: Path) -> list[dict[str, Any]]:
    return [meta for state in (root / ".wan" / "state").rglob("*.json") for meta in json.loads(state.read_text())["files"].values()]


# -- faults between the engine and the store (a fault-injecting proxy in front of the S3 server) --------------


@pytest.fixture
def s3_faults(s3: S3Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The S3 store reached through a proxy that injects faults into GET bodies; returns the proxy."""
    from fakehub import FaultProxy

    with FaultProxy(upstream=s3.endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        monkeypatch.setenv("WAN_DOWNLOAD_RETRIES", "3")
        monkeypatch.setenv("WAN_DOWNLOAD_STALL_TIMEOUT", "1")
        yield proxy


BIG = os.urandom(2 * 2**20 + 99)


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("truncate", {"after_bytes": 2**20 + 5000}),
        ("server_error", {"status": 500}),
        ("rate_limit", {"retry_after": 1}),
        ("slow", {"bytes_per_second": 4 * 2**20}),
        ("stall", {"after_bytes": 2**20 + 5000, "seconds": 30}),
    ],
)
def test_a_passing_fault_ends_in_a_verified_file(
    s3: S3Store, s3_faults: Any, tmp_path: Path, models_root: Path, kind: str, options: dict[str, Any]
) -> None:
    s3.upload_tree(_model(tmp_path, {"big.bin": BIG}))
    s3_faults.faults.add("*/big.bin", kind, **options)
    result = run_wan("models", "ensure", "--only", "toy", "--json")
    assert result.returncode == 0, result.stderr
    assert [(k, unquote(path)) for k, path in s3_faults.faults.triggered] == [(kind, f"/{s3.bucket}/models/test/toy@1.0.0/base/big.bin")]
    assert (Path(result.json["results"][0]["path"]) / "big.bin").read_bytes() == BIG
    if kind in ("truncate", "stall"):  # resumed near the drop, not from the start
        assert s3_faults.bytes_served() < len(BIG) + 512 * 2**10


def test_corrupt_bytes_from_the_store_are_checksum_fail(s3: S3Store, s3_faults: Any, tmp_path: Path, models_root: Path) -> None:
    s3.upload_tree(_model(tmp_path, {"big.bin": BIG}))
    s3_faults.faults.add("*/big.bin", "corrupt")
    result = run_wan("models", "ensure", "--only", "toy", "--json")
    assert result.returncode == 18 and result.json["error"]["code"] == "CHECKSUM_FAIL"
    assert not (models_root / "test" / "toy@1.0.0").exists()
    assert not any((models_root / ".wan" / "partial").iterdir())


def test_throttling_past_the_retry_budget_is_rate_limit(s3: S3Store, s3_faults: Any, tmp_path: Path) -> None:
    s3.upload_tree(_model(tmp_path, {"big.bin": BIG}))
    s3_faults.faults.add("*/big.bin", "rate_limit", times=100, retry_after=0)
    result = run_wan("-v", "models", "ensure", "--only", "toy", "--json")
    assert result.returncode == 17, result.stdout
    (attempt,) = [a for a in result.json["error"]["attempts"] if a["source"] == "s3"]
    assert attempt["http_status"] == 429
    assert unquote(attempt["url"]) == f"{s3_faults.url}/{s3.bucket}/models/test/toy@1.0.0/base/big.bin"
    output = result.stdout + result.stderr
    assert "DEBUG" in output and SECRET_KEY not in output and "X-Amz-Signature=" not in output.replace("X-Amz-Signature=***", "")
