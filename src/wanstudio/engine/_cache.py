"""Loaded pipelines kept between jobs: loading a model costs far more than most jobs' overhead."""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

log = logging.getLogger("wanstudio.engine")


@dataclass
class CacheEntry:
    """One loaded model; `lock` serialises the jobs that use it (a pipeline is not re-entrant)."""

    value: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class PipelineCache:
    """Least recently used pipelines, at most `capacity` (1 by default: GPU memory holds one big model)."""

    def __init__(self, capacity: int = 1) -> None:
        self.capacity = max(capacity, 0)
        self._entries: OrderedDict[Hashable, CacheEntry] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_load(self, key: Hashable, load: Callable[[], Any]) -> tuple[CacheEntry, bool]:
        """The entry for `key`, loading it when absent; the flag says whether it was already loaded."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.value is not None:
                self._entries.move_to_end(key)
                return entry, True
            if entry is None:
                entry = CacheEntry()
                self._entries[key] = entry
        with entry.lock:  # one loader per key; a second job for the same model waits for it
            if entry.value is None:
                try:
                    entry.value = load()
                except BaseException:
                    with self._lock:
                        self._entries.pop(key, None)
                    raise
                self._evict(keep=key)
                return entry, False
        return entry, True

    def discard(self, key: Hashable) -> None:
        """Forget `key`'s pipeline (one that ran out of memory is in an unknown state); the caller frees memory."""
        with self._lock:
            self._entries.pop(key, None)

    def make_room(self) -> None:
        """Before loading a model that is not cached: unload the least recently used ones until it fits the
        capacity, so that the old and the new model are never in memory together (a GPU holds one)."""
        with self._lock:
            loaded = [k for k, entry in self._entries.items() if entry.value is not None]
            evicted = loaded[: max(len(loaded) - max(self.capacity, 1) + 1, 0)]
            for key in evicted:
                log.info("unloading %s to make room", key)
                self._entries.pop(key)
        if evicted:
            _release_memory()

    def __contains__(self, key: Hashable) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.value is not None

    def __len__(self) -> int:
        return sum(1 for entry in self._entries.values() if entry.value is not None)

    def _evict(self, keep: Hashable) -> None:
        with self._lock:
            evicted = False
            while len(self._entries) > max(self.capacity, 1):
                key = next(k for k in self._entries if k != keep)
                log.info("unloading %s to make room for %s", key, keep)
                self._entries.pop(key)
                evicted = True
            if self.capacity == 0:
                self._entries.pop(keep, None)
        if evicted:
            _release_memory()


def _release_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
