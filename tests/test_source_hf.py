"""The hf source and the transfer engine against a fake Hub on loopback that speaks the real protocol.

Every test ends in a verified model or in the documented error, and never with a file at the final path
that is not the manifest's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import as_in_a_terminal, run_wan, sha256_hex, write_model
from fakehub import FakeHub

REPO = "Wan-AI/Toy"
TOKEN = "hf_wanstudioTestToken0123456789"
FILES = {
    "model_index.json": b'{"_class_name": "ToyPipeline"}',
    "transformer/config.json": b'{"layers": 2}',
    "transformer/diffusion_pytorch_model.safetensors": os.urandom(3 * 2**20 + 5),
    "vae/diffusion_pytorch_model.safetensors": os.urandom(2**20 + 3),
    "README.md": b"# not wanted by the allow patterns",
}
WEIGHTS = "transformer/diffusion_pytorch_model.safetensors"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with FakeHub(tmp_path / "hub-data", tokens={TOKEN}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("WAN_SOURCES", "hf")
        monkeypatch.setenv("WAN_MODELS_MANIFEST", str(tmp_path / "models.toml"))
        monkeypatch.setenv("WAN_DOWNLOAD_RETRIES", "3")
        yield server


def listed_model(tmp_path: Path, files: dict[str, bytes] = FILES, **kwargs: Any) -> None:
    """A manifest entry listing `files` with sizes and sha256, whose Hub copy is REPO."""
    write_model(tmp_path / "unused-mirror", tmp_path / "models.toml", files, hf={"repo": REPO, "revision": "main"}, **kwargs)


def hub_listed_model(tmp_path: Path, patterns: tuple[str, ...] = ("*.json", "*.safetensors")) -> None:
    """A manifest entry that takes its file list from the Hub."""
    (tmp_path / "models.toml").write_text(
        "schema_version = 1\n"
        '[models."toy@1.0.0"]\nfamily = "test"\ntask = "t2v"\ndefault_variant = "bf16"\n'
        f'[models."toy@1.0.0".hf]\nrepo = "{REPO}"\nrevision = "main"\n'
        f'[models."toy@1.0.0".variants.bf16]\nhf_allow_patterns = {json.dumps(list(patterns))}\n'
    )


def final_dir(models_root: Path, variant: str = "base") -> Path:
    return models_root / "test" / "toy@1.0.0" / variant


def assert_verified(models_root: Path, files: dict[str, bytes] = FILES, variant: str = "base") -> None:
    for path, data in files.items():
        assert sha256_hex((final_dir(models_root, variant) / path).read_bytes()) == sha256_hex(data), path


# -- the happy paths ------------------------------------------------------------------------------------------


def test_listed_variant_from_the_hub(hub: FakeHub, tmp_path: Path, models_root: Path) -> None:
    hub.add_repo(REPO, FILES)
    listed_model(tmp_path)
    result = run_wan("models", "ensure", "--only", "toy", "--json")
    assert result.returncode == 0, result.stderr
    assert result.json["results"][0]["sources"] == {"hf": len(FILES)}
    assert_verified(models_root)
    assert hub.bytes_served() == sum(map(len, FILES.values()))
    assert not any((models_root / ".wan" / "partial").iterdir())


def test_hub_listed_variant_takes_paths_sizes_and_digests_from_the_hub(hub: FakeHub, tmp_path: Path, models_root: Path) -> None:
    commit = hub.add_repo(REPO, FILES)
    hub_listed_model(tmp_path)
    result = run_wan("models", "ensure", "--only", "toy", "--json")
    assert result.returncode == 0, result.stderr
    wanted = {p: d for p, d in FILES.items() if not p.endswith(".md")}
    assert_verified(models_root, wanted, "bf16")
    assert not (final_dir(models_root, "bf16") / "README.md").exists()
    hub.close()  # the record now answers without the Hub
    warm = run_wan("models", "status", "toy", "--json")
    assert warm.json["models"][0]["state"] == "complete", warm.stdout
    assert run_wan("models", "ensure", "--only", "toy").returncode == 0
    assert commit  # every file came from one commit: the listing pinned it


def test_a_file_changed_on_the_hub_after_listing_is_a_checksum_failure(hub: FakeHub, tmp_path: Path, models_root: Path) -> None:
    hub.add_repo(REPO, FILES)
    listed_model(tmp_path, listed={WEIGHTS: {"sha256": "0" * 64}})
    result = run_wan("models", "ensure", "--only", "toy", "--json")
    assert result.returncode == 18 and result.json["error"]["code"] == "CHECKSUM_FAIL"
    assert not final_dir(models_root).exists()


def test_unsafe_paths_listed_by_the_hub_are_refused(hub: FakeHub, tmp_path: Path, models_root: Path) -> None:
    hub.add_repo(REPO, {"config.json": b"{}", "Config.json": b"[]"})
    hub_listed_model(tmp_path)
    result = run_wan("models", "ensure", "--only", "toy", "--json")
    assert result.returncode == 14 and result.json["error"]["code"] == "PATH_INVALID"
    assert "differ only by case" in result.json["error"]["message"]
    assert not (models_root / "test").exists()


def test_lock_writes_sizes_digests_and_the_commit(hub: FakeHub, tmp_path: Path, models_root: Path) -> None:
    commit = hub.add_repo(REPO, FILES)
    hub_listed_model(tmp_path)
    locked_path = tmp_path / "locked.toml"
    result = run_wan("models", "lock", "toy", "--output", str(locked_path), "--json")
    assert result.returncode == 0, result.stderr
    assert result.json["locked"][0]["revision"] == commit
    variant = tomllib.loads(locked_path.read_text())["models"]["toy@1.0.0"]["variants"]["bf16"]
    assert variant["hf"]["revision"] == commit
    recorded = {f["path"]: (f["size"], f["sha256"]) for f in variant["files"]}
    assert recorded == {p: (len(d), sha256_hex(d)) for p, d in FILES.items() if not p.endswith(".md")}
    assert "sign it again" not in result.stderr  # nothing was signed
    # The locked manifest needs no Hub: a mirror with the same files serves it, verified by sha256.
    mirror = tmp_path / "mirror" / "test" / "toy@1.0.0" / "bf16"
    for path, data in FILES.items():
        (mirror / path).parent.mkdir(parents=True, exist_ok=True)
        (mirror / path).write_bytes(data)
    hub.close()
    offline = run_wan("models", "ensure", "--only", "toy", "--json",
                      env={"WAN_MODELS_MANIFEST": str(locked_path), "WAN_SOURCES": "local", "WAN_LOCAL_MIRROR": str(tmp_path / "mirror")})
    assert offline.returncode == 0, offline.stderr
    assert offline.json["results"][0]["sources"] == {"local": 4}


def test_lock_says_when_it_leaves_a_signature_stale(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_repo(REPO, FILES)
    hub_listed_model(tmp_path)
    (tmp_path / "models.toml.sig").write_text("ed25519 0000000000000000 AAAA\n")
    result = run_wan("models", "lock", "toy")
    assert result.returncode == 0, result.stderr
    assert "sign it again with `wan models sign`" in result.stderr


def test_lock_refuses_to_change_the_packaged_manifest(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WAN_MODELS_MANIFEST")
    result = run_wan("models", "lock", "--json")
    assert result.returncode == 30 and "--output" in " ".join(result.json["error"]["suggestions"])


def test_blob_in_the_hugging_face_cache_is_linked_not_downloaded(hub: FakeHub, tmp_path: Path, models_root: Path) -> None:
    from huggingface_hub import snapshot_download

    hub.add_repo(REPO, FILES)
    cache = Path(os.environ["HF_HUB_CACHE"])
    snapshot_download(REPO, allow_patterns=[WEIGHTS], cache_dir=cache, endpoint=hub.url, token=False)
    hub.reset_stats()
    listed_model(tmp_path)
    assert run_wan("models", "ensure", "--only", "toy").returncode == 0
    assert hub.get_count(WEIGHTS) == 0
    cached_blob = cache / f"models--{REPO.replace('/', '--')}" / "blobs" / sha256_hex(FILES[WEIGHTS])
    assert os.stat(final_dir(models_root) / WEIGHTS).st_ino == os.stat(cached_blob).st_ino
    assert_verified(models_root)


# -- faults -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("truncate", {"after_bytes": 2**20 + 1}),
        ("server_error", {"status": 503}),
        ("rate_limit", {"retry_after": 1}),
        ("slow", {"bytes_per_second": 8 * 2**20}),
        ("stall", {"after_bytes": 2**20 + 5000, "seconds": 30}),
    ],
)
def test_a_passing_fault_ends_in_a_verified_file(
    hub: FakeHub, tmp_path: Path, models_root: Path, kind: str, options: dict[str, Any]
) -> None:
    hub.add_repo(REPO, FILES)
    listed_model(tmp_path)
    hub.faults.add("*.safetensors", kind, **options)
    result = run_wan("models", "ensure", "--only", "toy", "--json", env={"WAN_DOWNLOAD_STALL_TIMEOUT": "1"})
    assert result.returncode == 0, result.stderr
    assert (kind, WEIGHTS) in hub.faults.triggered or (kind, "vae/diffusion_pytorch_model.safetensors") in hub.faults.triggered
    assert_verified(models_root)
    if kind in ("truncate", "stall"):  # the retry resumed near where the drop left off, not from the start
        assert hub.bytes_served() < sum(map(len, FILES.values())) + 512 * 2**10


def test_corrupt_bytes_are_checksum_fail_and_nothing_is_committed(hub: FakeHub, tmp_path: Path, models_root: Path) -> None:
    hub.add_repo(REPO, FILES)
    listed_model(tmp_path)
    hub.faults.add(WEIGHTS, "corrupt")
    result = run_wan("models", "ensure", "--only", "toy", "--json")
    assert result.returncode == 18, result.stderr
    error = result.json["error"]
    assert error["code"] == "CHECKSUM_FAIL" and WEIGHTS in error["message"]
    assert not final_dir(models_root).exists()
    assert not list((models_root / ".wan" / "partial").glob(f"{sha256_hex(FILES[WEIGHTS])}*"))
    assert run_wan("models", "ensure", "--only", "toy").returncode == 0  # the next try is clean
    assert_verified(models_root)


@pytest.mark.parametrize(
    ("kind", "options", "code", "status"),
    [
        ("rate_limit", {"retry_after": 0}, "RATE_LIMIT", 429),
        ("server_error", {"status": 500}, "SOURCE_UNAVAILABLE", 500),
        ("truncate", {"after_bytes": 1000}, "SOURCE_UNAVAILABLE", None),
    ],
)
def test_a_fault_past_the_retry_budget_is_the_documented_error(
    hub: FakeHub, tmp_path: Path, models_root: Path, kind: str, options: dict[str, Any], code: str, status: int | None
) -> None:
    hub.add_repo(REPO, FILES)
    listed_model(tmp_path)
    hub.faults.add(WEIGHTS, kind, times=100, **options)
    result = run_wan("models", "ensure", "--only", "toy", "--json", env={"WAN_DOWNLOAD_RETRIES": "2"})
    error = result.json["error"]
    assert error["code"] == code, result.stdout
    (attempt,) = [a for a in error["attempts"] if a["file"] == WEIGHTS and a["source"] == "hf"]
    assert attempt["code"] == code and attempt.get("http_status") == status
    assert attempt["url"].startswith(hub.url) and "?" not in attempt["url"]
    assert not final_dir(models_root).exists()


def test_a_file_missing_on_the_hub_is_source_unavailable_and_leaves_nothing_behind(
    hub: FakeHub, tmp_path: Path, models_root: Path
) -> None:
    hub.add_repo(REPO, {p: d for p, d in FILES.items() if p != WEIGHTS})
    listed_model(tmp_path)
    result = run_wan("models", "ensure", "--only", "toy", "--json")
    assert result.returncode == 15 and result.json["error"]["code"] == "SOURCE_UNAVAILABLE"
    (attempt,) = [a for a in result.json["error"]["attempts"] if a["source"] == "hf"]
    assert attempt["file"] == WEIGHTS and attempt["http_status"] == 404
    assert not list((models_root / ".wan" / "partial").glob(f"{sha256_hex(FILES[WEIGHTS])}*"))


def test_every_attempt_is_listed_when_all_sources_fail(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add_repo(REPO, FILES)
    listed_model(tmp_path)
    hub.faults.add(WEIGHTS, "corrupt", times=10)
    mirror = tmp_path / "empty-mirror"
    mirror.mkdir()
    result = run_wan("models", "ensure", "--only", "toy", "--json",
                     env={"WAN_SOURCES": "local,s3,hf", "WAN_LOCAL_MIRROR": str(mirror)})
    attempts = [a for a in result.json["error"]["attempts"] if a["file"] == WEIGHTS]
    assert [a["source"] for a in attempts] == ["bundled", "local", "s3", "hf"]
    assert [a["code"] for a in attempts][-1] == "CHECKSUM_FAIL"


# -- credentials ------------------------------------------------------------------------------------------


def test_private_repo_without_a_token_is_auth_fail_with_the_steps(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_repo(REPO, FILES, private=True)
    hub_listed_model(tmp_path)
    result = run_wan("models", "ensure", "--only", "toy", "--json")
    assert result.returncode == 16, result.stdout
    error = result.json["error"]
    assert error["code"] == "AUTH_FAIL" and REPO in error["message"]
    assert any("keyring set wanstudio hf_token" in s for s in error["suggestions"])


def test_gated_repo_files_without_a_token_are_auth_fail(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_repo(REPO, FILES, gated=True)
    listed_model(tmp_path)
    result = run_wan("models", "ensure", "--only", "toy", "--json")
    assert result.returncode == 16 and result.json["error"]["code"] == "AUTH_FAIL"
    assert any("accept its terms" in s for s in result.json["error"]["suggestions"])


def test_hf_token_opens_a_private_repo(hub: FakeHub, tmp_path: Path, models_root: Path) -> None:
    hub.add_repo(REPO, FILES, private=True)
    hub_listed_model(tmp_path)
    result = run_wan("models", "ensure", "--only", "toy", env={"HF_TOKEN": TOKEN})
    assert result.returncode == 0, result.stderr
    hub_requests = [r for r in hub.requests if r.path.startswith((f"/api/models/{REPO}", f"/{REPO}/"))]
    assert hub_requests and all(r.authorization == f"Bearer {TOKEN}" for r in hub_requests)
    assert not any(r.authorization for r in hub.requests if r.server == "cdn")  # never sent to another origin


def test_keyring_token_wins_over_hf_token(hub: FakeHub, tmp_path: Path, models_root: Path) -> None:
    hub.add_repo(REPO, FILES, private=True)
    hub_listed_model(tmp_path)
    backend = tmp_path / "keyring_backend"
    backend.mkdir()
    (backend / "filekeyring.py").write_text(
        "import json, os\nfrom keyring.backend import KeyringBackend\n"
        "class FileKeyring(KeyringBackend):\n    priority = 1\n"
        "    def _data(self):\n        return json.load(open(os.environ['TEST_KEYRING_FILE']))\n"
        "    def get_password(self, service, user):\n        return self._data().get(f'{service}/{user}')\n"
        "    def set_password(self, service, user, password):\n        raise NotImplementedError\n"
        "    def delete_password(self, service, user):\n        raise NotImplementedError\n"
    )
    (tmp_path / "keyring.json").write_text(json.dumps({"wanstudio/hf_token": TOKEN}))
    result = run_wan("models", "ensure", "--only", "toy", env={
        "HF_TOKEN": "hf_refusedTokenFromTheEnvironment",
        "PYTHON_KEYRING_BACKEND": "filekeyring.FileKeyring",
        "PYTHONPATH": f"{backend}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "TEST_KEYRING_FILE": str(tmp_path / "keyring.json"),
    })
    assert result.returncode == 0, result.stderr


# -- secrets ------------------------------------------------------------------------------------------------


def test_no_secret_in_any_output_of_a_debug_run(hub: FakeHub, tmp_path: Path) -> None:
    """A run at DEBUG, libraries' logs included, with a token, retries, redirects to signed URLs and a failure."""
    hub.add_repo(REPO, FILES, private=True)
    hub_listed_model(tmp_path)
    hub.faults.add("*.safetensors", "rate_limit", retry_after=0)
    hub.faults.add("vae/*", "corrupt", times=10)
    result = run_wan("-v", "models", "ensure", "--only", "toy", "--json", env={"HF_TOKEN": TOKEN})
    assert result.returncode == 18, result.stdout
    output = result.stdout + result.stderr
    assert "DEBUG" in output and "retry" in output  # the run really logged at DEBUG, retries included
    signatures = {r.path.split("X-Amz-Signature=")[1].split("&")[0] for r in hub.requests if "X-Amz-Signature=" in r.path}
    assert signatures, "the run followed signed redirects"
    for secret in (TOKEN, *signatures):
        assert secret not in output
    assert "X-Amz-Credential" not in output


# -- interruption, resume and concurrency --------------------------------------------------------------------


def _start_ensure(env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`wan models ensure` in the background, with Ctrl-C (SIGINT) handled as in a terminal."""
    return subprocess.Popen(
        [sys.executable, "-m", "wanstudio", "models", "ensure", "--only", "toy", "--json"],
        env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=as_in_a_terminal,
    )


def _wait_for_bytes(hub: FakeHub, at_least: int, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while hub.bytes_served() < at_least:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the download did not start"
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_mid_download_resumes_fetching_at_most_two_parts_again(hub: FakeHub, tmp_path: Path, models_root: Path) -> None:
    part = 2**20
    big = os.urandom(12 * part + 12345)
    files = {"model_index.json": b"{}", "big.safetensors": big}
    hub.add_repo(REPO, files)
    listed_model(tmp_path, files)
    hub.throttle_bytes_per_second = 4 * part
    env = {"WAN_DOWNLOAD_PART_SIZE": "1M", "WAN_MAX_CONCURRENT_DOWNLOADS": "4"}
    process = _start_ensure(env)
    _wait_for_bytes(hub, len(big) // 2, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not final_dir(models_root).exists()
    before = hub.bytes_served("big.safetensors")
    assert before < len(big)
    hub.throttle_bytes_per_second = None
    result = run_wan("models", "ensure", "--only", "toy", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert_verified(models_root, files)
    assert hub.bytes_served("big.safetensors") <= len(big) + 2 * part


@pytest.mark.slow
def test_ctrl_c_is_interrupted_and_keeps_the_partial_download(hub: FakeHub, tmp_path: Path, models_root: Path) -> None:
    big = os.urandom(8 * 2**20)
    files = {"big.safetensors": big}
    hub.add_repo(REPO, files)
    listed_model(tmp_path, files)
    hub.throttle_bytes_per_second = 4 * 2**20
    process = _start_ensure()
    _wait_for_bytes(hub, 2**20, process)
    process.send_signal(signal.SIGINT)
    stdout, _ = process.communicate(timeout=30)
    assert process.returncode == 130 and json.loads(stdout)["error"]["code"] == "INTERRUPTED"
    kept = list((models_root / ".wan" / "partial").glob(f"{sha256_hex(big)}.part*"))
    assert len(kept) == 2  # the data and its journal
    hub.throttle_bytes_per_second = None
    assert run_wan("models", "ensure", "--only", "toy").returncode == 0
    assert hub.bytes_served("big.safetensors") < 2 * len(big)
    assert_verified(models_root, files)


@pytest.mark.slow
def test_four_processes_ensuring_one_model_fetch_each_file_once(hub: FakeHub, tmp_path: Path, models_root: Path) -> None:
    hub.add_repo(REPO, FILES)
    listed_model(tmp_path)
    hub.throttle_bytes_per_second = 16 * 2**20  # long enough for the four to overlap
    processes = [_start_ensure() for _ in range(4)]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, outputs
    paths = {json.loads(out)["results"][0]["path"] for out, _ in outputs}
    assert paths == {str(final_dir(models_root))}
    for path in FILES:
        assert hub.get_count(path) == 1, path
    assert hub.bytes_served() == sum(map(len, FILES.values()))
    assert_verified(models_root)
