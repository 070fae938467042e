"""The real `wan` program in subprocesses: JSON documents, human output and exit codes (CONTRACT section 5)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import run_wan, write_model

AUDIT_HOOK = """
import sys

def _record_network(event, args):
    if event in ("socket.connect", "socket.getaddrinfo", "socket.bind", "socket.sendto"):
        with open({log!r}, "a") as handle:
            handle.write(f"{{event}} {{args!r}}\\n")

sys.addaudithook(_record_network)
"""


def test_ensure_all_dev_variants_then_list_and_status(models_root: Path) -> None:
    ensured = run_wan("models", "ensure", "--all", "--variant", "dev", "--json")
    assert ensured.returncode == 0, ensured.stderr
    document = ensured.json
    assert document["schema"] == "wan.models.ensure/1"
    assert [r["id"] for r in document["results"]] == ["t2v-A14B@2.2.0", "i2v-A14B@2.2.0", "ti2v-5B@2.2.0"]
    for result in document["results"]:
        assert set(result) >= {"id", "variant", "path", "state", "bytes_downloaded", "sources"}
        assert result["state"] == "complete" and Path(result["path"]).is_dir()
    # shared files (text encoder, tokenizer, VAE) were copied for the first model only
    assert document["results"][0]["sources"]["bundled"] > document["results"][1]["sources"]["bundled"]

    listed = run_wan("models", "list", "--json")
    assert listed.returncode == 0
    assert listed.json["schema"] == "wan.models.list/1"
    dev_states = {m["id"]: next(v for v in m["variants"] if v["name"] == "dev")["state"] for m in listed.json["models"]}
    assert dev_states == {"t2v-A14B@2.2.0": "complete", "i2v-A14B@2.2.0": "complete", "ti2v-5B@2.2.0": "complete"}

    status = run_wan("models", "status", "--variant", "dev", "--json")
    assert status.returncode == 0
    assert status.json["schema"] == "wan.models.status/1"
    first = status.json["models"][0]
    assert set(first) >= {"id", "variant", "state", "path", "missing_files", "bytes_present", "bytes_needed", "pinned"}
    assert first["state"] == "complete" and first["bytes_needed"] == 0 and first["pinned"] is False


def test_status_of_missing_models_exits_3(models_root: Path) -> None:
    result = run_wan("models", "status", "ti2v-5B", "--variant", "dev", "--json")
    assert result.returncode == 3
    model = result.json["models"][0]
    assert model["state"] == "missing" and model["bytes_needed"] > 0 and "model_index.json" in model["missing_files"]
    human = run_wan("models", "status", "ti2v-5B", "--variant", "dev")
    assert human.returncode == 3
    assert "missing" in human.stdout and "wan models ensure --only ti2v-5B@2.2.0 --variant dev" in human.stdout


def test_status_without_variant_reports_default_and_every_variant_on_disk(models_root: Path) -> None:
    assert run_wan("models", "ensure", "--only", "ti2v-5B", "--variant", "dev").returncode == 0
    result = run_wan("models", "status", "ti2v-5B", "--json")
    assert [(m["variant"], m["state"]) for m in result.json["models"]] == [("bf16", "missing"), ("dev", "complete")]
    assert result.returncode == 3  # the default variant is not there


def test_human_ensure_prints_the_path(models_root: Path) -> None:
    result = run_wan("models", "ensure", "--only", "i2v-A14B", "--variant", "dev")
    assert result.returncode == 0
    assert str(models_root / "wan22" / "i2v-A14B@2.2.0" / "dev") in result.stdout


def test_unknown_model_is_exit_13_with_choices() -> None:
    result = run_wan("models", "ensure", "--only", "ti2v-5b", "--variant", "dev", "--json")
    assert result.returncode == 13
    error = result.json["error"]
    assert result.json["schema"] == "wan.models.ensure/1"
    assert error["code"] == "MODEL_NOT_FOUND" and "ti2v-5B@2.2.0" in error["message"]
    assert any("ti2v-5B" in s for s in error["suggestions"])
    human = run_wan("models", "ensure", "--only", "ti2v-5b", "--variant", "dev")
    assert human.returncode == 13 and "MODEL_NOT_FOUND" in human.stderr and "hint:" in human.stderr


def test_usage_errors_exit_2() -> None:
    assert run_wan("models", "ensure", "--bogus").returncode == 2
    both = run_wan("models", "ensure", "--all", "--only", "ti2v-5B", "--json")
    assert both.returncode == 30 and both.json["error"]["code"] == "INVALID_PARAMS"
    neither = run_wan("models", "ensure")
    assert neither.returncode == 30 and "--only" in neither.stderr


def test_failed_download_json_lists_attempts_and_suggestions(mirror: Path, manifest_path: Path) -> None:
    write_model(mirror, manifest_path, {"a.bin": b"abc"})
    (mirror / "test" / "toy@1.0.0" / "base" / "a.bin").unlink()
    result = run_wan("models", "ensure", "--only", "toy", "--json")
    assert result.returncode == 15
    error = result.json["error"]
    assert error["code"] == "SOURCE_UNAVAILABLE" and "a.bin" in error["message"]
    assert [(a["source"], a["code"]) for a in error["attempts"]] == [
        ("bundled", "SOURCE_UNAVAILABLE"),
        ("local", "SOURCE_UNAVAILABLE"),
    ]
    assert error["suggestions"]


def test_checksum_failure_exit_18(mirror: Path, manifest_path: Path) -> None:
    write_model(mirror, manifest_path, {"a.bin": b"abc"}, listed={"a.bin": {"sha256": "f" * 64}})
    result = run_wan("models", "ensure", "--only", "toy", "--json")
    assert result.returncode == 18 and result.json["error"]["code"] == "CHECKSUM_FAIL"


def test_unsafe_manifest_path_exit_14(mirror: Path, manifest_path: Path) -> None:
    write_model(mirror, manifest_path, {"a.bin": b"abc"}, listed={"a.bin": {"path": "../../escape.bin"}})
    result = run_wan("models", "list", "--json")
    assert result.returncode == 14
    assert result.json["error"]["code"] == "PATH_INVALID" and "../../escape.bin" in result.json["error"]["message"]


def test_check_deep_flags_a_flipped_byte_with_exit_3_and_never_touches_the_network(models_root: Path, tmp_path: Path) -> None:
    assert run_wan("models", "ensure", "--only", "ti2v-5B", "--variant", "dev").returncode == 0
    target = models_root / "wan22" / "ti2v-5B@2.2.0" / "dev" / "transformer" / "diffusion_pytorch_model.safetensors"
    os.chmod(target, 0o644)
    with open(target, "r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))

    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    network_log = tmp_path / "network.log"
    (hook_dir / "sitecustomize.py").write_text(AUDIT_HOOK.format(log=str(network_log)))
    env = {"PYTHONPATH": os.pathsep.join([str(hook_dir), os.environ.get("PYTHONPATH", "")])}
    control = subprocess.run(
        [sys.executable, "-c", "import socket; socket.getaddrinfo('127.0.0.1', 9)"], env={**os.environ, **env}
    )
    assert control.returncode == 0 and "socket.getaddrinfo" in network_log.read_text()  # the hook does record
    network_log.unlink()

    shallow = run_wan("models", "check", "ti2v-5B", "--variant", "dev", "--json", env=env)
    assert shallow.returncode == 0 and shallow.json["models"][0]["state"] == "complete"
    deep = run_wan("models", "check", "ti2v-5B", "--variant", "dev", "--deep", "--json", env=env)
    assert deep.returncode == 3
    assert deep.json["schema"] == "wan.models.check/1"
    model = deep.json["models"][0]
    assert model["state"] == "corrupt"
    assert model["corrupt_files"] == ["transformer/diffusion_pytorch_model.safetensors"]
    human = run_wan("models", "check", "ti2v-5B", "--variant", "dev", "--deep", env=env)
    assert human.returncode == 3 and "--force" in human.stdout
    assert not network_log.exists(), network_log.read_text()


def test_ensure_all_with_a_variant_takes_the_models_that_have_it(mirror: Path, manifest_path: Path) -> None:
    write_model(mirror, manifest_path, {"a.bin": b"abc"}, model_id="toy@1.0.0", variant="base")
    write_model(mirror, manifest_path, {"b.bin": b"defg"}, model_id="other@1.0.0", variant="small")
    result = run_wan("models", "ensure", "--all", "--variant", "small", "--json")
    assert result.returncode == 0, result.stderr
    assert [(r["id"], r["variant"]) for r in result.json["results"]] == [("other@1.0.0", "small")]

    none = run_wan("models", "ensure", "--all", "--variant", "huge", "--json")
    assert none.returncode == 13 and none.json["error"]["param"] == "variant"
