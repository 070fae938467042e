"""Sharded weights: a `*.index.json` with a `weight_map` says which shard files of its folder are used.

Hub repos often carry more weight files than a loader reads (an old unsharded copy beside the shards, say);
only the shards an index references are needed. A shard the index references but the manifest does not
list is a broken manifest, reported before anything is downloaded.
"""

from __future__ import annotations

import json
import posixpath
from typing import Callable, Sequence

from wanstudio.errors import ManifestInvalidError
from wanstudio.orchestrator.manifest import ManifestFile

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")

IndexReader = Callable[[ManifestFile], bytes | None]
"""Returns an index file's bytes, or None when they are not available (then its folder is not filtered)."""


def referenced_shards(index: ManifestFile, content: bytes, model_id: str) -> set[str]:
    """Paths (relative to the variant folder) of the shards an index references."""
    try:
        names = set(json.loads(content)["weight_map"].values())
        if not all(isinstance(name, str) and name for name in names):
            raise ValueError("shard names must be strings")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ManifestInvalidError(
            f"model {model_id}: shard index {index.path} has no valid weight_map",
            suggestions=["the index file is damaged or not a shard index: check the source's copy"],
        ) from None
    folder = posixpath.dirname(index.path)
    return {posixpath.join(folder, name) if folder else name for name in names}


def needed_files(files: Sequence[ManifestFile], read_index: IndexReader, model_id: str) -> list[ManifestFile]:
    """`files` less the weight files that sit beside a shard index which does not reference them."""
    listed = {f.path for f in files}
    unreferenced: set[str] = set()
    for index in (f for f in files if f.is_shard_index):
        content = read_index(index)
        if content is None:
            continue
        referenced = referenced_shards(index, content, model_id)
        unlisted = sorted(referenced - listed)
        if unlisted:
            raise ManifestInvalidError(
                f"model {model_id}: shard index {index.path} references {unlisted[0]}, which the manifest does not list",
                suggestions=["add the shard to the variant's files (wan models lock does this for Hub variants)"],
            )
        folder = posixpath.dirname(index.path)
        unreferenced |= {
            f.path
            for f in files
            if posixpath.dirname(f.path) == folder and f.path.endswith(WEIGHT_SUFFIXES) and f.path not in referenced
        }
    return [f for f in files if f.path not in unreferenced]
