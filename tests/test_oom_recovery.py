"""Running out of memory: one retry with the next leaner profile, then OUT_OF_MEMORY, a fallback model
(only with allow_fallback) or a mock video (only with WAN_ALLOW_MOCK=1), each marked on the result.

The out-of-memory error is torch's own allocator error type, raised from inside the real diffusers
pipeline: by the job's progress listener, which the engine calls from the pipeline's step callback, at a
chosen step. No code of ours is replaced. The command-line tests use a plugin family, installed the way
pip would, whose model raises the same error unless its memory profile is lean enough.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from conftest import UNREACHABLE_ENDPOINT, run_wan, write_model
from wanstudio import CancelToken, Engine, GenerationRequest, Settings
from wanstudio.engine.video import probe_video
from wanstudio.errors import JobCancelledError, OutOfMemoryError

SMALL = {"width": 48, "height": 32, "num_frames": 5, "steps": 2, "seed": 9}
ALLOCATOR_MESSAGE = "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 15.69 GiB"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One store for the module (each dev model is fetched once), named the way the autouse fixture would."""
    root = tmp_path_factory.mktemp("oom")
    return {"MODELS_ROOT": str(root / "models"), "HF_ENDPOINT": UNREACHABLE_ENDPOINT, "HF_HUB_CACHE": str(root / "hf")}


@pytest.fixture
def engine(store: dict[str, str]) -> Engine:
    return Engine(Settings.from_env(store))


class OutOfMemoryAt:
    """A progress listener that raises the allocator's error at denoising step `step` of the first
    `times` runs of `model` (every run when `times` is None), and counts the runs it saw."""

    def __init__(self, step: int = 1, times: int | None = 1, model: str = "", error: type = torch.OutOfMemoryError) -> None:
        self.step, self.times, self.model, self.error = step, times, model, error
        self.raised = 0
        self.runs: list[str] = []

    def __call__(self, event) -> None:
        if event.stage == "loading":
            self.runs.append(event.model)
        if event.stage != "denoising" or event.step != self.step or not event.model.startswith(self.model):
            return
        if self.times is None or self.raised < self.times:
            self.raised += 1
            raise self.error(ALLOCATOR_MESSAGE)


@pytest.mark.parametrize("error", [torch.OutOfMemoryError, RuntimeError], ids=["OutOfMemoryError", "RuntimeError"])
def test_out_of_memory_mid_run_is_retried_once_with_the_next_leaner_profile(engine: Engine, tmp_path: Path, error) -> None:
    listener = OutOfMemoryAt(step=1, error=error)
    output = tmp_path / "retried.mp4"
    result = engine.generate(GenerationRequest(model="t2v-A14B", variant="dev", prompt="a fox", output=output, **SMALL),
                             progress=listener)

    assert listener.raised == 1 and len(listener.runs) == 2  # loaded twice: the first pipeline was dropped
    assert result.placement.memory_profile == "model_offload" and result.plan.reason.startswith("asked for model_offload")
    assert not result.metrics.pipeline_cached and len(engine.cache) == 1
    warning = next(w for w in result.warnings if "ran out of memory" in w)
    assert "memory profile resident" in warning and "retried with the leaner model_offload" in warning
    assert "Tried to allocate 20.00 GiB" in warning
    info = probe_video(output)
    assert (info.frames, info.width, info.height) == (5, 48, 32)
    sidecar = json.loads(result.sidecar.read_text())
    assert warning in sidecar["warnings"] and sidecar["memory_profile"] == "model_offload"
    assert result.metrics.step_seconds is not None and len(result.metrics.stage_seconds) > 0
    again = engine.generate(GenerationRequest(model="t2v-A14B", variant="dev", prompt="a fox", output=tmp_path / "again.mp4",
                                              **SMALL))
    assert again.placement.memory_profile == "model_offload" and again.metrics.pipeline_cached  # the profile that fitted
    assert not any("ran out of memory" in w for w in again.warnings)


def test_a_second_out_of_memory_is_out_of_memory_with_suggestions_for_the_model(engine: Engine, tmp_path: Path) -> None:
    listener = OutOfMemoryAt(step=2, times=None)
    output = tmp_path / "none.mp4"
    with pytest.raises(OutOfMemoryError) as caught:
        engine.generate(GenerationRequest(model="i2v-A14B", variant="dev", prompt="a fox", image=_picture(tmp_path),
                                          output=output, **SMALL), progress=listener)
    error = caught.value
    assert listener.raised == 2  # resident, then model_offload: one retry, not the whole ladder
    assert (error.code, error.exit_code) == ("OUT_OF_MEMORY", 31)
    assert "with memory profile resident and then model_offload" in error.message and "i2v-A14B@2.2.0" in error.message
    assert any("--memory-profile sequential_offload" in s for s in error.suggestions)
    assert any("--model ti2v-5B" in s and "--allow-fallback" in s for s in error.suggestions)
    assert not output.exists() and not output.with_suffix(".json").exists()
    assert len(engine.cache) == 0  # what ran out of memory is not kept


def test_out_of_memory_on_the_leanest_profile_fails_at_once(engine: Engine, tmp_path: Path) -> None:
    listener = OutOfMemoryAt(step=1, times=None)
    with pytest.raises(OutOfMemoryError) as caught:
        engine.generate(GenerationRequest(model="ti2v-5B", variant="dev", prompt="a fox", memory_profile="sequential_offload",
                                          output=tmp_path / "x.mp4", **{**SMALL, "width": 64, "num_frames": 9}),
                        progress=listener)
    assert listener.raised == 1
    error = caught.value
    assert "with memory profile sequential_offload:" in error.message
    assert not any("--memory-profile" in s for s in error.suggestions)  # there is nothing leaner
    assert any("--frames 5" in s for s in error.suggestions) and not any("5B model" in s for s in error.suggestions)


def test_fallback_to_the_5b_model_only_when_the_request_allows_it(engine: Engine, tmp_path: Path) -> None:
    listener = OutOfMemoryAt(step=1, times=None, model="t2v-A14B")
    output = tmp_path / "fallback.mp4"
    request = GenerationRequest(model="t2v-A14B", variant="dev", prompt="a fox", output=output,
                                memory_profile="sequential_offload", **SMALL)  # the leanest: one attempt
    with pytest.raises(OutOfMemoryError):
        engine.generate(request, progress=listener)
    assert not output.exists()

    result = engine.generate(replace(request, allow_fallback=True), progress=listener)
    assert (result.model, result.variant) == ("ti2v-5B@2.2.0", "dev")
    assert result.fallback is not None and result.to_json()["fallback"] == {
        "from": "t2v-A14B@2.2.0", "to": "ti2v-5B@2.2.0",
        "reason": "t2v-A14B@2.2.0 ran out of memory with sequential_offload",
    }
    assert result.plan.profile == "resident"  # the lighter model gets its own plan
    assert any(w.startswith("fell back from t2v-A14B@2.2.0 to ti2v-5B@2.2.0 [dev]") for w in result.warnings)
    assert result.output == output and result.params.seed == 9  # the same file and seed as asked
    info = probe_video(output)
    assert (info.frames, info.width, info.height, info.fps) == (5, 64, 32, 24.0)  # 48 wide snapped to the 5B's 32 grid
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["fallback"]["to"] == "ti2v-5B@2.2.0" and sidecar["model"] == "ti2v-5B@2.2.0"
    assert sidecar["mock"] is False


def test_mock_video_only_with_wan_allow_mock_and_clearly_marked(store: dict[str, str], tmp_path: Path) -> None:
    listener = OutOfMemoryAt(step=1, times=None)
    request = GenerationRequest(model="t2v-A14B", variant="dev", prompt="a fox", output=tmp_path / "mock.mp4",
                                memory_profile="sequential_offload", **{**SMALL, "width": 96, "height": 64})
    with pytest.raises(OutOfMemoryError):
        Engine(Settings.from_env(store)).generate(request, progress=listener)

    engine = Engine(Settings.from_env({**store, "WAN_ALLOW_MOCK": "1"}))
    result = engine.generate(request, progress=listener)
    assert result.mock is True and result.fallback is None and result.plan is None
    assert result.to_json()["mock"] is True and result.to_json()["memory_profile"] == "none"
    note = next(w for w in result.warnings if w.startswith("MOCK VIDEO"))
    assert "OUT_OF_MEMORY" in note and "t2v-A14B@2.2.0 [dev]" in note and "WAN_ALLOW_MOCK=1" in note
    assert json.loads(result.sidecar.read_text())["mock"] is True
    info = probe_video(result.output)
    assert (info.frames, info.width, info.height) == (5, 96, 64)
    with av.open(str(result.output)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    assert first[60, 18:24].mean(axis=0)[2] < 60 and first[60, 18:24].mean(axis=0)[0] > 130  # yellow bar: no blue
    assert (first[2:12, 2:30] > 200).any() and (first[2:12, 2:30] < 50).any()  # the white-on-black "MOCK" label

    token = CancelToken()
    token.cancel()
    with pytest.raises(JobCancelledError):  # a mock never covers for a cancelled job
        engine.generate(request, cancel=token)


# -- the command line, with a plugin family whose model runs out of memory unless its profile is lean ----------------

GLUTTON = '''
"""A test family: the model "glutton-big" runs out of memory (torch's allocator error) unless its profile
is at least as lean as `lean_enough`; "glutton-small" always fits."""
import numpy as np
import torch

from wanstudio.engine.family import IMAGE_NONE, Defaults, Limits, ModelSpec

PROFILES = ("resident", "model_offload", "group_offload", "fp8_group_offload", "sequential_offload")
LIMITS = Limits(size_multiple=16, min_side=16, max_side=256, max_pixels=256 * 256, min_frames=5, max_frames=33)
SPECS = {
    "glutton-big": ModelSpec(task="t2v", image=IMAGE_NONE, defaults=Defaults(64, 32, 9, 8, 3, 1.0), limits=LIMITS,
                             parameters=2_000_000, hidden_size=64),
    "glutton-small": ModelSpec(task="t2v", image=IMAGE_NONE, defaults=Defaults(64, 32, 9, 8, 3, 1.0), limits=LIMITS,
                               parameters=1_000_000, hidden_size=64),
}


class Glutton:
    name = "glutton"

    def spec(self, model):
        return SPECS[model.name]

    def load(self, folder, model, variant, placement):
        lean_enough = (folder / "lean_enough.txt").read_text().strip()
        return model.name, PROFILES.index(placement.memory_profile) >= PROFILES.index(lean_enough)

    def run(self, loaded, params, on_step):
        name, fits = loaded
        for step in range(1, params.steps + 1):
            if not fits and step == 2:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 30.00 GiB")
            on_step(step, params.steps)
        return np.full((params.num_frames, params.height, params.width, 3), 0.5, dtype=np.float32)


FAMILY = Glutton()
'''


@pytest.fixture
def site(tmp_path: Path, mirror: Path, manifest_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    (site / "glutton_family.py").write_text(GLUTTON)
    info = site / "glutton-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: glutton\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[wanstudio.families]\nglutton = glutton_family:FAMILY\n")
    write_model(mirror, manifest_path, {"lean_enough.txt": b"group_offload"}, model_id="glutton-big@1.0.0", family="glutton")
    write_model(mirror, manifest_path, {"lean_enough.txt": b"resident"}, model_id="glutton-small@1.0.0", family="glutton")
    return site


def glutton(site: Path, *args: str, env: dict[str, str] | None = None):
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return run_wan("generate", "--model", "glutton-big", "--prompt", "a fox", "--seed", "4", *args,
                   env={"PYTHONPATH": path, **(env or {})})


def test_the_command_line_reports_out_of_memory_fallback_and_mock(site: Path, tmp_path: Path) -> None:
    result = glutton(site, "--json", "--output", str(tmp_path / "a.mp4"))
    assert result.returncode == 31, result.stderr
    error = result.json["error"]
    assert error["code"] == "OUT_OF_MEMORY" and "resident and then model_offload" in error["message"]
    assert "Tried to allocate 30.00 GiB" in error["message"] and not (tmp_path / "a.mp4").exists()

    result = glutton(site, "--json", "--allow-fallback", "--output", str(tmp_path / "b.mp4"))
    assert result.returncode == 0, result.stderr
    assert result.json["model"] == "glutton-small@1.0.0" and result.json["mock"] is False
    assert result.json["fallback"] == {"from": "glutton-big@1.0.0", "to": "glutton-small@1.0.0",
                                       "reason": "glutton-big@1.0.0 ran out of memory with resident and model_offload"}
    assert any("ran out of memory with memory profile resident" in w for w in result.json["warnings"])
    assert result.json["memory_plan"]["profile"] == "resident" and probe_video(tmp_path / "b.mp4").frames == 9

    result = glutton(site, "--output", str(tmp_path / "c.mp4"), env={"WAN_ALLOW_MOCK": "1"})  # text output
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("MOCK: the file below is a synthetic test pattern")
    assert "warning: MOCK VIDEO" in result.stderr and "OUT_OF_MEMORY" in result.stderr
    sidecar = json.loads((tmp_path / "c.json").read_text())
    assert (sidecar["mock"], sidecar["model"], sidecar["fallback"]) == (True, "glutton-big@1.0.0", None)


def _picture(folder: Path) -> Path:
    from PIL import Image

    path = folder / "still.png"
    Image.fromarray(np.full((32, 48, 3), 180, dtype=np.uint8)).save(path)
    return path
