"""The fault plan shared by FakeHub and FaultProxy: `Fault`, `FaultPlan` and the option table per kind."""

from __future__ import annotations

import fnmatch
import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["Fault", "FaultPlan"]

_FAULT_OPTIONS: dict[str, frozenset[str]] = {
    "corrupt": frozenset(),
    "truncate": frozenset({"after_bytes"}),
    "rate_limit": frozenset({"retry_after"}),
    "server_error": frozenset({"status"}),
    "slow": frozenset({"bytes_per_second"}),
    "stall": frozenset({"after_bytes", "seconds"}),
}


@dataclass
class Fault:
    """One planned misbehaviour, applied to the next `remaining` body requests matching `pattern`."""

    pattern: str
    kind: str
    remaining: int
    after_bytes: int | None = None  # truncate, stall: body bytes sent first (None: half the body)
    retry_after: int = 1  # rate_limit: seconds in `Retry-After`
    status: int = 500  # server_error: the status sent
    bytes_per_second: float | None = None  # slow: the body rate
    seconds: float = 10.0  # stall: how long the connection hangs before it is closed

    def body_limit(self, length: int) -> int:
        """How many of a `length`-byte body's bytes are sent before the connection is dropped or hangs."""
        if self.kind not in ("truncate", "stall"):
            return length
        return min(length, length // 2 if self.after_bytes is None else self.after_bytes)


class FaultPlan:
    """Faults waiting to be applied; thread-safe. `triggered` lists the (kind, path) of each applied one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._triggered: list[tuple[str, str]] = []

    def add(self, path_pattern: str, kind: str, *, times: int = 1, **options: Any) -> Fault:
        """Apply `kind` to the next `times` body requests whose path matches the fnmatch `path_pattern`.

        Options: truncate `after_bytes`; rate_limit `retry_after` (int seconds); server_error `status`;
        slow `bytes_per_second` (required); stall `after_bytes`, `seconds`.
        """
        if kind not in _FAULT_OPTIONS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(_FAULT_OPTIONS)}")
        unknown = set(options) - _FAULT_OPTIONS[kind]
        if unknown:
            raise TypeError(f"fault {kind!r} takes no option {sorted(unknown)}")
        if kind == "slow" and "bytes_per_second" not in options:
            raise TypeError("fault 'slow' needs bytes_per_second")
        if times < 1:
            raise ValueError("times must be at least 1")
        fault = Fault(path_pattern, kind, times, **options)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Drop every pending fault (the `triggered` history stays)."""
        with self._lock:
            self._faults.clear()

    def take(self, path: str) -> Fault | None:
        """Consume one use of the first pending fault matching `path` (called by the servers)."""
        with self._lock:
            for fault in self._faults:
                if fnmatch.fnmatchcase(path, fault.pattern):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    self._triggered.append((fault.kind, path))
                    return fault
        return None

    @property
    def triggered(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._triggered)
