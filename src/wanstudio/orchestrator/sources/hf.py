"""The Hugging Face Hub source: resolve URLs for the transfer engine, the Hub's own listing and digests.

`huggingface_hub` does the metadata (revision to commit, the tree listing with LFS sizes and sha256, its
error classes); the bytes come through our transfer engine from the Hub's resolve URLs, which redirect
large files to the CDN (Xet-backed files included: the CDN serves them over plain ranged HTTP too). A
blob that an existing Hugging Face cache already holds is verified and hard-linked instead of fetched.

The token comes from the OS keyring first (service `wanstudio`, user `hf_token`), then HF_TOKEN; it is
registered for masking the moment it is read and is only ever sent to the configured endpoint.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

from wanstudio._secrets import register_secret
from wanstudio.errors import AuthFailError, PathInvalidError, RateLimitError, SourceUnavailableError
from wanstudio.orchestrator._pathrules import case_collisions, path_problem
from wanstudio.orchestrator.manifest import HubRef, ManifestFile, Model, Variant
from wanstudio.orchestrator.sources.base import FileRequest, LocalObject, Located, RemoteObject

log = logging.getLogger("wanstudio.sources.hf")

KEYRING_SERVICE = "wanstudio"
KEYRING_USER = "hf_token"
_UNSET = object()


class HubSource:
    """Files of a model's Hub repository (the manifest's `hf` table), by repo path at a revision."""

    name = "hf"

    def __init__(self, endpoint: str, env_token: str | None, cache_dir: Path) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._env_token = env_token
        self._token: Any = _UNSET
        self._lock = threading.Lock()
        self._cache_dir = cache_dir

    # -- credentials -------------------------------------------------------------------------------------------

    @property
    def token(self) -> str | None:
        """The keyring's token, else HF_TOKEN, else None (anonymous); read once."""
        with self._lock:
            if self._token is _UNSET:
                self._token = _keyring_token() or self._env_token
                register_secret(self._token)
            return self._token  # type: ignore[no-any-return]

    def auth_steps(self, repo: str) -> tuple[str, ...]:
        return (
            f"if the repository is gated, accept its terms at {self.endpoint}/{repo} while logged in",
            f"create a read token at {self.endpoint}/settings/tokens and store it with "
            f"`keyring set {KEYRING_SERVICE} {KEYRING_USER}` (or export HF_TOKEN=...)",
            "a token that is set but refused may be expired or lack access to this repository: replace it",
        )

    # -- files -------------------------------------------------------------------------------------------------

    def locate(self, request: FileRequest) -> Located:
        ref = request.variant.hf
        if ref is None:
            raise SourceUnavailableError(f"source hf skipped: the manifest gives {request.model.id} no Hub repository")
        cached = self._cached_blob(ref.repo, request.file)
        if cached is not None:
            log.info("%s is in the Hugging Face cache at %s; linking it", request.label, cached)
            return LocalObject(cached, shared=True)
        path = f"{ref.subfolder.strip('/')}/{request.file.path}" if ref.subfolder else request.file.path
        url = f"{self.endpoint}/{quote(ref.repo)}/resolve/{quote(ref.revision, safe='')}/{quote(path)}"
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return RemoteObject(url, headers, auth_suggestions=self.auth_steps(ref.repo))

    def list_variant(self, model: Model, variant: Variant) -> Variant:
        """The variant with the files the Hub lists for its `hf_allow_patterns`, pinned to one commit."""
        ref = variant.hf
        if ref is None:
            raise SourceUnavailableError(f"source hf skipped: the manifest gives {model.id} no Hub repository")
        from huggingface_hub import HfApi
        from huggingface_hub.hf_api import RepoFile
        from huggingface_hub.utils import filter_repo_objects

        api = HfApi(endpoint=self.endpoint, token=self.token or False)
        where = f"{ref.repo}@{ref.revision}"
        with _hub_errors(self, model, ref):
            commit = api.model_info(ref.repo, revision=ref.revision).sha or ref.revision
            tree = api.list_repo_tree(ref.repo, path_in_repo=ref.subfolder, revision=commit, recursive=True)
            entries = [entry for entry in tree if isinstance(entry, RepoFile)]
        prefix = f"{ref.subfolder.strip('/')}/" if ref.subfolder else ""
        files = [_manifest_file(entry, prefix) for entry in entries]
        chosen = list(filter_repo_objects(files, allow_patterns=list(variant.hf_allow_patterns), key=lambda f: f.path))
        if not chosen:
            raise SourceUnavailableError(
                f"the Hub repository {where} has no file matching {', '.join(variant.hf_allow_patterns)} "
                f"for {model.id} [{variant.name}]",
                suggestions=["check the repository, revision and hf_allow_patterns in the manifest"],
            )
        _check_paths(chosen, where)
        log.info("the Hub lists %d files for %s [%s] at commit %s", len(chosen), model.id, variant.name, commit)
        return replace(variant, files=tuple(sorted(chosen, key=lambda f: f.path)), hf=replace(ref, revision=commit))

    def _cached_blob(self, repo: str, file: ManifestFile) -> Path | None:
        digest = file.sha256 or file.git_blob_id
        if digest is None:
            return None
        blob = self._cache_dir / f"models--{repo.replace('/', '--')}" / "blobs" / digest
        try:
            return blob if blob.stat().st_size == file.size else None
        except OSError:
            return None


def _check_paths(files: list[ManifestFile], where: str) -> None:
    """The Hub's paths obey the same rules as a manifest's: they become paths on this machine."""
    for file in files:
        if problem := path_problem(file.path):
            raise PathInvalidError(f"the Hub repository {where} lists {file.path!r}, which is unsafe here: {problem}")
    if collisions := case_collisions([f.path for f in files]):
        first, second = collisions[0]
        raise PathInvalidError(f"the Hub repository {where} lists {first!r} and {second!r}, which differ only by case")


def _manifest_file(entry: Any, prefix: str) -> ManifestFile:
    """A tree entry as a manifest file: LFS files carry size and sha256, others their git blob id."""
    path = entry.path[len(prefix):] if prefix and entry.path.startswith(prefix) else entry.path
    component = path.split("/", 1)[0] if "/" in path else None
    if entry.lfs is not None:
        return ManifestFile(path=path, size=entry.lfs.size, sha256=entry.lfs.sha256, component=component)
    return ManifestFile(path=path, size=entry.size, component=component, git_blob_id=entry.blob_id or None)


@contextmanager
def _hub_errors(source: HubSource, model: Model, ref: HubRef) -> Iterator[None]:
    """Turns huggingface_hub's exceptions into wanstudio's codes, naming the repository and the fix."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, HTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        yield
    except (HTTPError, OSError) as error:  # the Hub's own errors derive from both
        where = f"{ref.repo}@{ref.revision}"
        steps = source.auth_steps(ref.repo)
        if isinstance(error, GatedRepoError):
            who = "the configured token has no access to it" if source.token else "no token is set"
            raise AuthFailError(f"the Hub repository {ref.repo} of {model.id} is gated and {who}", suggestions=steps) from None
        if isinstance(error, RepositoryNotFoundError):
            if source.token:
                raise SourceUnavailableError(
                    f"the Hub has no repository {ref.repo} for {model.id}, or the configured token cannot see it",
                    suggestions=["check `hf.repo` in the manifest", *steps[1:]]) from None
            raise AuthFailError(
                f"the Hub repository {ref.repo} of {model.id} is private or does not exist, and no token is set",
                suggestions=steps) from None
        if isinstance(error, RevisionNotFoundError):
            raise SourceUnavailableError(f"the Hub repository {ref.repo} has no revision {ref.revision!r}",
                                         suggestions=["check `hf.revision` in the manifest"]) from None
        if isinstance(error, HfHubHTTPError):
            status = error.response.status_code if error.response is not None else None
            if status == 429:
                raise RateLimitError(f"the Hub rate-limited the listing of {where}: {error}",
                                     suggestions=["wait a few minutes and retry, or set a token: anonymous limits are lower"]) from None
            if status in (401, 403):
                token = "the configured token" if source.token else "anonymous access"
                raise AuthFailError(f"the Hub refused {token} for {where} (HTTP {status})", suggestions=steps) from None
            raise SourceUnavailableError(f"the Hub failed to list {where} (HTTP {status}): {error}") from None
        raise SourceUnavailableError(
            f"cannot reach the Hub at {source.endpoint} to list {where}: {error}",
            suggestions=["check the connection, or HF_ENDPOINT if you use a mirror of the Hub"]) from None


def _keyring_token() -> str | None:
    """The token stored with `keyring set wanstudio hf_token`, or None (no keyring, no backend, no entry)."""
    try:
        import keyring
        from keyring.errors import KeyringError
    except ImportError:
        return None
    try:
        return keyring.get_password(KEYRING_SERVICE, KEYRING_USER) or None
    except (KeyringError, RuntimeError, OSError) as exc:
        log.debug("no token from the keyring: %s", exc)
        return None
