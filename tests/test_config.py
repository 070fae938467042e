"""Settings from the environment (CONTRACT section 2) and the human sizes and durations it accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from wanstudio._units import format_bytes, parse_duration, parse_size
from wanstudio.config import DEFAULT_LOCK_TIMEOUT_SECONDS, DEFAULT_MAX_CONCURRENT_DOWNLOADS, Settings
from wanstudio.errors import InvalidParamsError, ModelsRootUnsetError

GiB = 1024**3


def test_defaults_from_an_empty_environment() -> None:
    settings = Settings.from_env({})
    assert settings.models_root is None
    assert settings.manifest_path is None
    assert settings.sources == ("local", "s3", "hf")
    assert settings.local_mirror is None and settings.s3_url is None
    assert settings.max_concurrent_downloads == DEFAULT_MAX_CONCURRENT_DOWNLOADS >= 1
    assert settings.lock_timeout == DEFAULT_LOCK_TIMEOUT_SECONDS > 0
    assert settings.quota_bytes is None and dict(settings.family_quotas) == {}
    assert settings.log_format is None  # each program picks its own: text for the CLI, json for serve
    assert settings.require_signed_manifest is False
    assert Settings() == settings


def test_from_env_reads_the_process_environment(models_root: Path) -> None:
    assert Settings.from_env().models_root == models_root


def test_paths_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env(
        {"MODELS_ROOT": "store", "WAN_MODELS_MANIFEST": "m.toml", "WAN_LOCAL_MIRROR": " mirror "}
    )
    assert settings.models_root == tmp_path / "store"
    assert settings.manifest_path == tmp_path / "m.toml"
    assert settings.local_mirror == tmp_path / "mirror"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Settings.from_env({"MODELS_ROOT": "~/models"}).models_root == tmp_path / "home" / "models"


def test_models_root_is_required(tmp_path: Path) -> None:
    assert Settings.from_env({"MODELS_ROOT": str(tmp_path)}).require_models_root() == tmp_path


@pytest.mark.parametrize(
    "environ", [{}, {"MODELS_ROOT": ""}, {"MODELS_ROOT": "   "}], ids=["unset", "empty", "blank"]
)
def test_unset_models_root_is_an_error_showing_how_to_set_it(environ: dict[str, str]) -> None:
    settings = Settings.from_env(environ)
    with pytest.raises(ModelsRootUnsetError) as caught:
        settings.require_models_root()
    error = caught.value
    assert error.code == "MODELS_ROOT_UNSET" and error.exit_code == 10
    assert "MODELS_ROOT" in error.message
    assert any("export MODELS_ROOT=" in s for s in error.suggestions)


@pytest.mark.parametrize(
    "value, sources",
    [
        ("local", ("local",)),
        ("hf,local", ("hf", "local")),
        (" s3 , hf ", ("s3", "hf")),
        ("local,,hf", ("local", "hf")),
    ],
)
def test_wan_sources_sets_the_priority(value: str, sources: tuple[str, ...]) -> None:
    assert Settings.from_env({"WAN_SOURCES": value}).sources == sources


@pytest.mark.parametrize("value", ["ftp", "local,gcs", "HF", "local;hf"])
def test_bad_wan_sources_names_the_variable_and_the_valid_sources(value: str) -> None:
    with pytest.raises(InvalidParamsError) as caught:
        Settings.from_env({"WAN_SOURCES": value})
    error = caught.value
    assert error.code == "INVALID_PARAMS" and error.exit_code == 30
    assert error.param == "WAN_SOURCES"
    assert "WAN_SOURCES" in error.message
    for source in ("local", "s3", "hf"):
        assert source in error.message


@pytest.mark.parametrize("value", ["", " ", ","])
def test_empty_wan_sources_is_not_silently_no_sources(value: str) -> None:
    try:
        sources = Settings.from_env({"WAN_SOURCES": value}).sources
    except InvalidParamsError:
        return
    assert sources == ("local", "s3", "hf")


@pytest.mark.parametrize(
    "value, seconds", [("90s", 90), ("2h", 7200), ("30", 30), ("15m", 900), ("1d", 86400), ("1.5h", 5400)]
)
def test_lock_timeout_accepts_durations(value: str, seconds: float) -> None:
    assert Settings.from_env({"WAN_LOCK_TIMEOUT": value}).lock_timeout == seconds


@pytest.mark.parametrize(
    "value, size", [("500G", 500 * GiB), ("2T", 2 * 1024**4), ("1024", 1024), ("500M", 500 * 1024**2)]
)
def test_quota_bytes_accepts_sizes(value: str, size: int) -> None:
    assert Settings.from_env({"WAN_QUOTA_BYTES": value}).quota_bytes == size


def test_family_quotas() -> None:
    settings = Settings.from_env({"WAN_FAMILY_QUOTAS": "wan22=400G,other=50G"})
    assert dict(settings.family_quotas) == {"wan22": 400 * GiB, "other": 50 * GiB}
    assert dict(Settings.from_env({"WAN_FAMILY_QUOTAS": " wan22 = 1T , "}).family_quotas) == {"wan22": 1024**4}


def test_max_concurrent_downloads() -> None:
    assert Settings.from_env({"WAN_MAX_CONCURRENT_DOWNLOADS": "3"}).max_concurrent_downloads == 3


@pytest.mark.parametrize(
    "name, value",
    [
        ("WAN_LOCK_TIMEOUT", "soon"),
        ("WAN_LOCK_TIMEOUT", "-5"),
        ("WAN_LOCK_TIMEOUT", "10y"),
        ("WAN_QUOTA_BYTES", "lots"),
        ("WAN_QUOTA_BYTES", "500X"),
        ("WAN_QUOTA_BYTES", "-1G"),
        ("WAN_FAMILY_QUOTAS", "wan22"),
        ("WAN_FAMILY_QUOTAS", "=5G"),
        ("WAN_FAMILY_QUOTAS", "wan22=big"),
        ("WAN_MAX_CONCURRENT_DOWNLOADS", "0"),
        ("WAN_MAX_CONCURRENT_DOWNLOADS", "many"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(InvalidParamsError) as caught:
        Settings.from_env({name: value})
    assert caught.value.param == name
    assert caught.value.message.startswith(f"{name}=")
    assert repr(value) in caught.value.message


def test_log_settings_and_signing() -> None:
    settings = Settings.from_env(
        {"WAN_LOG_LEVEL": "debug", "WAN_LOG_FORMAT": "JSON", "WAN_REQUIRE_SIGNED_MANIFEST": "1"}
    )
    assert (settings.log_level, settings.log_format) == ("DEBUG", "json")
    assert settings.require_signed_manifest is True
    assert Settings.from_env({"WAN_REQUIRE_SIGNED_MANIFEST": "0"}).require_signed_manifest is False


# -- units ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, size",
    [("0", 0), ("512", 512), ("1K", 1024), ("20G", 20 * GiB), ("2T", 2 * 1024**4), ("500MB", 500 * 1024**2),
     ("1GiB", GiB), ("1.5G", 3 * GiB // 2), (" 7 g ", 7 * GiB), ("10B", 10)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text, seconds", [("0", 0), ("90s", 90), ("15m", 900), ("12h", 43200), ("30d", 2592000), ("1w", 604800)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "G", "1.2.3", "1X", "-1", "1 G G", "one"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize("text", ["", "s", "5y", "-5s", "soon"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_bytes() -> None:
    assert format_bytes(0) == "0 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * GiB) == "3.0 GiB"
    assert format_bytes(5 * 1024**5) == "5120.0 TiB"


# -- through the CLI -----------------------------------------------------------------------------------------


def test_cli_ensure_without_models_root_exits_10_json(wan, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELS_ROOT")
    result = wan("models", "ensure", "--only", "ti2v-5B", "--variant", "dev", "--json")
    assert result.returncode == 10, result.stderr
    document = result.json
    assert document["schema"] == "wan.models.ensure/1"
    assert document["error"]["code"] == "MODELS_ROOT_UNSET"
    assert "MODELS_ROOT" in document["error"]["message"]
    assert any("export MODELS_ROOT=" in s for s in document["error"]["suggestions"])


def test_cli_ensure_without_models_root_human(wan, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELS_ROOT")
    result = wan("models", "ensure", "--only", "ti2v-5B", "--variant", "dev")
    assert result.returncode == 10
    assert "MODELS_ROOT_UNSET" in result.stderr
    assert "export MODELS_ROOT=" in result.stderr
    assert "MODELS_ROOT_UNSET" not in result.stdout


def test_cli_bad_setting_exits_30_naming_the_variable(wan) -> None:
    result = wan("models", "list", "--json", env={"WAN_SOURCES": "ftp"})
    assert result.returncode == 30, result.stderr
    error = result.json["error"]
    assert result.json["schema"] == "wan.models.list/1"
    assert error["code"] == "INVALID_PARAMS" and "WAN_SOURCES" in error["message"]
