"""Observability: Prometheus metrics from real ensures, the metrics endpoint, JSON logs with correlation
ids, and `wan models health` on good and broken setups.

Metrics are per process, so the metric tests run the ensure in this process (through the real transfer
engine, against the fake Hub on loopback) and scrape this process's registry; the CLI tests run `wan` in
subprocesses as users do.
"""

from __future__ import annotations

import io
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import as_in_a_terminal, run_wan, sha256_hex, write_model
from fakehub import FakeHub
from wanstudio.config import Settings
from wanstudio.observability import (
    ContextThreadPoolExecutor,
    JsonFormatter,
    TextFormatter,
    correlation,
    correlation_id,
    create_registry,
    metrics,
    metrics_text,
)
from wanstudio.observability._metrics import ERRORS
from wanstudio.orchestrator._locks import lock_kind
from wanstudio.orchestrator.orchestrator import Orchestrator

REPO = "Wan-AI/Toy"
TOKEN = "hf_wanstudioObservabilityToken0123456789"
INDEX, CONFIG = "model_index.json", "transformer/config.json"
WEIGHTS, VAE = "transformer/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"
FILES = {
    INDEX: b'{"_class_name": "ToyPipeline"}',
    CONFIG: b'{"layers": 2}',
    WEIGHTS: os.urandom(3 * 2**20 + 5),
    VAE: os.urandom(2**20 + 3),
}


@pytest.fixture(autouse=True)
def fresh_metrics() -> None:
    metrics.reset()


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """The fake Hub holding REPO (which accepts TOKEN), a manifest listing FILES with that repo, source hf."""
    with FakeHub(tmp_path / "hub-data", tokens={TOKEN}) as server:
        server.add_repo(REPO, FILES)
        write_model(tmp_path / "mirror", tmp_path / "models.toml", FILES, hf={"repo": REPO, "revision": "main"})
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("WAN_SOURCES", "hf")
        monkeypatch.setenv("WAN_MODELS_MANIFEST", str(tmp_path / "models.toml"))
        monkeypatch.setenv("WAN_DOWNLOAD_RETRIES", "3")
        yield server


def scrape(text: str | None = None) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition as {(sample name, labels): value}."""
    samples = {}
    for family in text_string_to_metric_families(text if text is not None else metrics_text()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def ensure_in_process() -> None:
    Orchestrator(Settings.from_env()).ensure("toy")


# -- metrics --------------------------------------------------------------------------------------------------


def test_metrics_after_an_ensure_with_a_server_error_and_a_corrupt_copy(
    hub: FakeHub, tmp_path: Path, models_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The mirror has the two small files right, a corrupt copy of the VAE, and no weights: the VAE fails
    # verification from local and comes from the Hub, whose first answer for the weights is a 500.
    mirror = tmp_path / "mirror" / "test" / "toy@1.0.0" / "base"
    (mirror / VAE).write_bytes(os.urandom(len(FILES[VAE])))
    (mirror / WEIGHTS).unlink()
    monkeypatch.setenv("WAN_SOURCES", "local,hf")
    monkeypatch.setenv("WAN_LOCAL_MIRROR", str(tmp_path / "mirror"))
    hub.faults.add(WEIGHTS, "server_error", status=500)

    ensure_in_process()

    samples = scrape()
    local_bytes = len(FILES[INDEX]) + len(FILES[CONFIG]) + len(FILES[VAE])  # the corrupt copy was received too
    assert sample(samples, "wan_download_bytes_total", source="local") == local_bytes
    assert sample(samples, "wan_download_bytes_total", source="hf") == len(FILES[VAE]) + len(FILES[WEIGHTS])
    assert sample(samples, "wan_files_verified_total", source="local") == 2
    assert sample(samples, "wan_files_verified_total", source="hf") == 2
    assert sample(samples, "wan_checksum_failures_total", source="local") == 1
    assert sample(samples, "wan_checksum_failures_total", source="hf") == 0
    assert sample(samples, "wan_download_retries_total", source="hf", reason="server_error") == 1
    assert sample(samples, "wan_download_seconds_count", source="hf") == 2
    assert sample(samples, "wan_download_seconds_bucket", source="hf", le="+Inf") == 2
    assert sample(samples, "wan_lock_wait_seconds_count", kind="variant") == 1
    assert sample(samples, "wan_lock_wait_seconds_count", kind="blob") == len(FILES)
    blobs = [p for p in (models_root / ".wan" / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == len(FILES)
    assert sample(samples, "wan_store_bytes") == sum(os.stat(p).st_blocks * 512 for p in blobs)
    assert sample(samples, "wan_store_free_bytes") > 0

    # A warm ensure moves nothing and counts nothing.
    ensure_in_process()
    assert scrape()[("wan_files_verified_total", frozenset({("source", "hf")}))] == 2


@pytest.mark.parametrize(
    ("kind", "options", "reason"),
    [
        ("rate_limit", {"retry_after": 0}, "rate_limit"),
        ("server_error", {"status": 503}, "server_error"),
        ("truncate", {"after_bytes": 2**20}, "connection"),
        ("stall", {"after_bytes": 2**20, "seconds": 10}, "stall"),
    ],
)
def test_retries_are_counted_by_reason(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch, kind: str, options: dict[str, Any], reason: str
) -> None:
    monkeypatch.setenv("WAN_DOWNLOAD_STALL_TIMEOUT", "1")
    hub.faults.add(WEIGHTS, kind, **options)
    ensure_in_process()
    samples = scrape()
    assert sample(samples, "wan_download_retries_total", source="hf", reason=reason) == 1
    retries = {k: v for k, v in samples.items() if k[0] == "wan_download_retries_total"}
    assert sum(retries.values()) == 1, retries
    assert sample(samples, "wan_files_verified_total", source="hf") == len(FILES)
    # Resumed, not fetched again: the bytes received are the file's, plus at most the chunk that broke.
    assert sum(map(len, FILES.values())) <= sample(samples, "wan_download_bytes_total", source="hf")
    assert sample(samples, "wan_download_bytes_total", source="hf") <= sum(map(len, FILES.values())) + 2**20


def test_a_checksum_failure_on_the_only_source_is_counted_and_reported(hub: FakeHub) -> None:
    from wanstudio.errors import ChecksumFailError

    hub.faults.add(WEIGHTS, "corrupt")
    with pytest.raises(ChecksumFailError):
        ensure_in_process()
    samples = scrape()
    assert sample(samples, "wan_checksum_failures_total", source="hf") == 1
    assert sample(samples, "wan_files_verified_total", source="hf") == len(FILES) - 1


def test_errors_reported_by_the_cli_are_counted_by_code() -> None:
    import typer

    from wanstudio.cli._output import reporting
    from wanstudio.errors import ModelNotFoundError

    for _ in range(2):
        with pytest.raises(typer.Exit), reporting("wan.test/1", as_json=False):
            raise ModelNotFoundError("no such model")
    assert metrics.value(ERRORS, "MODEL_NOT_FOUND") == 2
    assert sample(scrape(), "wan_errors_total", code="MODEL_NOT_FOUND") == 2


def test_histogram_buckets_are_cumulative_and_registries_are_our_own(tmp_path: Path) -> None:
    from prometheus_client import REGISTRY

    for seconds in (0.0005, 0.5, 30.0, 1e9):
        metrics.lock_wait("blob", seconds)
    registry = create_registry(models_root=tmp_path, process=False)
    samples = scrape(metrics_text(registry))
    assert sample(samples, "wan_lock_wait_seconds_bucket", kind="blob", le="0.001") == 1
    assert sample(samples, "wan_lock_wait_seconds_bucket", kind="blob", le="1.0") == 2
    assert sample(samples, "wan_lock_wait_seconds_bucket", kind="blob", le="60.0") == 3
    assert sample(samples, "wan_lock_wait_seconds_bucket", kind="blob", le="+Inf") == 4
    assert sample(samples, "wan_lock_wait_seconds_sum", kind="blob") == pytest.approx(1e9 + 30.5005)
    assert sample(samples, "wan_store_bytes") == 0  # no blobs yet
    assert not any(name.startswith("process_") for name, _ in samples)
    assert "wan_lock_wait_seconds" not in {m.name for m in REGISTRY.collect()}  # the global registry is untouched


def test_lock_kinds_come_from_the_lock_path(tmp_path: Path) -> None:
    from wanstudio.orchestrator.layout import StoreLayout

    layout = StoreLayout(tmp_path)
    assert lock_kind(layout.variant_lock("wan22", "ti2v-5B@2.2.0", "dev")) == "variant"
    assert lock_kind(layout.blob_lock("ab" * 32)) == "blob"


def test_neither_a_cold_nor_a_warm_ensure_imports_prometheus_client() -> None:
    for _ in ("cold", "warm"):
        result = run_wan("-v", "models", "ensure", "--only", "ti2v-5B", "--variant", "dev",
                         env={"PYTHONPROFILEIMPORTTIME": "1"})
        assert result.returncode == 0, result.stderr
        lines = result.stderr.splitlines()
        imported = [line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")]
        assert "wanstudio.observability" in imported
        assert not [name for name in imported if name.startswith("prometheus_client")]


# -- the metrics endpoint -------------------------------------------------------------------------------------


def _read_line(stream: Any, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.1)
        if ready:
            return stream.readline()
    raise AssertionError("no line from the process in time")


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_serve_metrics_serves_the_registry_over_http_until_stopped(models_root: Path, stop: signal.Signals) -> None:
    (models_root / ".wan" / "blobs").mkdir(parents=True)
    (models_root / ".wan" / "blobs" / "x").write_bytes(b"x" * 10_000)
    process = subprocess.Popen(
        [sys.executable, "-m", "wanstudio", "models", "serve-metrics", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=os.environ.copy(),
        preexec_fn=as_in_a_terminal,
    )
    try:
        line = _read_line(process.stderr, 30)
        assert "serving metrics on http://127.0.0.1:" in line, line
        url = line.split()[3]
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            text = response.read().decode()
        samples = scrape(text)
        assert sample(samples, "wan_store_bytes") >= 10_000
        assert sample(samples, "wan_store_free_bytes") > 0
        families = {family.name for family in text_string_to_metric_families(text)}
        assert {"wan_download_bytes", "wan_download_seconds", "wan_files_verified", "wan_checksum_failures",
                "wan_download_retries", "wan_lock_wait_seconds", "wan_errors"} <= families
        process.send_signal(stop)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()


def test_serve_metrics_on_a_busy_port_is_a_usage_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = run_wan("models", "serve-metrics", "--port", str(busy.getsockname()[1]), timeout=30)
    assert result.returncode == 30
    assert "INVALID_PARAMS" in result.stderr and "--port" in result.stderr


# -- logs and correlation ids ---------------------------------------------------------------------------------


def _json_lines(stderr: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]  # every line must parse
    for line in lines:
        assert {"ts", "level", "logger", "message"} <= set(line), line
    return lines


def test_json_logs_are_one_object_per_line_and_hold_no_secret(hub: FakeHub) -> None:
    hub.faults.add(WEIGHTS, "server_error", status=500)
    result = run_wan("-v", "models", "ensure", "--only", "toy", env={"WAN_LOG_FORMAT": "json", "HF_TOKEN": TOKEN})
    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stderr and TOKEN[3:] not in result.stderr
    assert "X-Amz-Signature=" not in result.stderr  # the CDN redirects are signed
    lines = _json_lines(result.stderr)
    retries = [line for line in lines if line["logger"] == "wanstudio.transfer" and "retry 1 of 3" in line["message"]]
    assert len(retries) == 1 and retries[0]["level"] == "WARNING"
    assert any(line["logger"].startswith("urllib3") for line in lines)  # the libraries' DEBUG lines too


def test_an_ensure_logs_under_one_correlation_id_across_its_threads(hub: FakeHub) -> None:
    hub.faults.add("*.safetensors", "server_error", status=503, times=2)
    result = run_wan("-v", "models", "ensure", "--only", "toy", env={"WAN_LOG_FORMAT": "json"})
    assert result.returncode == 0, result.stderr
    lines = [line for line in _json_lines(result.stderr) if line["logger"].startswith("wanstudio")]
    ids = {line.get("correlation_id") for line in lines}
    assert len(ids) == 1 and None not in ids, ids
    assert len({line["thread"] for line in lines}) > 1


def test_range_workers_log_under_the_callers_correlation_id(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wanstudio.orchestrator.sources.base import RemoteObject
    from wanstudio.orchestrator.transfer import Expected, TransferEngine

    monkeypatch.setenv("WAN_DOWNLOAD_PART_SIZE", "1M")  # four ranges of the weights, side by side
    engine = TransferEngine(Settings.from_env())
    hub.faults.add(WEIGHTS, "server_error", status=503, times=4)  # every range fails once and logs its retry
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("wanstudio")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    expected = Expected(len(FILES[WEIGHTS]), sha256_hex(FILES[WEIGHTS]), None, WEIGHTS, "hf", WEIGHTS)
    located = RemoteObject(hub.resolve_url(REPO, WEIGHTS))
    try:
        with correlation("ensure-under-test"), ContextThreadPoolExecutor(1, thread_name_prefix="wan-fetch") as pool:
            pool.submit(engine.fetch, located, tmp_path / "weights.part", expected).result()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = _json_lines(stream.getvalue())
    retries = [line for line in lines if "retry 1 of" in line["message"]]
    assert len(retries) == 4
    assert {line.get("correlation_id") for line in lines} == {"ensure-under-test"}
    assert any(line["thread"].startswith("wan-range") for line in retries)


def test_correlation_ids_nest_and_follow_submitted_work() -> None:
    assert correlation_id() is None
    with correlation() as outer:
        assert correlation_id() == outer and len(outer) == 16
        with correlation() as kept:
            assert kept == outer  # an ensure inside a job keeps the job's id
        with correlation("request-7") as given:
            assert given == "request-7" == correlation_id()
        assert correlation_id() == outer
        with ContextThreadPoolExecutor(2) as pool:
            assert set(pool.map(lambda _: correlation_id(), range(4))) == {outer}
        with ThreadPoolExecutor(1) as plain:
            assert plain.submit(correlation_id).result() is None  # why pools must copy the context
    assert correlation_id() is None


def test_formatters_carry_the_id_and_extras_and_mask_secrets() -> None:
    from wanstudio._secrets import register_secret

    register_secret("extra-secret-value-99")
    record = logging.LogRecord("wanstudio.x", logging.WARNING, __file__, 1, "got %s", ("hf_abcdefghijklmnop",), None)
    record.source, record.url, record.detail = "hf", "https://cdn/x?X-Amz-Signature=abc", {"key": "extra-secret-value-99"}
    with correlation("cid-1"):
        document = json.loads(JsonFormatter().format(record))
        text = TextFormatter().format(record)
    assert document["correlation_id"] == "cid-1" and document["level"] == "WARNING"
    assert document["source"] == "hf" and document["url"] == "https://cdn/x?***"
    assert document["detail"] == {"key": "***"} and "hf_abcdefghijklmnop" not in document["message"]
    assert text == "WARNING wanstudio.x [cid-1]: got hf_***"
    assert TextFormatter().format(record) == "WARNING wanstudio.x: got hf_***"
    assert "correlation_id" not in json.loads(JsonFormatter().format(record))


# -- health ---------------------------------------------------------------------------------------------------


def _checks(result: Any) -> dict[str, dict[str, Any]]:
    document = result.json
    assert document["schema"] == "wan.models.health/1"
    assert document["ok"] == (result.returncode == 0)
    return {check["name"]: check for check in document["checks"]}


def test_health_of_a_good_setup_with_its_sources(hub: FakeHub, tmp_path: Path, models_root: Path) -> None:
    result = run_wan("models", "health", "--sources", "--json",
                     env={"WAN_SOURCES": "local,hf", "WAN_LOCAL_MIRROR": str(tmp_path / "mirror"), "HF_TOKEN": TOKEN})
    assert result.returncode == 0, result.stdout + result.stderr
    checks = _checks(result)
    assert list(checks) == ["models_root", "models_root_writable", "free_space", "manifest", "source:local", "source:hf"]
    assert all(check["ok"] for check in checks.values())
    assert "does not exist yet" in checks["models_root_writable"]["detail"]
    assert checks["free_space"]["free_bytes"] > 0
    assert "1 model from" in checks["manifest"]["detail"]
    assert TOKEN not in result.stdout
    assert not models_root.exists()  # no side effect on disk
    assert run_wan("models", "health").returncode == 0  # the text form, without sources


def test_health_reports_an_unwritable_root(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_wan("models", "health", "--json", env={"MODELS_ROOT": str(blocker / "models")})
    assert result.returncode == 3
    check = _checks(result)["models_root_writable"]
    assert not check["ok"] and "is not a folder" in check["detail"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write whatever the permission bits say")
def test_health_reports_a_root_without_write_permission(models_root: Path) -> None:
    models_root.mkdir()
    models_root.chmod(0o555)
    try:
        result = run_wan("models", "health", "--json")
    finally:
        models_root.chmod(0o755)
    assert result.returncode == 3 and not _checks(result)["models_root_writable"]["ok"]


def test_health_reports_a_bad_manifest_and_an_unset_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bad.toml").write_text("schema_version = 1\n[models.\n")
    monkeypatch.delenv("MODELS_ROOT")
    result = run_wan("models", "health", "--json", env={"WAN_MODELS_MANIFEST": str(tmp_path / "bad.toml")})
    assert result.returncode == 3
    checks = _checks(result)
    assert not checks["models_root"]["ok"] and "MODELS_ROOT" in checks["models_root"]["detail"]
    assert not checks["manifest"]["ok"] and "MANIFEST_INVALID" in checks["manifest"]["detail"]


def test_health_reports_an_unreachable_hub_quickly() -> None:
    started = time.monotonic()
    result = run_wan("models", "health", "--sources", "--json", env={"WAN_SOURCES": "hf"})  # HF_ENDPOINT: a closed port
    assert result.returncode == 3
    checks = _checks(result)
    assert checks["manifest"]["ok"] and not checks["source:hf"]["ok"]
    assert "cannot reach the Hub at http://127.0.0.1:9" in checks["source:hf"]["detail"]
    assert time.monotonic() - started < 30


def test_health_reports_a_refused_token(hub: FakeHub) -> None:
    result = run_wan("models", "health", "--sources", "--json", env={"HF_TOKEN": "hf_notTheRightToken000000"})
    assert result.returncode == 3
    check = _checks(result)["source:hf"]
    assert not check["ok"] and "401" in check["detail"] and "token" in check["detail"]
    assert "notTheRightToken" not in result.stdout


def test_health_asks_s3_for_the_bucket(moto_endpoint: str) -> None:
    import boto3

    credentials = {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "AKIAWANSTUDIOHEALTH",
                   "AWS_SECRET_ACCESS_KEY": "wanstudio-health-secret-0123456789", "AWS_REGION": "us-east-1"}
    boto3.client("s3", endpoint_url=moto_endpoint, aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1",
                 ).create_bucket(Bucket="wan-health")
    good = run_wan("models", "health", "--sources", "--json",
                   env={**credentials, "WAN_SOURCES": "s3", "WAN_S3_URL": "s3://wan-health/models"})
    assert good.returncode == 0, good.stdout + good.stderr
    assert _checks(good)["source:s3"]["ok"]
    missing = run_wan("models", "health", "--sources", "--json",
                      env={**credentials, "WAN_SOURCES": "s3", "WAN_S3_URL": "s3://wan-no-such-bucket/models"})
    assert missing.returncode == 3
    assert "no such bucket" in _checks(missing)["source:s3"]["detail"]
    assert credentials["AWS_SECRET_ACCESS_KEY"] not in good.stdout + missing.stdout


def test_health_with_invalid_settings_is_reported_as_their_error() -> None:
    result = run_wan("models", "health", "--json", env={"WAN_SOURCES": "ftp"})
    assert result.returncode == 30
    assert result.json["error"]["code"] == "INVALID_PARAMS"
