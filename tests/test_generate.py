"""Generation with the bundled dev variants of all three WAN 2.2 models, on the CPU, end to end.

The real diffusers pipelines run (tiny random weights); the MP4 is decoded with PyAV and checked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from wanstudio import CancelToken, Engine, GenerationRequest, Settings
from wanstudio.engine.video import probe_video
from wanstudio.errors import GenerationFailedError, JobCancelledError

SMALL = {"width": 32, "height": 32, "num_frames": 5, "steps": 2}


@pytest.fixture
def engine() -> Engine:
    return Engine(Settings.from_env())


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    path = tmp_path / "input.png"
    Image.new("RGB", (96, 64), (220, 120, 30)).save(path)
    return path


def decoded_frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


@pytest.mark.parametrize(
    ("model", "with_image", "fps", "size"),
    [
        ("t2v-A14B", False, 16, (48, 32)),
        ("i2v-A14B", True, 16, (48, 32)),
        ("ti2v-5B", False, 24, (64, 32)),
        ("ti2v-5B", True, 24, (64, 32)),
    ],
)
def test_each_model_makes_an_mp4_with_the_asked_frames_size_and_fps(
    engine: Engine, tmp_path: Path, picture: Path, model: str, with_image: bool, fps: int, size: tuple[int, int]
) -> None:
    output = tmp_path / "out" / f"{model}.mp4"
    request = GenerationRequest(
        model=model, variant="dev", prompt="a red fox runs through fresh snow", image=picture if with_image else None,
        width=size[0], height=size[1], num_frames=9, steps=2, seed=11, output=output,
    )
    result = engine.generate(request)

    info = probe_video(output)
    assert (info.frames, info.width, info.height, info.fps) == (9, size[0], size[1], fps)
    assert (info.codec, info.pixel_format) == ("h264", "yuv420p")
    assert output.read_bytes()[4:8] == b"ftyp" and output.read_bytes().find(b"moov") < output.read_bytes().find(b"mdat")
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["schema"] == "wan.generate.sidecar/1"
    assert (sidecar["model"], sidecar["variant"], sidecar["seed"]) == (f"{model}@2.2.0", "dev", 11)
    assert sidecar["parameters"]["image"] is with_image and sidecar["parameters"]["steps"] == 2
    assert sidecar["metrics"]["peak_rss_bytes"] > 0 and sidecar["metrics"]["elapsed_seconds"] > 0
    assert sorted(p.name for p in output.parent.iterdir()) == sorted([output.name, result.sidecar.name])


def test_a_fixed_seed_gives_the_same_video_and_another_seed_a_different_one(engine: Engine, tmp_path: Path) -> None:
    def run(seed: int, name: str) -> np.ndarray:
        engine.generate(GenerationRequest(model="t2v-A14B", variant="dev", prompt="a fox", seed=seed, output=tmp_path / name, **SMALL))
        return decoded_frames(tmp_path / name)

    first, again, other = run(7, "a.mp4"), run(7, "b.mp4"), run(8, "c.mp4")
    assert np.array_equal(first, again)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    assert not np.array_equal(first, other)
    fresh = Engine(Settings.from_env())  # a cold engine, the same seed: still the same video
    fresh.generate(GenerationRequest(model="t2v-A14B", variant="dev", prompt="a fox", seed=7, output=tmp_path / "d.mp4", **SMALL))
    assert np.array_equal(first, decoded_frames(tmp_path / "d.mp4"))


def test_progress_reports_stages_real_steps_and_an_eta(engine: Engine, tmp_path: Path) -> None:
    events = []
    engine.generate(
        GenerationRequest(model="ti2v-5B", variant="dev", prompt="a fox", seed=1, output=tmp_path / "p.mp4", **{**SMALL, "steps": 4}),
        progress=events.append,
    )
    stages = list(dict.fromkeys(e.stage for e in events))
    assert stages == ["ensuring", "loading", "denoising", "decoding", "encoding", "done"]
    steps = [e.step for e in events if e.stage == "denoising"]
    assert steps == [0, 1, 2, 3, 4] and all(e.total_steps == 4 for e in events)
    percents = [e.percent for e in events]
    assert percents == sorted(percents) and percents[-1] == 100.0
    etas = [e.eta_seconds for e in events if e.stage == "denoising" and e.step > 0]
    assert all(eta is not None for eta in etas) and etas[-1] == 0.0


def test_the_first_download_reports_bytes_as_progress(engine: Engine, tmp_path: Path) -> None:
    events = []
    engine.generate(GenerationRequest(model="ti2v-5B", variant="dev", prompt="a fox", output=tmp_path / "d.mp4", **SMALL), progress=events.append)
    downloads = [e.download for e in events if e.download is not None]
    assert downloads and downloads[-1].bytes_done == downloads[-1].bytes_total > 0


def test_cancelling_stops_at_the_next_step_and_writes_nothing(engine: Engine, tmp_path: Path) -> None:
    token = CancelToken()
    steps_seen = []

    def listener(event) -> None:
        if event.stage == "denoising" and event.step >= 1:
            steps_seen.append(event.step)
            token.cancel()

    output = tmp_path / "out" / "cancelled.mp4"
    request = GenerationRequest(model="t2v-A14B", variant="dev", prompt="a fox", output=output, **{**SMALL, "steps": 6})
    with pytest.raises(JobCancelledError) as caught:
        engine.generate(request, progress=listener, cancel=token)
    assert caught.value.code == "CANCELLED" and "t2v-A14B@2.2.0" in caught.value.message
    assert steps_seen == [1]  # stopped at the first step boundary after the request, not at the end
    assert not output.parent.exists() or list(output.parent.iterdir()) == []
    # the engine is still usable, and the cached pipeline was not left half-run
    result = engine.generate(GenerationRequest(model="t2v-A14B", variant="dev", prompt="a fox", output=output, **SMALL))
    assert result.metrics.pipeline_cached and probe_video(output).frames == 5


def test_a_cancelled_token_stops_before_anything_loads(engine: Engine, tmp_path: Path) -> None:
    token = CancelToken()
    token.cancel("cancelled by the user")
    with pytest.raises(JobCancelledError, match="cancelled by the user"):
        engine.generate(GenerationRequest(model="ti2v-5B", variant="dev", prompt="a fox", output=tmp_path / "x.mp4"), cancel=token)
    assert len(engine.cache) == 0


def test_the_pipeline_cache_keeps_one_model_between_jobs(engine: Engine, tmp_path: Path) -> None:
    def job(model: str):
        return engine.generate(GenerationRequest(model=model, variant="dev", prompt="a fox", output=tmp_path / f"{model}.mp4", **SMALL))

    assert not job("ti2v-5B").metrics.pipeline_cached
    assert job("ti2v-5B").metrics.pipeline_cached
    assert not job("t2v-A14B").metrics.pipeline_cached  # another model replaces it (one fits a GPU)
    assert len(engine.cache) == 1
    assert not job("ti2v-5B").metrics.pipeline_cached


def test_a_damaged_component_is_named_with_the_commands_that_repair_it(engine: Engine, tmp_path: Path) -> None:
    folder = engine.orchestrator.ensure("ti2v-5B", "dev").path
    weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
    size = weights.stat().st_size
    os.chmod(weights, 0o644)
    weights.write_bytes(b"\0" * size)  # same size: only a deep check notices
    with pytest.raises(GenerationFailedError) as caught:
        engine.generate(GenerationRequest(model="ti2v-5B", variant="dev", prompt="a fox", output=tmp_path / "x.mp4"))
    error = caught.value
    assert "component 'vae'" in error.message and "ti2v-5B@2.2.0 [dev]" in error.message
    assert any("wan models check ti2v-5B@2.2.0 --variant dev --deep" in s for s in error.suggestions)
    assert any("wan models ensure --only ti2v-5B@2.2.0 --variant dev --force" in s for s in error.suggestions)


def test_an_unwritable_output_is_reported_with_its_path(engine: Engine, tmp_path: Path) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("a file where a folder should be")
    target = blocker / "video.mp4"
    with pytest.raises(GenerationFailedError) as caught:
        engine.generate(GenerationRequest(model="ti2v-5B", variant="dev", prompt="a fox", output=target, **SMALL))
    assert str(target) in caught.value.message and caught.value.suggestions
    assert blocker.read_text() == "a file where a folder should be"
