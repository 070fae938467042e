"""What every benchmark shares: its section of docs/benchmarks.md, between markers, replaced in place."""

from __future__ import annotations

import os
import platform
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

import wanstudio


@dataclass(frozen=True)
class Samples:
    """Timings of one case, in the unit its benchmark states (seconds, milliseconds), with their statistics."""

    label: str
    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def p90(self) -> float:
        return statistics.quantiles(self.values, n=10, method="inclusive")[8]

    @property
    def worst(self) -> float:
        return max(self.values)


def markers(section: str) -> tuple[str, str]:
    return f"<!-- BEGIN {section} -->", f"<!-- END {section} -->"


def write_section(document: Path, name: str, section: str) -> None:
    """Replace the section `name` between its markers in `document`, or append it (creating the file)."""
    begin, end = markers(name)
    text = document.read_text(encoding="utf-8") if document.exists() else ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text += ("\n" if text and not text.endswith("\n\n") else "") + section
    document.parent.mkdir(parents=True, exist_ok=True)
    document.write_text(text, encoding="utf-8")


def machine_basics() -> str:
    """CPU model, cores (and how many this process may use), RAM, OS, Python and wanstudio versions."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = _proc_field("/proc/cpuinfo", r"^model name\s*:\s*(.+)$") or platform.processor() or "unknown CPU"
    ram_kb = _proc_field("/proc/meminfo", r"^MemTotal:\s*(\d+) kB")
    ram = f"{int(ram_kb) / 2**20:.1f} GiB" if ram_kb else "unknown"
    return (
        f"{cpu}, {os.cpu_count()} cores ({usable} usable), {ram} RAM; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; wanstudio {wanstudio.__version__}"
    )


def _proc_field(path: str, pattern: str) -> str | None:
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    found = re.search(pattern, text, re.MULTILINE)
    return found.group(1).strip() if found else None
