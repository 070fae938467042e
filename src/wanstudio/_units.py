"""Parsing of the human sizes and durations the CLI and environment accept (`500M`, `20G`, `90s`, `30d`)."""

from __future__ import annotations

import re

_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_NUMBER_WITH_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]?)(?:i?B)?\s*$")


def parse_size(text: str) -> int:
    """Bytes in `text`: a plain number of bytes, or a number with K/M/G/T (powers of 1024)."""
    match = _NUMBER_WITH_UNIT.match(text)
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size; write bytes or a number with K, M, G or T, e.g. 500M or 2T")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_duration(text: str) -> float:
    """Seconds in `text`: a plain number of seconds, or a number with s/m/h/d/w."""
    match = _NUMBER_WITH_UNIT.match(text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _DURATION_UNITS:
        raise ValueError(f"{text!r} is not a duration; write seconds or a number with s, m, h or d, e.g. 90s or 30d")
    return float(match.group(1)) * _DURATION_UNITS[unit]


def format_bytes(size: float) -> str:
    """A short human size, in powers of 1024 (`1.5 GiB`)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
