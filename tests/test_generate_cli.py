"""`wan generate` and the engine's side of `wan models`: the real program, in subprocesses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from wanstudio.engine.video import probe_video


def test_the_readme_command_makes_an_mp4_offline(wan, tmp_path: Path) -> None:
    result = wan("generate", "--model", "ti2v-5B", "--variant", "dev", "--prompt", "a red fox runs through fresh snow",
                 "--output", str(tmp_path / "demo.mp4"))
    assert result.returncode == 0, result.stderr
    info = probe_video(tmp_path / "demo.mp4")
    assert (info.frames, info.width, info.height, info.fps, info.codec) == (9, 128, 64, 24.0, "h264")
    assert str(tmp_path / "demo.mp4") in result.stdout and "seed" in result.stdout


def test_json_output_is_the_contract_document(wan, tmp_path: Path) -> None:
    image = tmp_path / "still.jpg"
    Image.new("RGB", (120, 80), (30, 90, 200)).save(image)
    result = wan("generate", "-m", "i2v-A14B", "--variant", "dev", "-p", "the lake ripples", "--image", str(image),
                 "--size", "48x32", "--frames", "5", "--steps", "2", "--seed", "42", "--fps", "8",
                 "--output", str(tmp_path / "clips"), "--json")
    assert result.returncode == 0, result.stderr
    document = result.json
    assert document["schema"] == "wan.generate/1"
    for key in ("output", "sidecar", "model", "variant", "seed", "frames", "fps", "width", "height", "metrics", "warnings"):
        assert key in document
    assert (document["model"], document["variant"], document["seed"]) == ("i2v-A14B@2.2.0", "dev", 42)
    assert set(document["metrics"]) >= {"elapsed_seconds", "step_seconds", "peak_rss_bytes", "peak_vram_bytes"}
    output = Path(document["output"])
    assert output.parent == tmp_path / "clips" and output.name.startswith("i2v-A14B_") and output.name.endswith("_42.mp4")
    info = probe_video(output)
    assert (info.frames, info.width, info.height, info.fps) == (5, 48, 32, 8.0)
    assert Path(document["sidecar"]).is_file()


@pytest.mark.parametrize(
    ("args", "param", "words"),
    [
        (["-m", "ti2v-5B", "--size", "100x64"], "size", "nearest valid value: 96x64"),
        (["-m", "ti2v-5B", "--size", "wide"], "size", "WIDTHxHEIGHT"),
        (["-m", "ti2v-5B", "--frames", "12"], "num_frames", "nearest valid value: 13"),
        (["-m", "ti2v-5B", "--steps", "0"], "steps", "allowed 1 to 100"),
        (["-m", "ti2v-5B", "--guidance", "50"], "guidance_scale", "nearest valid value: 20"),
        (["-m", "ti2v-5B", "--guidance-2", "3"], "guidance_scale_2", "single denoiser"),
        (["-m", "ti2v-5B", "--seed", "-1"], "seed", "nearest valid value: 0"),
        (["-m", "ti2v-5B", "--fps", "0"], "fps", "allowed 1 to 60"),
        (["-m", "ti2v-5B", "--memory-profile", "tiny"], "memory_profile", "resident, model_offload"),
        (["-m", "i2v-A14B"], "image", "none was given"),
        (["-m", "t2v-A14B", "--image", "{picture}"], "image", "takes no input image"),
        (["-m", "ti2v-5B", "--image", "{not_a_picture}"], "image", "not an image"),
        (["-m", "ti2v-5B", "--prompt", " "], "prompt", "empty"),
        (["-m", "ti2v-5B", "--output", "{tmp}/clip.gif"], "output", "must end in .mp4"),
    ],
)
def test_every_bad_value_is_invalid_params_before_anything_loads(wan, tmp_path: Path, models_root: Path, args, param, words) -> None:
    picture, not_a_picture = tmp_path / "p.png", tmp_path / "notes.png"
    Image.new("RGB", (8, 8)).save(picture)
    not_a_picture.write_text("a shopping list")
    args = [a.format(picture=picture, not_a_picture=not_a_picture, tmp=tmp_path) for a in args]
    if "--prompt" not in args:
        args += ["--prompt", "a fox"]
    if "--output" not in args:
        args += ["--output", str(tmp_path / "x.mp4")]
    result = wan("generate", "--variant", "dev", *args, "--json")
    assert result.returncode == 30, result.stderr
    error = result.json["error"]
    assert (error["code"], error["param"]) == ("INVALID_PARAMS", param)
    assert words in error["message"]
    assert not (tmp_path / "x.mp4").exists()
    assert not models_root.exists()  # rejected before the model was even ensured


def test_unknown_models_and_variants_list_the_choices(wan) -> None:
    result = wan("generate", "-m", "t2v-A15B", "-p", "a fox", "--json")
    assert result.returncode == 13 and result.json["error"]["code"] == "MODEL_NOT_FOUND"
    assert "t2v-A14B" in result.json["error"]["message"]
    result = wan("generate", "-m", "t2v-A14B", "--variant", "int3", "-p", "a fox")
    assert result.returncode == 13 and "dev" in result.stderr and "error [MODEL_NOT_FOUND]" in result.stderr


def test_without_models_root_the_error_says_how_to_set_it(wan) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MODELS_ROOT"}
    import subprocess
    import sys

    completed = subprocess.run([sys.executable, "-m", "wanstudio", "generate", "-m", "ti2v-5B", "--variant", "dev", "-p", "x"],
                               capture_output=True, text=True, env=env, timeout=120)
    assert completed.returncode == 10 and "export MODELS_ROOT" in completed.stderr


def test_models_list_json_describes_capabilities_limits_and_memory(wan) -> None:
    result = wan("models", "list", "--json")
    assert result.returncode == 0, result.stderr
    models = {m["id"]: m for m in result.json["models"]}
    t2v, i2v, ti2v = models["t2v-A14B@2.2.0"]["engine"], models["i2v-A14B@2.2.0"]["engine"], models["ti2v-5B@2.2.0"]["engine"]
    assert (t2v["capabilities"], i2v["capabilities"]) == (["text-to-video"], ["image-to-video"])
    assert ti2v["capabilities"] == ["text-to-video", "image-to-video"]
    assert (t2v["defaults"]["fps"], ti2v["defaults"]["fps"], t2v["experts"]) == (16, 24, 2)
    assert ti2v["limits"]["size_multiple"] == 32 and t2v["limits"]["max_frames"] == 81
    estimates = {(e["resolution"], e["memory_profile"]): e["vram_bytes"] for e in t2v["vram_estimates"]}
    assert estimates[("1280x720", "resident")] > estimates[("1280x720", "model_offload")] > estimates[("1280x720", "sequential_offload")]
    assert estimates[("1280x720", "resident")] > estimates[("832x480", "resident")]
    dev = next(v for v in models["ti2v-5B@2.2.0"]["variants"] if v["name"] == "dev")
    assert dev["state"] == "missing"


@pytest.mark.parametrize(
    ("args", "model", "profile"),
    [
        (["--vram", "80G", "--prefer", "quality"], "t2v-A14B@2.2.0", "resident"),
        (["--vram", "80G", "--prefer", "speed"], "ti2v-5B@2.2.0", "resident"),
        (["--vram", "80G", "--task", "i2v"], "i2v-A14B@2.2.0", "resident"),
        (["--vram", "16G", "--prefer", "balanced"], "ti2v-5B@2.2.0", None),
        (["--vram", "16G", "--image", "--prefer", "speed"], "ti2v-5B@2.2.0", None),
    ],
)
def test_recommend_picks_a_model_and_profile_with_a_reason(wan, args, model, profile) -> None:
    result = wan("models", "recommend", *args, "--json")
    assert result.returncode == 0, result.stderr
    choice = result.json["recommendation"]
    assert choice["model"] == model and choice["variant"] == "bf16" and choice["reason"]
    if profile:
        assert choice["memory_profile"] == profile
    assert choice["estimated_vram_bytes"] <= int(args[1][:-1]) * 2**30
