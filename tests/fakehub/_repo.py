"""FakeHub's git-like repo model: entries, commits, repos, CDN grants, stored files, and git ids.

Blob ids are real git blob ids (of the LFS pointer for LFS files), tree ids real git tree ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class _Entry:
    """A file or directory of a commit."""

    path: str
    oid: str  # git blob id (of the LFS pointer for LFS files) or git tree id
    is_dir: bool
    last_commit: str
    size: int = 0
    sha256: str | None = None
    pointer_size: int | None = None  # LFS files only
    disk: Path | None = None

    @property
    def is_lfs(self) -> bool:
        return self.pointer_size is not None

    @property
    def parent(self) -> str:
        return self.path.rpartition("/")[0]


@dataclass(frozen=True)
class _Commit:
    sha: str
    title: str
    date: datetime
    entries: dict[str, _Entry]  # by path; the root directory is not an entry

    @property
    def files(self) -> list[_Entry]:
        return sorted((e for e in self.entries.values() if not e.is_dir), key=lambda e: e.path)

    def listing(self, directory: str, recursive: bool) -> list[_Entry]:
        if recursive:
            prefix = directory + "/" if directory else ""
            found = [e for e in self.entries.values() if e.path.startswith(prefix)]
        else:
            found = [e for e in self.entries.values() if e.parent == directory]
        return sorted(found, key=lambda e: e.path)


@dataclass
class _Repo:
    repo_id: str
    private: bool
    gated: bool
    created: datetime
    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, _Commit] = field(default_factory=dict)


@dataclass(frozen=True)
class _Grant:
    """A signed CDN URL handed out by a resolve redirect."""

    entry: _Entry
    expires: float


@dataclass(frozen=True)
class _StoredFile:
    size: int
    sha256: str
    git_oid: str
    pointer_size: int | None
    disk: Path


def _git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _tree_ids(blob_ids: Mapping[str, str]) -> dict[str, str]:
    """Git tree ids of every directory ("" for the root) holding the files `path -> blob id`."""
    children: dict[str, dict[str, str | None]] = {"": {}}  # dir -> name -> blob id (None: a directory)
    for path, oid in blob_ids.items():
        parts = path.split("/")
        for depth in range(len(parts)):
            directory = "/".join(parts[:depth])
            children.setdefault(directory, {})[parts[depth]] = oid if depth == len(parts) - 1 else None
    trees: dict[str, str] = {}

    def tree_id(directory: str) -> str:
        rows = []
        for name, oid in children[directory].items():
            child = f"{directory}/{name}" if directory else name
            if oid is None:
                rows.append((name + "/", b"40000 %s\0" % name.encode() + bytes.fromhex(tree_id(child))))
            else:
                rows.append((name, b"100644 %s\0" % name.encode() + bytes.fromhex(oid)))
        body = b"".join(row for _, row in sorted(rows))
        trees[directory] = hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()
        return trees[directory]

    tree_id("")
    return trees


def _check_repo_path(path: str) -> str:
    parts = path.strip("/").split("/")
    if not path.strip("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"invalid file path {path!r}")
    return "/".join(parts)
