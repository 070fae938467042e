"""`ensure`: plan -> preflight -> lock -> fetch (verified in stream) -> commit by rename -> record.

One process downloads a variant while the others wait on its lock and then find it done; each file is
fetched under a lock of its own digest, so two variants that share a file (a VAE, a text encoder) fetch
it once. A warm ensure (everything present) takes no lock and reads no file contents: it compares the
store's record with the manifest and stats the files.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

from wanstudio.config import Settings
from wanstudio.errors import (
    Attempt,
    AuthFailError,
    ChecksumFailError,
    InvalidParamsError,
    ModelNotFoundError,
    NoSpaceError,
    OperationInterruptedError,
    RateLimitError,
    SourceUnavailableError,
    WanError,
)
from wanstudio.observability import ContextThreadPoolExecutor, correlation
from wanstudio.orchestrator._fsutil import require_inside, resolves_outside
from wanstudio.orchestrator._locks import hold_lock
from wanstudio.orchestrator._warm import WarmEntry
from wanstudio.orchestrator.manifest import Manifest, ManifestFile, Model, Variant, load_configured_manifest, load_manifest
from wanstudio.orchestrator.sources.base import FileRequest, Source
from wanstudio.orchestrator.status import VariantStatus, expected_files, variant_status, wanted_files
from wanstudio.orchestrator.store import Store, VariantRecord, committed_files, sha256_of

if TYPE_CHECKING:  # the warm path (everything present) needs none of them: they load when first used
    from wanstudio.orchestrator.gc import GcReport
    from wanstudio.orchestrator.sources.hf import HubSource
    from wanstudio.orchestrator.transfer import TransferEngine

log = logging.getLogger("wanstudio.orchestrator")

# When every source failed, the most telling failure names the error: a source that had the file but
# refused us or served bad bytes says more than the sources that simply did not have it.
_FAILURE_PRIORITY = (AuthFailError, RateLimitError, ChecksumFailError)


@dataclass(frozen=True)
class DownloadProgress:
    """Progress of one ensure, reported after each chunk and each finished file."""

    model: str
    variant: str
    file: str | None
    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int


ProgressListener = Callable[[DownloadProgress], None]


@dataclass(frozen=True)
class EnsureResult:
    """A variant that is ready on disk (CONTRACT `wan.models.ensure/1`)."""

    id: str
    variant: str
    path: Path
    bytes_downloaded: int = 0
    sources: Mapping[str, int] = field(default_factory=dict)
    warm: bool = False
    state: str = "complete"

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "variant": self.variant,
            "path": str(self.path),
            "state": self.state,
            "bytes_downloaded": self.bytes_downloaded,
            "sources": dict(self.sources),
        }


@dataclass(frozen=True)
class WanPaths:
    """The folders of one ready variant: the root that diffusers loads, and each component's subfolder."""

    root: Path
    components: Mapping[str, Path]

    def __getitem__(self, component: str) -> Path:
        return self.components[component]


class Orchestrator:
    """Models on disk: resolve ids through the manifest, ensure variants, and report their state."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        manifest: Manifest | None = None,
        sources: list[Source] | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self._manifest = manifest
        self._sources = sources
        self._store: Store | None = None
        self._transfer: TransferEngine | None = None
        self._transfer_lock = threading.Lock()
        self._warm_results: dict[tuple[str, str, frozenset[str]], WarmEntry] = {}

    @property
    def manifest(self) -> Manifest:
        """The manifest given, or the configured one (re-read when its file changes), or the packaged one."""
        if self._manifest is not None:
            return self._manifest
        if self.settings.manifest_path is not None:
            return load_configured_manifest(self.settings)  # verifies its signature when one is required
        self._manifest = load_manifest()  # files inside the installed package do not change under us
        return self._manifest

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.settings.require_models_root())
        return self._store

    @property
    def sources(self) -> list[Source]:
        if self._sources is None:
            from wanstudio.orchestrator.sources.registry import build_sources

            self._sources = build_sources(self.settings)
        return self._sources

    @property
    def transfer(self) -> TransferEngine:
        with self._transfer_lock:
            if self._transfer is None:
                from wanstudio.orchestrator.transfer import TransferEngine

                self._transfer = TransferEngine(self.settings)
            return self._transfer

    def hub_source(self) -> "HubSource | None":
        from wanstudio.orchestrator.sources.hf import HubSource

        return next((s for s in self.sources if isinstance(s, HubSource)), None)

    def list_from_hub(self, model: Model, variant: Variant) -> Variant:
        """A Hub-listed variant with the files the Hub lists now, or SOURCE_UNAVAILABLE saying how to get them."""
        hub = self.hub_source()
        if hub is None:
            raise SourceUnavailableError(
                f"variant {variant.name} of {model.id} takes its file list from the Hugging Face Hub, "
                "and WAN_SOURCES does not include hf",
                suggestions=[
                    "add hf to WAN_SOURCES",
                    "or record the list in the manifest once with `wan models lock` where the Hub is reachable",
                    f"or use a variant whose files the manifest lists, e.g. --variant {_listed_variant(model)}",
                ],
            )
        return hub.list_variant(model, variant)

    def resolve(self, model_id: str, variant: str | None = None) -> tuple[Model, Variant]:
        model = self.manifest.resolve(model_id)
        return model, model.variant(variant)

    # -- status -------------------------------------------------------------------------------------------------

    def status(self, model_id: str, variant: str | None = None, *, deep: bool = False) -> VariantStatus:
        model, chosen = self.resolve(model_id, variant)
        return variant_status(self.store, model, chosen, deep=deep)

    def statuses(self, model_ids: Iterable[str] = (), variant: str | None = None, *, deep: bool = False) -> list[VariantStatus]:
        """Status of each model (all when none named): the given or default variant, plus every variant on disk."""
        models = [self.manifest.resolve(m) for m in model_ids] or list(self.manifest.models.values())
        results = []
        for model in models:
            names = [variant] if variant else [model.default_variant]
            if not variant:
                names += [v for v in self.store.committed_variants(model) if v in model.variants and v not in names]
            results += [variant_status(self.store, model, model.variant(name), deep=deep) for name in names]
        return results

    # -- ensure -------------------------------------------------------------------------------------------------

    def ensure(
        self,
        model_id: str,
        variant: str | None = None,
        *,
        without: Iterable[str] = (),
        force: bool = False,
        progress: ProgressListener | None = None,
    ) -> EnsureResult:
        """Make the variant complete on disk and return where it is; with `force`, re-verify every byte.

        Everything it logs, from every thread, carries one correlation id (the caller's, or a new one).
        """
        with correlation():
            return self._ensure(model_id, variant, without=without, force=force, progress=progress)

    def _ensure(
        self, model_id: str, variant: str | None, *, without: Iterable[str], force: bool, progress: ProgressListener | None
    ) -> EnsureResult:
        manifest = self.manifest
        model = manifest.resolve(model_id)
        chosen = model.variant(variant)
        excluded = self._excluded_components(model, chosen, without)
        store = self.store
        if not force:
            cached = self._warm_results.get((model.id, chosen.name, excluded))
            if cached is not None and cached.still_valid(manifest):
                return cached.result
            if warm := self._warm(model, chosen, excluded):
                entry = WarmEntry.capture(manifest, warm, store, model)
                self._warm_results[(model.id, chosen.name, excluded)] = entry
                return warm
        layout = store.layout
        for own in (layout.locks, layout.blobs, layout.partial, layout.tmp, layout.meta / "state"):
            require_inside(own, layout.root, what="the store's own folders")
        with hold_lock(
            store.layout.variant_lock(model.family, model.id, chosen.name),
            timeout=self.settings.lock_timeout,
            what=f"{model.id} [{chosen.name}]",
        ):
            if not force and (warm := self._warm(model, chosen, excluded)):
                return EnsureResult(id=warm.id, variant=warm.variant, path=warm.path)  # another process did it
            store.sweep_tmp()
            listed = chosen if chosen.lists_files else self.list_from_hub(model, chosen)
            return _EnsureRun(self, model, listed, excluded, force, progress).run()

    def get_wan_paths(self, model_id: str, variant: str | None = None) -> WanPaths:
        """Ensure the variant, then return its folder and the folder of each component."""
        result = self.ensure(model_id, variant)
        model, chosen = self.resolve(model_id, variant)
        components = {c: result.path / c for c in chosen.components if (result.path / c).is_dir()}
        return WanPaths(root=result.path, components=components)

    # -- disk: gc and pins (docs/disk.md) ------------------------------------------------------------------

    def gc(self, *, dry_run: bool = False, max_bytes: int | None = None, ttl: float | None = None,
           variant: str | None = None) -> "GcReport":
        """Plan what to remove (LRU past `ttl`, then down to the family quotas and `max_bytes`, by default
        WAN_QUOTA_BYTES) and, unless `dry_run`, remove it; pinned variants always stay."""
        from wanstudio.orchestrator.gc import execute_gc, plan_gc

        plan = plan_gc(
            self.store, self.manifest if variant else None, ttl=ttl, variant=variant,
            max_bytes=self.settings.quota_bytes if max_bytes is None else max_bytes,
            family_quotas=self.settings.family_quotas,
        )
        self._warm_results.clear()
        return plan.report() if dry_run else execute_gc(self.store, plan)

    def pin(self, model_id: str, variant: str | None = None, *, pinned: bool = True) -> VariantStatus:
        """Pin the variant (gc never removes it; it may be pinned before it is downloaded), or unpin it."""
        model, chosen = self.resolve(model_id, variant)
        self.store.set_pinned(model, chosen.name, pinned)
        return variant_status(self.store, model, chosen)

    def _excluded_components(self, model: Model, variant: Variant, without: Iterable[str]) -> frozenset[str]:
        excluded = frozenset(without)
        for component in sorted(excluded):
            if variant.lists_files and component not in variant.components:
                raise ModelNotFoundError(
                    f"model {model.id} [{variant.name}] has no component {component!r}; "
                    f"its components are {', '.join(variant.components)}",
                    param="without",
                )
            if component not in model.optional_components:
                raise InvalidParamsError(
                    f"component {component!r} of {model.id} is required and cannot be left out; "
                    f"optional components: {', '.join(model.optional_components) or 'none'}",
                    param="without",
                )
        return excluded

    def _warm(self, model: Model, variant: Variant, excluded: frozenset[str]) -> EnsureResult | None:
        """The result of an ensure with nothing to do, or None: the record must match the manifest and disk."""
        record = self.store.record(model, variant.name)
        if record is None or not set(record.excluded_components) <= excluded:
            return None
        committed = {f.path: f for f in record.files}
        wanted = expected_files(self.store, model, variant, record)
        if variant.lists_files:
            for file in wanted:
                have = committed.get(file.path)
                if have is None:
                    if file.optional:
                        continue
                    return None
                if have.size != file.size or (file.sha256 is not None and have.sha256 != file.sha256):
                    return None
        status = variant_status(self.store, model, variant, record=record, wanted=wanted)
        if not status.complete:
            return None
        self.store.mark_used(model, variant.name)
        return EnsureResult(id=model.id, variant=variant.name, path=status.path, warm=True)


def _listed_variant(model: Model) -> str:
    return next((name for name, v in model.variants.items() if v.lists_files), model.default_variant)


class _EnsureRun:
    """One cold ensure of one variant, run while holding the variant's lock."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        model: Model,
        variant: Variant,
        excluded: frozenset[str],
        force: bool,
        progress: ProgressListener | None,
    ) -> None:
        self.settings = orchestrator.settings
        self.store = orchestrator.store
        self.sources = orchestrator.sources
        self.transfer = orchestrator.transfer
        self.model, self.variant, self.excluded, self.force = model, variant, excluded, force
        self.progress = progress
        self.cancel = threading.Event()
        self._progress_lock = threading.Lock()
        self.bytes_done = 0
        self.bytes_total = 0
        self.files_done = 0
        self.files_total = 0
        self.downloaded_from: dict[str, int] = {}
        self.bytes_downloaded = 0
        self.digests: dict[str, str] = {}  # sha256 of fetched files whose manifest entry had none (Hub listings)

    def run(self) -> EnsureResult:
        candidates = [f for f in self.variant.files if f.component not in self.excluded]
        indexes = [f for f in candidates if f.is_shard_index]
        self._fetch_all(indexes)  # shard indexes first: they decide which shards are needed
        variant = replace(self.variant, files=tuple(map(self._with_digest, self.variant.files)))
        needed = wanted_files(self.store, self.model, variant, self.excluded)  # reads the indexes just fetched
        for last_try in (False, True):
            self._fetch_all([f for f in map(self._with_digest, needed) if last_try or not f.is_shard_index])
            needed = list(map(self._with_digest, needed))
            present = [f for f in needed if f.sha256 and self.store.has_blob(f.sha256, f.size)]
            record = VariantRecord(
                model_id=self.model.id,
                family=self.model.family,
                variant=self.variant.name,
                files=committed_files((f.path, f.size, f.sha256) for f in present if f.sha256),
                excluded_components=tuple(sorted(self.excluded)),
                sources=self.downloaded_from,
                committed_at=time.time(),
            )
            try:  # a concurrent gc may remove a stored blob before it is linked: fetch it again, once
                have = {f.path for f in present}
                if not last_try and any(not f.optional and f.path not in have for f in needed):
                    raise FileNotFoundError("a stored file went away")
                path = self.store.commit_variant(self.model, self.variant, record)
                break
            except FileNotFoundError:
                if last_try:
                    raise
                log.warning("a stored file of %s [%s] was removed meanwhile (gc?); fetching it again",
                            self.model.id, self.variant.name)
        log.info("committed %s [%s] at %s", self.model.id, self.variant.name, path)
        return EnsureResult(
            id=self.model.id,
            variant=self.variant.name,
            path=path,
            bytes_downloaded=self.bytes_downloaded,
            sources=dict(self.downloaded_from),
        )

    def _with_digest(self, file: ManifestFile) -> ManifestFile:
        """The file with the sha256 computed when it was fetched (the Hub lists none for small files)."""
        return file if file.sha256 else replace(file, sha256=self.digests.get(file.path))

    def _fetch_all(self, files: list[ManifestFile]) -> None:
        if self.force:
            for file in files:
                if file.sha256 and self.store.blob_size(file.sha256) is not None:
                    blob = self.store.layout.blob(file.sha256)
                    if resolves_outside(blob, self.store.layout.root) or sha256_of(blob) != file.sha256:
                        log.warning("discarding damaged copy of %s in the store", file.path)
                        self.store.discard_blob(file.sha256)
        todo = [f for f in files if not (f.sha256 and self.store.has_blob(f.sha256, f.size))]
        if not todo:
            return
        self._preflight(todo)
        self.files_total += len(todo)
        self.bytes_total += sum(f.size for f in todo)
        failures: list[WanError] = []
        workers = min(self.settings.max_concurrent_downloads, len(todo))
        with ContextThreadPoolExecutor(max_workers=workers, thread_name_prefix="wan-fetch") as pool:
            futures: list[Future[None]] = [pool.submit(self._fetch_one, f) for f in todo]
            try:
                wait(futures)
            except KeyboardInterrupt:
                self.cancel.set()
                wait(futures)
                raise OperationInterruptedError(
                    f"interrupted while ensuring {self.model.id} [{self.variant.name}]; "
                    "files already verified are kept",
                    suggestions=["run the same command again to finish"],
                ) from None
        for future in futures:
            error = future.exception()
            if isinstance(error, WanError):
                failures.append(error)
            elif error is not None:
                raise error
        if failures:
            raise _combine_failures(self.model, self.variant, failures)

    def _preflight(self, files: list[ManifestFile]) -> None:
        """QUOTA_EXCEEDED or NO_SPACE before a byte moves (what a resumed download holds counts as there)."""
        from wanstudio.orchestrator.usage import check_room

        linked = (f.sha256 for f in self.variant.files if f.sha256 and f.component not in self.excluded)
        check_room(self.store.layout, self.settings, self.model, self.variant.name, files, linked)

    def _fetch_one(self, file: ManifestFile) -> None:
        from wanstudio.orchestrator.transfer import Expected

        request = FileRequest(self.model, self.variant, file)
        with hold_lock(
            self.store.layout.blob_lock(file.key), timeout=self.settings.lock_timeout, what=f"file {request.label}"
        ):
            if file.sha256 and self.store.has_blob(file.sha256, file.size):  # fetched meanwhile for another variant
                self._advance(file.size, file_done=file.path)
                return
            attempts: list[Attempt] = []
            errors: list[WanError] = []
            for source in self.sources:
                if self.cancel.is_set():
                    raise OperationInterruptedError(f"interrupted before fetching {request.label}")
                try:
                    located = source.locate(request)
                    fetched = self.transfer.fetch(
                        located,
                        self.store.layout.partial_file(file.key),
                        Expected(file.size, file.sha256, file.git_blob_id, request.label,
                                 source.name, file.path),
                        progress=self._on_bytes,
                        cancelled=self.cancel.is_set,
                    )
                except (OperationInterruptedError, NoSpaceError):
                    raise  # not the source's fault: the next source would fail the same way
                except WanError as error:
                    attempts += error.attempts or [Attempt(source.name, file.path, error.code, error.message)]
                    errors.append(error)
                    level = logging.INFO if isinstance(error, SourceUnavailableError) else logging.WARNING
                    log.log(level, "%s: source %s failed with %s: %s", request.label, source.name, error.code, error.message)
                    continue
                self.store.add_blob(fetched.path, fetched.sha256, read_only=not fetched.shared)
                with self._progress_lock:
                    self.digests[file.path] = fetched.sha256
                    self.downloaded_from[source.name] = self.downloaded_from.get(source.name, 0) + 1
                    self.bytes_downloaded += file.size
                self._advance(0, file_done=file.path)
                return
            if file.optional:
                log.warning("optional file %s is on no source; going on without it", request.label)
                return
            telling = next((e for c in _FAILURE_PRIORITY for e in errors if isinstance(e, c)), None)
            cls = type(telling) if telling else SourceUnavailableError
            reason = f": {telling.message}" if telling else f" (sources tried: {', '.join(a.source for a in attempts)})"
            raise cls(
                f"no source could provide {request.label}{reason}",
                attempts=attempts,
                suggestions=telling.suggestions if telling else (),
            )

    def _on_bytes(self, count: int) -> None:
        self._advance(count)

    def _advance(self, count: int, file_done: str | None = None) -> None:
        with self._progress_lock:
            self.bytes_done += count
            if file_done is not None:
                self.files_done += 1
            event = DownloadProgress(
                self.model.id, self.variant.name, file_done, self.bytes_done, self.bytes_total, self.files_done, self.files_total
            )
        if self.progress:
            self.progress(event)


def _combine_failures(model: Model, variant: Variant, failures: list[WanError]) -> WanError:
    """One error for every file that failed, with all their attempts and the most telling code."""
    if len(failures) == 1:
        failure = failures[0]
    else:
        telling = next((e for c in _FAILURE_PRIORITY for e in failures if isinstance(e, c)), failures[0])
        failure = type(telling)(
            f"{len(failures)} files of {model.id} [{variant.name}] could not be fetched; {telling.message}",
            attempts=[a for f in failures for a in f.attempts],
            suggestions=telling.suggestions,
        )
    tried = sorted({a.source for a in failure.attempts})
    failure.suggestions = failure.suggestions or [
        f"sources tried: {', '.join(tried) or 'none'}; set WAN_LOCAL_MIRROR, WAN_S3_URL or WAN_SOURCES to add one",
        f"run `wan models status {model.id} --variant {variant.name}` to see what is missing",
    ]
    return failure
