"""Peak memory of one job: resident set size of the process, and on CUDA the torch allocator's peak."""

from __future__ import annotations

import resource
import sys
from pathlib import Path


class PeakMemory:
    """Measures peak RSS and VRAM between `start` and `stop`.

    On Linux the kernel's high-water mark (VmHWM) is reset at the start (``clear_refs`` 5), so the peak
    is this job's, not the process's lifetime; elsewhere the lifetime peak is reported.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak_rss_bytes = 0
        self.peak_vram_bytes: int | None = None

    def start(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats()

    def stop(self) -> None:
        self.peak_rss_bytes = _peak_rss()
        if self.device.startswith("cuda"):
            import torch

            self.peak_vram_bytes = int(torch.cuda.max_memory_reserved())


def _peak_rss() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere
