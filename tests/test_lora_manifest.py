"""LoRA overlays in the manifest: entries with `kind = "lora"`, ensured like models, applied by name.

The test manifest is the packaged one (its dev variants come from the bundled source) plus one LoRA entry,
`film-grain@1.0` for ti2v-5B, whose file a local mirror serves (WAN_LOCAL_MIRROR, laid out like MODELS_ROOT).
The LoRA file is made here with peft for the ti2v-5B dev transformer (tests/test_lora.py has the helpers), so
that a real job applies it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import run_wan, sha256_hex
from test_lora import Pipelines, lora_layers, save_diffusers_lora
from test_lora_generate import decoded
from wanstudio.config import Settings
from wanstudio.engine import Engine, GenerationRequest
from wanstudio.engine.hardware import HardwareInfo
from wanstudio.engine.info import model_info, recommend, what_fits
from wanstudio.engine.lora import (
    LoraRequest,
    find_lora,
    list_loras,
    lora_dir,
    lora_requests_from_json,
    parse_lora_arg,
)
from wanstudio.engine.registry import family_for
from wanstudio.errors import InvalidParamsError, ManifestInvalidError, ModelNotFoundError
from wanstudio.orchestrator.manifest import packaged_manifest_path, parse_manifest
from wanstudio.orchestrator.orchestrator import Orchestrator

LORA_ID = "film-grain@1.0"
LORA_FILE = "film_grain.safetensors"
SHA = "ab" * 32


def lora_entry(size: int, sha256: str, *, files: str | None = None, extra: str = "",
               base_models: str = '["ti2v-5B@2.2.0"]', model_id: str = LORA_ID) -> str:
    files = files if files is not None else f'[{{ path = "{LORA_FILE}", size = {size}, sha256 = "{sha256}" }}]'
    return (f'\n[models."{model_id}"]\nfamily = "wan22"\nkind = "lora"\nbase_models = {base_models}\n'
            f'default_variant = "main"\ndescription = "Film grain for the 5B model"\n{extra}'
            f'\n[models."{model_id}".variants.main]\nfiles = {files}\n')


@pytest.fixture(scope="module")
def lora_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A LoRA for the ti2v-5B dev transformer (random, non-zero lora_B): it changes the video."""
    pipelines = Pipelines(tmp_path_factory.mktemp("store"))
    layers, config = lora_layers(pipelines["ti2v-5B"].pipeline.transformer, seed=5)
    return save_diffusers_lora(tmp_path_factory.mktemp("lora") / LORA_FILE, layers, config).read_bytes()


@pytest.fixture
def lora_manifest(mirror: Path, tmp_path: Path, lora_bytes: bytes) -> Path:
    """The packaged manifest plus `film-grain@1.0`, its file in the local mirror (the `mirror` fixture sets
    WAN_MODELS_MANIFEST, WAN_LOCAL_MIRROR and WAN_SOURCES=local)."""
    target = mirror / "wan22" / LORA_ID / "main" / LORA_FILE
    target.parent.mkdir(parents=True)
    target.write_bytes(lora_bytes)
    manifest = tmp_path / "models.toml"
    manifest.write_text(packaged_manifest_path().read_text(encoding="utf-8")
                        + lora_entry(len(lora_bytes), sha256_hex(lora_bytes)), encoding="utf-8")
    return manifest


def committed(models_root: Path) -> Path:
    return models_root / "wan22" / LORA_ID / "main" / LORA_FILE


# -- the manifest ---------------------------------------------------------------------------------------------


BASE = packaged_manifest_path().read_text(encoding="utf-8")


def test_a_lora_entry_validates_and_is_marked_as_a_lora() -> None:
    manifest = parse_manifest(BASE + lora_entry(10, SHA) + lora_entry(10, SHA, model_id="any-size@0.1",
                                                                        base_models='["ti2v-5B", "t2v-A14B@2.2.0"]'))
    lora = manifest.resolve("film-grain")  # a bare name resolves like a model's
    assert lora.id == LORA_ID and lora.is_lora and lora.kind == "lora" and lora.task == ""
    assert lora.base_models == ("ti2v-5B@2.2.0",)
    assert [f.path for f in lora.variant().files] == [LORA_FILE]
    assert manifest.resolve("any-size").base_models == ("ti2v-5B", "t2v-A14B@2.2.0")  # bare names of models too
    assert manifest.resolve("ti2v-5B").kind == "model" and not manifest.resolve("ti2v-5B").is_lora


@pytest.mark.parametrize(
    ("entry", "fragments"),
    [
        (lora_entry(10, SHA, files="[]"), ["variants.main of a LoRA must list its one .safetensors file"]),
        (lora_entry(10, SHA, files=f'[{{ path = "a.safetensors", size = 1, sha256 = "{SHA}" }}, '
                                   f'{{ path = "b.safetensors", size = 1, sha256 = "{SHA}" }}]'),
         ["exactly one .safetensors file, not 2", "'a.safetensors', 'b.safetensors'"]),
        (lora_entry(10, SHA, files=f'[{{ path = "grain.bin", size = 1, sha256 = "{SHA}" }}]'),
         ["must be a .safetensors file, not 'grain.bin'"]),
        (lora_entry(10, SHA, base_models='["t2v-A99B@9.9"]'), ["base_models names 't2v-A99B@9.9'",
                                                              "is not in the manifest", "ti2v-5B@2.2.0"]),
        (lora_entry(10, SHA) + lora_entry(10, SHA, model_id="on-a-lora@1.0", base_models=f'["{LORA_ID}"]'),
         ["on-a-lora@1.0", f"base_models names '{LORA_ID}', which is a LoRA"]),
        (lora_entry(10, SHA, base_models="[]"), ['base_models is required for kind = "lora"']),
        (lora_entry(10, SHA).replace('kind = "lora"', 'kind = "overlay"'), ["kind 'overlay' must be one of model, lora"]),
        (lora_entry(10, SHA).replace('kind = "lora"', 'task = "t2v"'), ["base_models is only for LoRA entries"]),
        (lora_entry(10, SHA, files=f'[{{ path = "{LORA_FILE}", size = 1, sha256 = "{SHA}", optional = true }}]'),
         ["cannot be optional"]),
    ],
    ids=["no file", "two files", "not safetensors", "unknown base model", "base model is a lora",
         "no base models", "unknown kind", "base_models on a model", "optional file"],
)
def test_a_bad_lora_entry_is_manifest_invalid_naming_it(entry: str, fragments: list[str]) -> None:
    with pytest.raises(ManifestInvalidError) as caught:
        parse_manifest(BASE + entry, origin="lora-test.toml")
    message = caught.value.message
    assert "lora-test.toml" in message and ("film-grain@1.0" in message or "on-a-lora@1.0" in message)
    for fragment in fragments:
        assert fragment in message


# -- ensured like a model -------------------------------------------------------------------------------------


def test_wan_models_ensure_fetches_and_verifies_a_lora_and_status_reports_it(
    lora_manifest: Path, models_root: Path, lora_bytes: bytes
) -> None:
    before = run_wan("models", "status", LORA_ID, "--json")
    assert before.returncode == 3, before.stderr
    assert before.json["models"][0]["state"] == "missing"

    ensured = run_wan("models", "ensure", "--only", LORA_ID, "--json")
    assert ensured.returncode == 0, ensured.stderr
    [result] = ensured.json["results"]
    assert result["id"] == LORA_ID and result["variant"] == "main" and result["state"] == "complete"
    assert result["sources"] == {"local": 1} and result["bytes_downloaded"] == len(lora_bytes)
    assert committed(models_root).read_bytes() == lora_bytes

    after = run_wan("models", "check", "film-grain", "--deep", "--json")  # a bare name, sha256 verified
    assert after.returncode == 0, after.stderr
    [status] = after.json["models"]
    assert status["id"] == LORA_ID and status["state"] == "complete" and status["bytes_needed"] == 0

    listed = run_wan("models", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    kinds = {m["id"]: m for m in listed.json["models"]}
    assert kinds[LORA_ID]["kind"] == "lora" and kinds[LORA_ID]["engine"] is None
    assert kinds[LORA_ID]["base_models"] == ["ti2v-5B@2.2.0"] and kinds[LORA_ID]["variants"][0]["state"] == "complete"
    assert kinds["ti2v-5B@2.2.0"]["kind"] == "model" and kinds["ti2v-5B@2.2.0"]["engine"]["capabilities"]


def test_a_corrupt_mirror_copy_of_a_lora_is_refused_like_a_models(lora_manifest: Path, mirror: Path,
                                                                  models_root: Path) -> None:
    served = mirror / "wan22" / LORA_ID / "main" / LORA_FILE
    served.write_bytes(b"\0" * served.stat().st_size)
    result = run_wan("models", "ensure", "--only", LORA_ID, "--json")
    assert result.returncode == 18 and result.json["error"]["code"] == "CHECKSUM_FAIL", result.stdout
    assert not committed(models_root).exists()  # nothing appears before it is verified


# -- not a video model ----------------------------------------------------------------------------------------


def test_a_lora_entry_is_never_taken_for_a_video_model(lora_manifest: Path) -> None:
    orchestrator = Orchestrator(Settings.from_env())
    lora = orchestrator.manifest.resolve(LORA_ID)
    with pytest.raises(ModelNotFoundError, match="is a LoRA .*not a video model"):
        family_for(lora)
    with pytest.raises(ModelNotFoundError, match="is a LoRA") as caught:
        Engine().prepare(GenerationRequest(model="film-grain", variant="main", prompt="a fox"))
    assert "wan generate --model ti2v-5B@2.2.0 --lora film-grain@1.0" in caught.value.suggestions
    for preference in ("speed", "balanced", "quality"):
        for vram in (None, 8 * 2**30, 200 * 2**30):
            assert recommend(orchestrator, task="t2v", vram_bytes=vram, preference=preference).model != LORA_ID
    fits = what_fits(orchestrator, HardwareInfo((), 64 * 2**30, 64 * 2**30, 8), "cpu")
    assert fits and LORA_ID not in {fit.model for fit in fits}
    info = model_info(orchestrator, lora)
    assert info["kind"] == "lora" and info["engine"] is None and info["variants"][0]["state"] == "missing"


# -- found by name, ensured when a job applies it -------------------------------------------------------------


def test_find_lora_looks_a_manifest_lora_up_without_fetching_and_fetches_it_when_asked(
    lora_manifest: Path, models_root: Path, lora_bytes: bytes
) -> None:
    settings = Settings.from_env()
    for name in (LORA_ID, "film-grain", f"{LORA_ID}.safetensors"):
        assert find_lora(name, settings) == committed(models_root)
    assert not committed(models_root).exists()  # looked up only: no download, no store change
    assert parse_lora_arg(f"{LORA_ID}:0.8") == LoraRequest(LORA_ID, 0.8)
    assert lora_requests_from_json([{"name": LORA_ID}]) == (LoraRequest(LORA_ID),)

    with pytest.raises(InvalidParamsError) as caught:  # the message lists both kinds
        lora_dir(settings).mkdir(parents=True)
        (lora_dir(settings) / "sepia.safetensors").write_bytes(lora_bytes)
        find_lora("no-such-lora@2.0", settings)
    assert "sepia" in caught.value.message and LORA_ID in caught.value.message

    assert find_lora("film-grain", settings, fetch=True) == committed(models_root)
    assert committed(models_root).read_bytes() == lora_bytes
    entries = {entry.name: entry.to_json() for entry in list_loras(settings, inspect=True)}
    assert entries["sepia"]["source"] == "catalogue" and entries["sepia"]["base_models"] is None
    assert entries[LORA_ID]["source"] == "manifest" and entries[LORA_ID]["state"] == "complete"
    assert entries[LORA_ID]["base_models"] == ["ti2v-5B@2.2.0"] and entries[LORA_ID]["rank"] == 4


def test_a_job_naming_a_manifest_lora_not_on_disk_gets_it_ensured_and_applied(
    lora_manifest: Path, models_root: Path, tmp_path: Path
) -> None:
    engine = Engine()
    job = engine.prepare(GenerationRequest(model="ti2v-5B", variant="dev", prompt="a red fox in fresh snow", seed=3,
                                           output=tmp_path / "grain.mp4", loras=(LoraRequest(LORA_ID, 0.8),)))
    assert not committed(models_root).exists() and len(engine.cache) == 0  # validation fetched nothing

    result = engine.generate(job)
    plain = engine.generate(replace(job.request, output=tmp_path / "plain.mp4", loras=()))
    assert not np.array_equal(decoded(result.output), decoded(plain.output))  # the LoRA changed the video
    [applied] = result.to_json()["loras"]
    assert applied["name"] == LORA_ID and applied["path"] == str(committed(models_root))
    assert 0.8 in applied["weights"].values() and result.output.is_file()
    status = Orchestrator(Settings.from_env()).status(LORA_ID)
    assert status.state == "complete"  # ensured through the store: verified, committed, recorded (a gc "use")
    assert (models_root / ".wan" / "state" / "wan22" / LORA_ID / "main.json").is_file()


# -- the server -----------------------------------------------------------------------------------------------


def test_the_server_lists_both_kinds_of_lora_and_keeps_them_out_of_the_models(
    lora_manifest: Path, mirror: Path, models_root: Path, lora_bytes: bytes, wan_server
) -> None:
    catalogue = models_root / "loras"
    catalogue.mkdir(parents=True)
    (catalogue / "sepia.safetensors").write_bytes(lora_bytes)
    server = wan_server(WAN_MODELS_MANIFEST=str(lora_manifest), WAN_LOCAL_MIRROR=str(mirror), WAN_DEVICE="cpu")

    status, body, _ = server.request("GET", "/v1/loras")
    assert status == 200, body
    listed = {item["name"]: item for item in body["data"]}
    assert set(listed) == {"sepia", LORA_ID} and all("path" not in item for item in body["data"])
    assert listed["sepia"]["source"] == "catalogue" and listed["sepia"]["state"] == "complete"
    assert listed[LORA_ID]["source"] == "manifest" and listed[LORA_ID]["state"] == "missing"
    assert listed[LORA_ID]["base_models"] == ["ti2v-5B@2.2.0"]

    status, models, _ = server.request("GET", "/v1/models")
    assert status == 200 and LORA_ID not in {m["id"] for m in models["data"]}
    assert {m["kind"] for m in models["data"]} == {"model"}
    status, error, _ = server.request("GET", f"/v1/models/{LORA_ID}")
    assert status == 404 and error["error"]["code"] == "MODEL_NOT_FOUND" and "LoRA" in error["error"]["message"]
    status, error, _ = server.request("DELETE", f"/v1/loras/{LORA_ID}")
    assert status == 400 and "manifest" in error["error"]["message"]

    status, video, _ = server.request("POST", "/v1/videos", {
        "model": "ti2v-5B", "variant": "dev", "prompt": "a fox", "seed": 2, "loras": [{"name": LORA_ID}]})
    assert status == 200, video
    done = server.wait_for(video["id"])
    assert done["status"] == "completed", done
    assert [lora["name"] for lora in done["loras_applied"]] == [LORA_ID]
    status, body, _ = server.request("GET", "/v1/loras")
    assert {item["name"]: item["state"] for item in body["data"]}[LORA_ID] == "complete"
