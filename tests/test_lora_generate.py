"""LoRAs through the whole engine and the CLI: asked by name, applied for one job, never leaking into the next.

tests/test_lora.py covers the LoRA module itself; here a job asks for LoRAs the way users do
(`GenerationRequest.loras`, `wan generate --lora`), and the videos are compared decoded, frame for frame.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import run_wan
from test_lora import Pipelines, lora_layers, one_layer, save_diffusers_lora
from wanstudio.config import Settings
from wanstudio.engine import Engine, GenerationRequest
from wanstudio.engine.lora import LoraRequest, lora_dir
from wanstudio.errors import InvalidParamsError


@pytest.fixture(scope="module")
def style_lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA made for the ti2v-5B dev transformer (random, non-zero): it must change the video."""
    pipelines = Pipelines(tmp_path_factory.mktemp("store"))
    layers, config = lora_layers(pipelines["ti2v-5B"].pipeline.transformer, seed=3)
    return save_diffusers_lora(tmp_path_factory.mktemp("lora") / "fox_style.safetensors", layers, config)


@pytest.fixture
def catalogue(style_lora: Path) -> Path:
    folder = lora_dir(Settings.from_env())
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(style_lora, folder / "fox_style.safetensors")
    return folder


def decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def request(output: Path, *loras: LoraRequest) -> GenerationRequest:
    return GenerationRequest(model="ti2v-5B", variant="dev", prompt="a red fox in fresh snow", seed=11,
                             output=output, loras=loras)


def test_a_jobs_lora_changes_its_video_and_never_reaches_the_next_job(catalogue: Path, tmp_path: Path) -> None:
    engine = Engine()
    before = engine.generate(request(tmp_path / "before.mp4"))
    styled = engine.generate(request(tmp_path / "styled.mp4", LoraRequest("fox_style", 0.9)))
    after = engine.generate(request(tmp_path / "after.mp4"))

    assert not np.array_equal(decoded(styled.output), decoded(before.output))
    assert np.array_equal(decoded(after.output), decoded(before.output))
    applied = styled.to_json()["loras"]
    assert [lora["name"] for lora in applied] == ["fox_style"]
    assert before.to_json()["loras"] == after.to_json()["loras"] == []
    assert '"fox_style"' in styled.sidecar.read_text()


def test_an_incompatible_lora_is_skipped_with_a_warning_and_the_video_is_still_made(
    catalogue: Path, tmp_path: Path
) -> None:
    save_diffusers_lora(catalogue / "wrong_shape.safetensors", one_layer(fan_in=7, fan_out=9, fill=0.1))
    engine = Engine()
    plain = engine.generate(request(tmp_path / "plain.mp4"))
    result = engine.generate(request(tmp_path / "skipped.mp4", LoraRequest("wrong_shape")))

    assert result.to_json()["loras"] == []
    assert any("wrong_shape" in warning for warning in result.warnings)
    assert np.array_equal(decoded(result.output), decoded(plain.output))


def test_a_lora_missing_from_the_catalogue_is_refused_before_anything_loads(catalogue: Path, tmp_path: Path) -> None:
    engine = Engine()
    with pytest.raises(InvalidParamsError) as caught:
        engine.prepare(request(tmp_path / "x.mp4", LoraRequest("no_such_lora")))
    assert "no_such_lora" in caught.value.message and "fox_style" in caught.value.message
    assert len(engine.cache) == 0 and not (tmp_path / "x.mp4").exists()


def test_wan_generate_takes_loras_with_weights(catalogue: Path, tmp_path: Path) -> None:
    result = run_wan("generate", "--model", "ti2v-5B", "--variant", "dev", "--prompt", "a fox", "--seed", "4",
                     "--lora", "fox_style:0.5", "--output", str(tmp_path / "fox.mp4"), "--json")
    assert result.returncode == 0, result.stderr
    [lora] = result.json["loras"]
    assert lora["name"] == "fox_style" and 0.5 in lora["weights"].values()

    bad = run_wan("generate", "--model", "ti2v-5B", "--variant", "dev", "--prompt", "a fox",
                  "--lora", "fox_style:heavy", "--json")
    assert bad.returncode == 30 and bad.json["error"]["code"] == "INVALID_PARAMS"
    assert bad.json["error"]["param"] == "lora"
