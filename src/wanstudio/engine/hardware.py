"""The hardware probe: GPUs (name, VRAM total and free, compute capability, bf16/fp8), RAM and CPUs.

`probe()` is what `wan doctor` prints and what the server's readiness and model info can report. It
imports torch; on a machine with CUDA GPUs, reading their free memory creates the CUDA context on each
(a few hundred MiB of VRAM, once per process).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RAM_RESERVE_FRACTION = 0.1  # of the RAM, kept for the system and other programs when planning
RAM_RESERVE_MIN = 2 * 2**30


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA GPU. `bf16`: bfloat16 compute (compute capability 8.0+); `fp8`: native float8 matrix
    units (8.9+). The fp8 memory profiles store weights in fp8 and compute in bf16, so they run on any GPU."""

    index: int
    name: str
    total_vram_bytes: int
    free_vram_bytes: int
    compute_capability: str
    bf16: bool
    fp8: bool

    @property
    def device(self) -> str:
        return f"cuda:{self.index}"

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "total_vram_bytes": self.total_vram_bytes,
            "free_vram_bytes": self.free_vram_bytes,
            "compute_capability": self.compute_capability,
            "bf16": self.bf16,
            "fp8": self.fp8,
        }


@dataclass(frozen=True)
class HardwareInfo:
    """What this machine offers for generation."""

    gpus: tuple[GpuInfo, ...]
    ram_bytes: int
    available_ram_bytes: int
    cpu_count: int
    torch_version: str | None = None
    cuda_version: str | None = None
    mps: bool = False  # Apple's GPU through torch's MPS backend (no memory figures)
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ram_budget(self) -> int:
        """The RAM a job may plan for: all of it less a reserve for the system."""
        return max(self.ram_bytes - max(int(self.ram_bytes * RAM_RESERVE_FRACTION), RAM_RESERVE_MIN), 0)

    def gpu(self, device: str) -> GpuInfo | None:
        """The GPU that `device` (``cuda``, ``cuda:N``) names, or None."""
        if not device.startswith("cuda"):
            return None
        index = int(device.partition(":")[2] or 0)
        return next((g for g in self.gpus if g.index == index), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "gpus": [g.to_json() for g in self.gpus],
            "ram_bytes": self.ram_bytes,
            "available_ram_bytes": self.available_ram_bytes,
            "cpu_count": self.cpu_count,
            "torch_version": self.torch_version,
            "cuda_version": self.cuda_version,
            "mps": self.mps,
            "notes": list(self.notes),
        }


def probe() -> HardwareInfo:
    """Probe this machine: GPUs through torch (none when torch has no CUDA), RAM and usable CPUs."""
    ram, available = _ram()
    notes: list[str] = []
    gpus: list[GpuInfo] = []
    torch_version = cuda_version = None
    mps = False
    try:
        import torch
    except ImportError:
        notes.append("torch is not installed: no GPU can be used")
    else:
        torch_version = torch.__version__
        cuda_version = torch.version.cuda
        if torch.cuda.is_available():
            for index in range(torch.cuda.device_count()):
                try:
                    gpus.append(_gpu(torch, index))
                except RuntimeError as exc:  # a GPU in a bad state is reported, not fatal
                    notes.append(f"cuda:{index} could not be read: {exc}")
        elif cuda_version is None:
            notes.append(f"torch {torch_version} is a CPU build: install a CUDA build of torch to use an NVIDIA GPU")
        mps_backend = getattr(torch.backends, "mps", None)
        mps = bool(mps_backend and mps_backend.is_available())
    return HardwareInfo(tuple(gpus), ram, available, usable_cpu_count(), torch_version, cuda_version, mps, tuple(notes))


def _gpu(torch: Any, index: int) -> GpuInfo:
    props = torch.cuda.get_device_properties(index)
    free, total = torch.cuda.mem_get_info(index)
    major, minor = props.major, props.minor
    return GpuInfo(
        index=index,
        name=props.name,
        total_vram_bytes=int(total),
        free_vram_bytes=int(free),
        compute_capability=f"{major}.{minor}",
        bf16=major >= 8,
        fp8=(major, minor) >= (8, 9),
    )


def usable_cpu_count() -> int:
    """CPUs this process may run on (its affinity mask), not merely those the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _ram() -> tuple[int, int]:
    """Total and available RAM in bytes."""
    try:
        fields = {}
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            fields[name] = int(rest.split()[0]) * 1024
        return fields["MemTotal"], fields.get("MemAvailable", fields.get("MemFree", 0))
    except (OSError, KeyError, ValueError, IndexError):
        pass
    try:
        import psutil  # accelerate depends on it; macOS and Windows have no /proc

        memory = psutil.virtual_memory()
        return int(memory.total), int(memory.available)
    except ImportError:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return total, total


def ram_budget() -> int:
    """The RAM a job may plan for on this machine (see HardwareInfo.ram_budget), without probing GPUs."""
    total, available = _ram()
    return HardwareInfo((), total, available, 1).ram_budget


def free_vram(device: str) -> int | None:
    """Free memory of the CUDA device `device` (``cuda``, ``cuda:N``); None for any other device."""
    if not device.startswith("cuda"):
        return None
    import torch

    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return int(free)
