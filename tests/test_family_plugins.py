"""A second, non-WAN model family, installed as its own package, runs end to end through the real `wan`.

The plugin below lives in a folder on PYTHONPATH with a `.dist-info` that registers it under the entry
point group `wanstudio.families`, exactly as `pip install` would leave it; no WAN code knows about it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import run_wan, write_model
from wanstudio.engine.video import probe_video
from wanstudio.orchestrator.manifest import packaged_manifest_path

TOY = "flipbook-toy@0.1.0"

FLIPBOOK = '''
"""A toy family: coloured stripes that slide across the frame, from a palette shipped as the model file."""
import json
from pathlib import Path

import numpy as np

from wanstudio.engine.family import IMAGE_NONE, Defaults, Limits, ModelSpec

SPEC = ModelSpec(
    task="t2v",
    image=IMAGE_NONE,
    defaults=Defaults(width=64, height=32, num_frames=9, fps=8, steps=3, guidance_scale=1.0),
    limits=Limits(size_multiple=16, min_side=16, max_side=256, max_pixels=256 * 256, min_frames=5, max_frames=33),
    description="Sliding stripes from a palette (test family).",
)


class Flipbook:
    name = "flipbook"

    def spec(self, model):
        return SPEC

    def load(self, folder: Path, model, variant, placement):
        return np.asarray(json.loads((folder / "palette.json").read_text())["colors"], dtype=np.float32)

    def run(self, palette, params, on_step):
        rng = np.random.default_rng(params.seed)
        rows = rng.integers(0, len(palette), size=params.width)
        frames = np.zeros((params.num_frames, params.height, params.width, 3), dtype=np.float32)
        for step in range(1, params.steps + 1):  # each "step" sharpens the stripes a little more
            for t in range(params.num_frames):
                frames[t] = palette[np.roll(rows, t * 2)][None, :, :] * step / params.steps
            on_step(step, params.steps)
        return frames


FAMILY = Flipbook()
'''

PALETTE = json.dumps({"colors": [[0.9, 0.1, 0.1], [0.1, 0.8, 0.2], [0.1, 0.2, 0.9], [0.95, 0.9, 0.2]]}).encode()


def install(site: Path, dist: str, module: str, source: str, entry_point: str) -> None:
    """Leave `module` and its distribution metadata in `site`, as an installer would."""
    site.mkdir(exist_ok=True)
    (site / f"{module}.py").write_text(source)
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[wanstudio.families]\n{entry_point}\n")


@pytest.fixture
def site(tmp_path: Path, mirror: Path, manifest_path: Path) -> Path:
    """The flipbook plugin installed in `site`, and a manifest with the packaged WAN models plus the toy."""
    site = tmp_path / "site"
    install(site, "flipbook", "flipbook_family", FLIPBOOK, "flipbook = flipbook_family:FAMILY")
    manifest_path.write_text(packaged_manifest_path().read_text(encoding="utf-8"), encoding="utf-8")
    write_model(mirror, manifest_path, {"palette.json": PALETTE}, model_id=TOY, family="flipbook", variant="base")
    return site


def wan(site: Path, *args: str):
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return run_wan(*args, env={"PYTHONPATH": path})


def generate(site: Path, output: Path, *extra: str):
    return wan(site, "generate", "--model", TOY, "--prompt", "stripes", "--size", "64x32", "--frames", "9",
               "--output", str(output), "--json", *extra)


def decode(path: Path) -> list:
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_the_plugin_family_generates_an_mp4_with_its_sidecar(site: Path, tmp_path: Path) -> None:
    result = generate(site, tmp_path / "a.mp4", "--seed", "5")
    assert result.returncode == 0, result.stderr
    document = result.json
    assert (document["model"], document["variant"], document["seed"]) == (TOY, "base", 5)
    assert (document["frames"], document["fps"], document["width"], document["height"]) == (9, 8, 64, 32)
    assert document["metrics"]["step_seconds"] is not None  # the plugin's on_step calls reached the engine
    assert document["metrics"]["pipeline_cached"] is False and document["device"] in ("cpu", "cuda")
    info = probe_video(tmp_path / "a.mp4")
    assert (info.frames, info.width, info.height, info.fps, info.codec) == (9, 64, 32, 8.0, "h264")
    sidecar = json.loads((tmp_path / "a.json").read_text())
    assert (sidecar["model"], sidecar["seed"], sidecar["parameters"]["seed"]) == (TOY, 5, 5)
    assert sidecar["parameters"]["steps"] == 3  # the plugin's default
    assert sidecar["video"] == "a.mp4"


def test_the_seed_decides_the_video(site: Path, tmp_path: Path) -> None:
    for name, seed in (("one", "7"), ("two", "7"), ("other", "8")):
        result = generate(site, tmp_path / f"{name}.mp4", "--seed", seed)
        assert result.returncode == 0, result.stderr
    one, two, other = (decode(tmp_path / f"{name}.mp4") for name in ("one", "two", "other"))
    assert len(one) == len(two) == len(other) == 9
    assert all((a == b).all() for a, b in zip(one, two))
    assert any((a != b).any() for a, b in zip(one, other))


def test_models_list_describes_the_plugin_model_next_to_the_wan_ones(site: Path) -> None:
    result = wan(site, "models", "list", "--json")
    assert result.returncode == 0, result.stderr
    models = {m["id"]: m for m in result.json["models"]}
    toy = models[TOY]
    assert toy["family"] == "flipbook"
    engine = toy["engine"]
    assert engine["capabilities"] == ["text-to-video"] and engine["inputs"]["image"] == "none"
    assert (engine["defaults"]["fps"], engine["defaults"]["steps"], engine["limits"]["size_multiple"]) == (8, 3, 16)
    assert engine["summary"] == "Sliding stripes from a palette (test family)."
    for wan_id in ("t2v-A14B@2.2.0", "i2v-A14B@2.2.0", "ti2v-5B@2.2.0"):
        assert models[wan_id]["family"] == "wan22" and models[wan_id]["engine"]["capabilities"], wan_id


def test_the_engine_validates_plugin_requests_against_the_plugin_spec(site: Path, tmp_path: Path, models_root: Path) -> None:
    result = wan(site, "generate", "--model", TOY, "--prompt", "stripes", "--frames", "10", "--seed", "1",
                 "--output", str(tmp_path / "x.mp4"), "--json")
    assert result.returncode == 30, result.stderr
    error = result.json["error"]
    assert (error["code"], error["param"]) == ("INVALID_PARAMS", "num_frames")
    assert "nearest valid value: 9" in error["message"] and TOY in error["message"]
    assert not (tmp_path / "x.mp4").exists()
    assert not models_root.exists()  # rejected before the model was ensured


def test_a_family_without_a_plugin_is_model_not_found(site: Path, tmp_path: Path, mirror: Path, manifest_path: Path) -> None:
    write_model(mirror, manifest_path, {"w.bin": b"weights"}, model_id="holo@1.0.0", family="hologram")
    result = wan(site, "generate", "--model", "holo", "--prompt", "x", "--output", str(tmp_path / "x.mp4"), "--json")
    assert result.returncode == 13, result.stderr
    error = result.json["error"]
    assert error["code"] == "MODEL_NOT_FOUND"
    assert "'hologram'" in error["message"] and "flipbook" in error["message"] and "wan22" in error["message"]


def test_a_plugin_that_fails_to_import_is_reported_and_the_others_keep_working(
    site: Path, tmp_path: Path, mirror: Path, manifest_path: Path
) -> None:
    install(site, "brittle", "brittle_family", "raise RuntimeError('brittle needs a GPU driver')\n",
            "brittle = brittle_family:FAMILY")
    write_model(mirror, manifest_path, {"w.bin": b"weights"}, model_id="brittle-toy@1.0.0", family="brittle")

    result = wan(site, "generate", "--model", "brittle-toy", "--prompt", "x", "--output", str(tmp_path / "b.mp4"), "--json")
    assert result.returncode == 32, result.stderr
    error = result.json["error"]
    assert error["code"] == "GENERATION_FAILED"
    assert "'brittle'" in error["message"] and "brittle_family:FAMILY" in error["message"]
    assert "brittle needs a GPU driver" in error["message"]

    listed = wan(site, "models", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    models = {m["id"]: m for m in listed.json["models"]}
    assert models["brittle-toy@1.0.0"]["engine"]["error"]["code"] == "GENERATION_FAILED"
    assert models[TOY]["engine"]["capabilities"] == ["text-to-video"]
    assert models["ti2v-5B@2.2.0"]["engine"]["capabilities"] == ["text-to-video", "image-to-video"]

    result = generate(site, tmp_path / "ok.mp4", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert probe_video(tmp_path / "ok.mp4").frames == 9


CLUMSY = '''
from wanstudio.engine.family import IMAGE_NONE, Defaults, Limits, ModelSpec

SPEC = ModelSpec(task="t2v", image=IMAGE_NONE, defaults=Defaults(32, 32, 5, 8, 2, 1.0),
                 limits=Limits(size_multiple=16, min_side=16, max_side=64, max_pixels=64 * 64, min_frames=5, max_frames=9))


class Clumsy:
    name = "clumsy"

    def spec(self, model):
        if model.name == "nospec":
            raise KeyError("no spec for " + model.name)
        return SPEC

    def load(self, folder, model, variant, placement):
        if model.name == "noload":
            return (folder / "missing.json").read_text()
        return model.name

    def run(self, loaded, params, on_step):
        import numpy as np
        return np.zeros((5, 31, 32, 3))  # odd height: not encodable


FAMILY = Clumsy()
'''


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("nospec", "failed to describe nospec@1.0.0: KeyError"),
        ("noload", "failed while loading: FileNotFoundError"),
        ("badframes", "returned frames of shape (5, 31, 32, 3)"),
    ],
)
def test_a_misbehaving_plugin_becomes_generation_failed_and_lists_still_work(
    site: Path, tmp_path: Path, mirror: Path, manifest_path: Path, name: str, words: str
) -> None:
    install(site, "clumsy", "clumsy_family", CLUMSY, "clumsy = clumsy_family:FAMILY")
    write_model(mirror, manifest_path, {"w.bin": b"weights"}, model_id=f"{name}@1.0.0", family="clumsy")
    result = wan(site, "generate", "--model", name, "--prompt", "x", "--output", str(tmp_path / "x.mp4"), "--json")
    assert result.returncode == 32, result.stderr
    error = result.json["error"]
    assert error["code"] == "GENERATION_FAILED" and words in error["message"] and error["suggestions"]
    assert not (tmp_path / "x.mp4").exists()
    listed = wan(site, "models", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {m["id"] for m in listed.json["models"]} >= {f"{name}@1.0.0", TOY, "ti2v-5B@2.2.0"}
