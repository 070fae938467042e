"""`wan models health` and `wan models serve-metrics`: is the store usable, and what it has been doing."""

from __future__ import annotations
