"""`wan models sign`, `verify-manifest` and `migrate-manifest`: the manifest's integrity and its schema."""

from __future__ import annotations
