"""Shared fixtures: every test gets its own MODELS_ROOT and a clean wanstudio environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from wanstudio.config import ENVIRONMENT_VARIABLES as WAN_VARIABLES

pytest_plugins = ("wanserver",)  # the `wan_server` fixture: a real `wan serve` subprocess


UNREACHABLE_ENDPOINT = "http://127.0.0.1:9"
"""The discard port on loopback: nothing listens, so a test that falls through to the Hub fails at once."""

_MACHINE_CREDENTIALS = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION", "AWS_REGION", "PYTHON_KEYRING_BACKEND",
)


@pytest.fixture(autouse=True)
def models_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty store for each test; no setting, credential or cache of the machine leaks in.

    The Hub source points at a closed loopback port and an empty cache, and the keyring has no backend,
    so no test can reach the network or a real token by falling through the source list.
    """
    for name in (*WAN_VARIABLES, *_MACHINE_CREDENTIALS):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "models"
    monkeypatch.setenv("MODELS_ROOT", str(root))
    monkeypatch.setenv("HF_ENDPOINT", UNREACHABLE_ENDPOINT)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("WAN_DATA_DIR", str(tmp_path / "server-data"))  # wan serve: jobs and videos
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup off the machine
    return root


def isolated_env(folder: Path, **extra: str) -> dict[str, str]:
    """The environment for a process of its own (a `wan serve` shared by a module): the machine's, scrubbed
    as the `models_root` fixture does, with a fresh store, data folder and Hub cache under `folder`, and one
    CPU worker."""
    env = {name: value for name, value in os.environ.items() if name not in (*WAN_VARIABLES, *_MACHINE_CREDENTIALS)}
    env.update(MODELS_ROOT=str(folder / "models"), WAN_DATA_DIR=str(folder / "data"), WAN_DEVICE="cpu",
               HF_ENDPOINT=UNREACHABLE_ENDPOINT, HF_HUB_CACHE=str(folder / "hf-cache"),
               PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring", AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE=str(folder / "no-aws-config"),
               AWS_SHARED_CREDENTIALS_FILE=str(folder / "no-aws-credentials"))
    env.update(extra)
    return env


class CliResult:
    """A finished `wan` process: exit code, output, and the JSON document when --json was given."""

    def __init__(self, completed: subprocess.CompletedProcess[str]) -> None:
        self.returncode = completed.returncode
        self.stdout = completed.stdout
        self.stderr = completed.stderr

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.stdout)


def as_in_a_terminal() -> None:
    """`preexec_fn` for a child that must see Ctrl-C as a user's terminal sends it.

    A test runner started in the background of a non-interactive shell (as CI may be) inherits SIGINT
    ignored, and so would its children: restore the default so that Python turns SIGINT into Ctrl-C.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_wan(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> CliResult:
    """Run the real `wan` program in a subprocess with the current environment (plus `env`)."""
    completed = subprocess.run(
        [sys.executable, "-m", "wanstudio", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return CliResult(completed)


@pytest.fixture
def wan():
    """The `run_wan` helper, as a fixture."""
    return run_wan


def sha256_hex(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def write_model(
    mirror: Path,
    manifest: Path,
    files: dict[str, bytes],
    *,
    model_id: str = "toy@1.0.0",
    family: str = "test",
    variant: str = "base",
    components: dict[str, str] | None = None,
    optional_components: tuple[str, ...] = (),
    listed: dict[str, dict[str, Any]] | None = None,
    hf: dict[str, str] | None = None,
) -> None:
    """Put `files` into a local mirror and append a model listing them (sizes and digests) to `manifest`.

    `listed` overrides the manifest entry of a file (e.g. a wrong sha256) without changing the mirror;
    `hf` gives the model a Hub repository (`{"repo": ..., "revision": ...}`).
    """
    folder = mirror / family / model_id / variant
    entries = []
    for path, data in files.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        entry: dict[str, Any] = {"path": path, "size": len(data), "sha256": sha256_hex(data)}
        component = (components or {}).get(path) or (path.split("/")[0] if "/" in path else None)
        if component:
            entry["component"] = component
        entry.update((listed or {}).get(path, {}))
        entries.append(entry)
    text = "" if manifest.exists() else "schema_version = 1\n"
    text += f'\n[models."{model_id}"]\nfamily = "{family}"\ntask = "t2v"\ndefault_variant = "{variant}"\n'
    text += f"optional_components = {json.dumps(list(optional_components))}\n"
    if hf:
        text += f'\n[models."{model_id}".hf]\n' + "".join(f"{k} = {json.dumps(v)}\n" for k, v in hf.items())
    text += f'\n[models."{model_id}".variants.{variant}]\nfiles = [\n'
    for entry in entries:
        text += "  { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in entry.items()) + " },\n"
    text += "]\n"
    with open(manifest, "a", encoding="utf-8") as handle:
        handle.write(text)


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty local mirror and manifest, wired up through WAN_LOCAL_MIRROR and WAN_MODELS_MANIFEST."""
    root = tmp_path / "mirror"
    root.mkdir()
    monkeypatch.setenv("WAN_LOCAL_MIRROR", str(root))
    monkeypatch.setenv("WAN_MODELS_MANIFEST", str(tmp_path / "models.toml"))
    monkeypatch.setenv("WAN_SOURCES", "local")
    return root


@pytest.fixture
def manifest_path(tmp_path: Path) -> Path:
    return tmp_path / "models.toml"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real S3-compatible server (moto's server mode) on loopback, shared by the session's tests."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
