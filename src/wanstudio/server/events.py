"""Live events for `GET /v1/events`: published from any thread, delivered to every WebSocket subscriber.

Events are `{"type", "created_at", "data"}` (CONTRACT section 8). The worker threads publish; each
subscriber owns an asyncio queue on the server's event loop, filled through `call_soon_threadsafe`, so
publishing never blocks a generation. A subscriber that falls `MAX_BACKLOG` events behind (a stalled
client) is dropped rather than letting memory grow: its socket is closed and it can reconnect and read the
current state from `GET /v1/videos`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

MAX_BACKLOG = 1000

# The end of a subscription: put on a queue that overflowed, so its reader stops.
OVERFLOW: dict[str, Any] = {"type": "overflow"}


class _Subscriber:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.dropped = False

    def offer(self, event: dict[str, Any]) -> None:
        """Runs on the subscriber's loop."""
        if self.dropped:
            return
        if self.queue.qsize() >= MAX_BACKLOG:
            self.dropped = True
            self.queue.put_nowait(OVERFLOW)
            return
        self.queue.put_nowait(event)


class EventHub:
    """Fan-out of events to subscribers; `publish` may be called from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: set[_Subscriber] = set()

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        event = {"type": kind, "created_at": int(time.time()), "data": data}
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber.loop.call_soon_threadsafe(subscriber.offer, event)
            except RuntimeError:  # its loop has closed: the server is stopping
                self._remove(subscriber)

    @contextmanager
    def subscribe(self) -> Iterator["asyncio.Queue[dict[str, Any]]"]:
        """A queue of the events published from now on, for the duration of the block (call it on the loop)."""
        subscriber = _Subscriber(asyncio.get_running_loop())
        with self._lock:
            self._subscribers.add(subscriber)
        try:
            yield subscriber.queue
        finally:
            self._remove(subscriber)

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def _remove(self, subscriber: _Subscriber) -> None:
        with self._lock:
            self._subscribers.discard(subscriber)
