"""`wan doctor`: the hardware probe and what fits, as the real program prints it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import run_wan
from wanstudio.engine.hardware import HardwareInfo, probe, usable_cpu_count
from wanstudio.engine.memory import PROFILES

GiB = 2**30


def _mem_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal")


@pytest.fixture(scope="module")
def has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def test_doctor_json_gives_the_contract_document(has_gpu: bool) -> None:
    result = run_wan("doctor", "--json", env={"MODELS_ROOT": ""})  # needs no store
    assert result.returncode == 0, result.stderr
    document = result.json
    assert document["schema"] == "wan.doctor/1"
    assert {"gpus", "ram_bytes", "cpu_count", "fits"} <= set(document)
    if not has_gpu:
        assert document["gpus"] == [] and document["device"] == "cpu"
    for gpu in document["gpus"]:
        assert {"name", "total_vram_bytes", "free_vram_bytes", "compute_capability", "bf16", "fp8"} <= set(gpu)
    if Path("/proc/meminfo").exists():
        assert document["ram_bytes"] == _mem_total()
    assert document["cpu_count"] == usable_cpu_count() >= 1
    assert 0 < document["ram_budget_bytes"] < document["ram_bytes"]

    fits = document["fits"]
    assert {f["model"] for f in fits} == {"t2v-A14B@2.2.0", "i2v-A14B@2.2.0", "ti2v-5B@2.2.0"}
    for fit in fits:
        assert {"model", "variant", "resolution", "memory_profile", "fits", "reason"} <= set(fit)
        assert fit["memory_profile"] in PROFILES and fit["device"] == document["device"] and fit["reason"]
        if fit["device"] == "cpu":
            assert fit["estimated_vram_bytes"] is None
            assert fit["fits"] == (fit["estimated_ram_bytes"] <= document["ram_budget_bytes"])
    if not has_gpu:  # with no GPU the dev variants are listed too, and they fit anywhere
        dev = [f for f in fits if f["variant"] == "dev"]
        assert len(dev) == 3 and all(f["fits"] and f["memory_profile"] == "resident" for f in dev)
        assert {f["resolution"] for f in dev} == {"64x32", "128x64"}
        a14b = next(f for f in fits if f["model"] == "t2v-A14B@2.2.0" and f["resolution"] == "1280x720")
        assert a14b["variant"] == "bf16" and a14b["num_frames"] == 81
        if document["ram_budget_bytes"] < 40 * GiB:  # like this machine: too little RAM for 14B experts on the CPU
            assert a14b["fits"] is False and a14b["memory_profile"] == "fp8_group_offload"
            assert "smaller model" in a14b["reason"]


def test_doctor_text_is_readable(has_gpu: bool) -> None:
    result = run_wan("doctor", env={"WAN_DEVICE": "cpu"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("GPU")
    if not has_gpu:
        assert lines[0] == "GPU: none usable"
    assert any(line.startswith("RAM: ") and "GiB" in line and "available" in line for line in lines)
    assert f"CPUs: {usable_cpu_count()}" in lines
    assert "generation runs on: cpu (WAN_DEVICE=cpu)" in lines
    assert "what fits (estimates at each model's default frame count):" in lines
    assert any(line.startswith("  ti2v-5B@2.2.0 [dev] 128x64, 9 frames: fits with resident") for line in lines)


def test_a_bad_wan_device_is_invalid_params() -> None:
    result = run_wan("doctor", "--json", env={"WAN_DEVICE": "tpu"})
    assert result.returncode == 30 and result.json["error"]["code"] == "INVALID_PARAMS"
    assert "WAN_DEVICE" in result.json["error"]["message"]


def test_probe_is_the_function_the_server_calls() -> None:
    info = probe()
    assert isinstance(info, HardwareInfo) and info.ram_bytes > 0 and info.cpu_count == usable_cpu_count()
    document = info.to_json()
    assert {"gpus", "ram_bytes", "available_ram_bytes", "cpu_count", "torch_version", "cuda_version", "notes"} <= set(document)
    assert info.ram_budget == max(info.ram_bytes - max(int(info.ram_bytes * 0.1), 2 * GiB), 0)
    assert info.gpu("cpu") is None
    if not info.gpus:
        assert info.gpu("cuda:0") is None
        if document["cuda_version"] is None:
            assert any("CPU build" in note for note in info.notes)
    assert os.cpu_count() >= info.cpu_count
