"""Health checks: can this machine ensure models now? Each check is `{name, ok, detail}`; none writes anything.

Checks, in order:

- `models_root`: MODELS_ROOT is set.
- `models_root_writable`: MODELS_ROOT (or, before the first ensure, the folder that would hold it) is a
  folder this process may write, on a filesystem mounted read-write. Chosen over writing and removing a
  probe file, which would be a side effect on disk: `os.access` for the permissions plus the statvfs
  read-only flag. Limit: a process running as root passes `os.access` whatever the permission bits (the
  kernel would let it write), so only a read-only mount or a missing folder fails it there.
- `free_space`: at least `MIN_FREE_BYTES` free on that filesystem (below that no real model fits).
- `manifest`: the manifest loads and validates (signature included when one is required).
- with sources, one `source:<name>` per entry of WAN_SOURCES, asked with a short timeout: `local` (the
  mirror folder exists and is readable), `s3` (a HEAD of the bucket), `hf` (a GET of the model info of the
  first Hub repository in the manifest). A source that is not configured is reported ok and "skipped", as
  ensure skips it.

Sits above the orchestrator (it checks it), like the CLI and the server: `wan models health` and a future
`/readyz` share it. Orchestrator modules are imported inside the checks, so importing this is cheap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from wanstudio._secrets import display_url, mask
from wanstudio._units import format_bytes

if TYPE_CHECKING:
    from wanstudio.config import Settings
    from wanstudio.orchestrator.manifest import Manifest
    from wanstudio.orchestrator.orchestrator import Orchestrator

MIN_FREE_BYTES = 2**30
TIMEOUT_SECONDS = 5.0
"""Connect and read timeout of each source check: long enough for a distant endpoint, short for a dead one."""


@dataclass(frozen=True)
class Check:
    """The outcome of one check; `data` holds extra machine-readable fields (e.g. free_bytes)."""

    name: str
    ok: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": mask(self.detail), **self.data}


def run_checks(settings: "Settings", *, sources: bool = False) -> list[Check]:
    """Every check for these settings (the sources' too with `sources`); a check that crashes fails alone."""
    from wanstudio.orchestrator.orchestrator import Orchestrator

    orchestrator = Orchestrator(settings)
    checks: list[Check] = []
    root = settings.models_root
    if root is None:
        checks.append(Check("models_root", False, "MODELS_ROOT is not set: export MODELS_ROOT=/path/with/room"))
    else:
        checks.append(Check("models_root", True, str(root)))
        checks.append(_guarded("models_root_writable", _writable, root))
        checks.append(_guarded("free_space", _free_space, root))
    manifest_check = _guarded("manifest", _manifest, orchestrator)
    checks.append(manifest_check)
    if sources:
        manifest = orchestrator.manifest if manifest_check.ok else None
        for name in settings.sources:
            checks.append(_guarded(f"source:{name}", _SOURCE_CHECKS[name], settings, manifest))
    return checks


def _guarded(name: str, check: Callable[..., Check], *args: Any) -> Check:
    """`check(*args)`, or a failed check named `name` when it raises: one broken check does not hide the others."""
    from wanstudio.errors import WanError

    try:
        return check(*args)
    except WanError as error:
        return Check(name, False, f"{error.code}: {error.message}")
    except Exception as error:  # a health report names a broken check instead of crashing on it
        return Check(name, False, f"the check failed: {type(error).__name__}: {error}")


# -- the store ------------------------------------------------------------------------------------------------


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _writable(root: Path) -> Check:
    name = "models_root_writable"
    existing = _existing_ancestor(root)
    if not existing.is_dir():
        return Check(name, False, f"{existing} is not a folder, so {root} cannot be created")
    folders = [existing]
    if existing == root:  # the store's own folders, where they exist, must be writable too
        meta = root / ".wan"
        folders += [p for p in (meta, *(meta / sub for sub in ("blobs", "partial", "tmp", "locks", "state"))) if p.is_dir()]
    refused = [str(p) for p in folders if not os.access(p, os.W_OK | os.X_OK)]
    if refused:
        return Check(name, False, f"this process may not write in {', '.join(refused)}")
    if hasattr(os, "statvfs") and os.statvfs(existing).f_flag & os.ST_RDONLY:
        return Check(name, False, f"{existing} is on a filesystem mounted read-only")
    if existing != root:
        return Check(name, True, f"{root} does not exist yet; ensure will create it in {existing}, which is writable")
    return Check(name, True, f"{root} is writable")


def _free_space(root: Path) -> Check:
    import shutil

    usage = shutil.disk_usage(_existing_ancestor(root))
    free = usage.free
    data = {"free_bytes": free, "total_bytes": usage.total}
    detail = f"{format_bytes(free)} free of {format_bytes(usage.total)}"
    if free < MIN_FREE_BYTES:
        return Check("free_space", False, f"only {detail}; free space with `wan models gc` or move MODELS_ROOT", data)
    return Check("free_space", True, detail, data)


def _manifest(orchestrator: "Orchestrator") -> Check:
    manifest = orchestrator.manifest  # a bad one raises MANIFEST_INVALID / SIGNATURE_INVALID / PATH_INVALID
    count = len(manifest.models)
    return Check("manifest", True, f"{count} model{'' if count == 1 else 's'} from {manifest.origin}")


# -- sources --------------------------------------------------------------------------------------------------


def _local(settings: "Settings", manifest: "Manifest | None") -> Check:
    name, mirror = "source:local", settings.local_mirror
    if mirror is None:
        return Check(name, True, "skipped: WAN_LOCAL_MIRROR is not set")
    if not mirror.is_dir():
        return Check(name, False, f"the mirror {mirror} is not a folder (WAN_LOCAL_MIRROR)")
    if not os.access(mirror, os.R_OK | os.X_OK):
        return Check(name, False, f"this process may not read the mirror {mirror}")
    return Check(name, True, f"{mirror} is readable")


def _s3(settings: "Settings", manifest: "Manifest | None") -> Check:
    name = "source:s3"
    if not settings.s3_url:
        return Check(name, True, "skipped: WAN_S3_URL is not set")
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    from wanstudio.orchestrator.sources.s3 import parse_s3_url, s3_client

    bucket, _ = parse_s3_url(settings.s3_url)
    client = s3_client(Config(
        connect_timeout=TIMEOUT_SECONDS, read_timeout=TIMEOUT_SECONDS, retries={"total_max_attempts": 1}))
    where = f"s3://{bucket} at {client.meta.endpoint_url}"
    try:
        client.head_bucket(Bucket=bucket)
    except NoCredentialsError:
        return Check(name, False, f"no AWS credentials to reach {where}")
    except ClientError as error:
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 404:
            return Check(name, False, f"{where} answered: no such bucket")
        if status in (401, 403):
            return Check(name, False, f"{where} refused the credentials (HTTP {status}); "
                                      "credentials that may read objects but not the bucket also get this")
        return Check(name, False, f"{where} answered HTTP {status}")
    except BotoCoreError as error:
        return Check(name, False, f"cannot reach {where}: {error}")
    return Check(name, True, f"{where} is reachable")


def _hf(settings: "Settings", manifest: "Manifest | None") -> Check:
    from urllib.parse import quote

    import urllib3

    from wanstudio.orchestrator.sources.hf import HubSource

    name, endpoint = "source:hf", settings.hf_endpoint
    repo = _first_repo(manifest)
    url = f"{endpoint}/api/models/{quote(repo)}" if repo else f"{endpoint}/"
    token = HubSource(endpoint, settings.hf_token, settings.hf_cache_dir).token
    headers = {"Authorization": f"Bearer {token}"} if token and repo else {}
    try:
        response = urllib3.request("GET", url, headers=headers, retries=False, redirect=False,
                                   timeout=urllib3.Timeout(connect=TIMEOUT_SECONDS, read=TIMEOUT_SECONDS))
    except urllib3.exceptions.HTTPError as error:
        return Check(name, False, f"cannot reach the Hub at {display_url(endpoint)}: {type(error).__name__}")
    status, shown = response.status, display_url(url)
    if repo is None:
        return Check(name, status < 500,
                     f"{display_url(endpoint)} answered HTTP {status} (no Hub repository in the manifest to ask about)")
    if status == 200:
        return Check(name, True, f"{shown} answered HTTP 200")
    if status in (401, 403):
        who = "the configured token" if token else "anonymous access"
        return Check(name, False, f"{shown} refused {who} (HTTP {status}): set or replace the Hub token")
    if status == 404:
        return Check(name, False,
                     f"{shown} answered HTTP 404: no such repository, or it is private and the token cannot see it")
    return Check(name, False, f"{shown} answered HTTP {status}")


def _first_repo(manifest: "Manifest | None") -> str | None:
    for model in (manifest.models.values() if manifest else ()):
        refs = [model.hf, *(v.hf for v in model.variants.values())]
        if ref := next((r for r in refs if r is not None), None):
            return ref.repo
    return None


_SOURCE_CHECKS: dict[str, Callable[["Settings", "Manifest | None"], Check]] = {"local": _local, "s3": _s3, "hf": _hf}
