"""Parameters per architecture: official defaults, validation with the nearest valid value, input images."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from wanstudio.engine._images import fit_image, load_image
from wanstudio.engine.params import GenerationRequest, parse_size_text, resolve_params
from wanstudio.engine.wan import NEGATIVE_PROMPT, SPECS
from wanstudio.errors import InvalidParamsError


def resolve(model: str, variant: str = "bf16", **fields):
    request = GenerationRequest(model=model, prompt=fields.pop("prompt", "a fox"), **fields)
    return resolve_params(SPECS[model], request, model_id=f"{model}@2.2.0", variant=variant)


def rejected(model: str, **fields) -> InvalidParamsError:
    with pytest.raises(InvalidParamsError) as caught:
        resolve(model, **fields)
    return caught.value


@pytest.mark.parametrize(
    ("model", "size", "frames", "fps", "steps", "guidance", "guidance_2", "shift"),
    [
        ("t2v-A14B", (1280, 720), 81, 16, 40, 4.0, 3.0, 12.0),
        ("i2v-A14B", (1280, 720), 81, 16, 40, 3.5, 3.5, 5.0),
        ("ti2v-5B", (1280, 704), 121, 24, 50, 5.0, None, 5.0),
    ],
)
def test_defaults_are_the_official_configuration(model, size, frames, fps, steps, guidance, guidance_2, shift) -> None:
    image = Image.new("RGB", size) if model == "i2v-A14B" else None
    params, warnings = resolve(model, image=image, seed=1)
    assert (params.width, params.height) == size
    assert (params.num_frames, params.fps, params.steps) == (frames, fps, steps)
    assert (params.guidance_scale, params.guidance_scale_2, params.flow_shift) == (guidance, guidance_2, shift)
    assert params.negative_prompt == NEGATIVE_PROMPT
    assert warnings == []


@pytest.mark.parametrize(("model", "size"), [("t2v-A14B", (64, 32)), ("ti2v-5B", (128, 64))])
def test_dev_variants_default_to_a_quick_small_video(model, size) -> None:
    params, warnings = resolve(model, variant="dev", seed=1)
    assert ((params.width, params.height), params.num_frames, params.steps) == (size, 9, 4)
    assert warnings == []  # dev sizes are not "untrained resolutions" worth a warning


def test_a_seed_is_chosen_and_recorded_when_none_is_given() -> None:
    seeds = {resolve("ti2v-5B")[0].seed for _ in range(5)}
    assert len(seeds) > 1 and all(0 <= s < 2**32 for s in seeds)


def test_guidance_scale_alone_applies_to_both_experts() -> None:
    params, _ = resolve("t2v-A14B", guidance_scale=6.0)
    assert (params.guidance_scale, params.guidance_scale_2) == (6.0, 6.0)
    params, _ = resolve("t2v-A14B", guidance_scale=6.0, guidance_scale_2=2.0)
    assert (params.guidance_scale, params.guidance_scale_2) == (6.0, 2.0)


def test_an_untrained_resolution_is_accepted_with_a_warning() -> None:
    params, warnings = resolve("t2v-A14B", width=640, height=352)
    assert (params.width, params.height) == (640, 352)
    assert "640x352" in warnings[0] and "1280x720" in warnings[0]


@pytest.mark.parametrize(
    ("model", "width", "height", "nearest"),
    [
        ("t2v-A14B", 1001, 500, "1008x496"),  # not multiples of 16
        ("ti2v-5B", 1280, 720, "1280x704"),  # 720 is not a multiple of 32 for the 5B model
        ("t2v-A14B", 1920, 1080, "1280x720"),  # over the pixel budget: scaled down, aspect kept
        ("t2v-A14B", 4, 4, "16x16"),
    ],
)
def test_a_bad_size_names_the_rule_and_the_nearest_valid_size(model, width, height, nearest) -> None:
    error = rejected(model, width=width, height=height)
    assert error.param == "size"
    assert f"nearest valid value: {nearest}" in error.message
    assert f"--size {nearest}" in error.suggestions
    resolve(model, **dict(zip(("width", "height"), map(int, nearest.split("x")))))  # and that one passes


@pytest.mark.parametrize(("frames", "nearest"), [(80, 81), (10, 9), (2, 5), (200, 81), (0, 5)])
def test_frames_must_be_4n_plus_1_in_range(frames: int, nearest: int) -> None:
    error = rejected("t2v-A14B", num_frames=frames)
    assert error.param == "num_frames"
    assert "4n+1 between 5 and 81" in error.message
    assert f"nearest valid value: {nearest}" in error.message


@pytest.mark.parametrize(
    ("field", "value", "param", "expected"),
    [
        ("steps", 0, "steps", "allowed 1 to 100; nearest valid value: 1"),
        ("steps", 500, "steps", "allowed 1 to 100; nearest valid value: 100"),
        ("fps", 0, "fps", "allowed 1 to 60"),
        ("fps", 120, "fps", "nearest valid value: 60"),
        ("guidance_scale", -1.0, "guidance_scale", "allowed 0 to 20; nearest valid value: 0"),
        ("guidance_scale", float("nan"), "guidance_scale", "must be a number"),
        ("guidance_scale_2", 25.0, "guidance_scale_2", "nearest valid value: 20"),
        ("flow_shift", 0.0, "flow_shift", "allowed 0.1 to 30"),
        ("seed", -5, "seed", "nearest valid value: 0"),
        ("seed", True, "seed", "whole number"),
        ("steps", 2.5, "steps", "whole number"),
    ],
)
def test_each_out_of_range_value_names_its_parameter(field, value, param, expected) -> None:
    error = rejected("t2v-A14B", **{field: value})
    assert error.param == param
    assert expected in error.message
    assert "t2v-A14B@2.2.0" in error.message


def test_prompt_rules() -> None:
    assert rejected("ti2v-5B", prompt="   ").param == "prompt"
    assert rejected("ti2v-5B", prompt="x" * 5000).param == "prompt"
    assert rejected("ti2v-5B", negative_prompt="x" * 5000).param == "negative_prompt"
    params, _ = resolve("ti2v-5B", prompt="  a fox  ", negative_prompt="")
    assert (params.prompt, params.negative_prompt) == ("a fox", "")


def test_guidance_2_is_refused_by_a_single_expert_model() -> None:
    error = rejected("ti2v-5B", guidance_scale_2=3.0)
    assert error.param == "guidance_scale_2" and "single denoiser" in error.message


def test_image_rules_follow_the_architecture(tmp_path: Path) -> None:
    error = rejected("i2v-A14B")
    assert error.param == "image" and "none was given" in error.message
    error = rejected("t2v-A14B", image=Image.new("RGB", (64, 64)))
    assert error.param == "image" and "i2v-A14B or ti2v-5B" in error.suggestions[0]
    not_an_image = tmp_path / "cat.png"
    not_an_image.write_text("this is text with an image's name")
    error = rejected("ti2v-5B", image=not_an_image)
    assert error.param == "image" and str(not_an_image) in error.message and "not an image" in error.message
    assert rejected("ti2v-5B", image=tmp_path / "absent.png").param == "image"
    assert rejected("ti2v-5B", image=b"\x89PNG\r\n\x1a\n broken").param == "image"


def test_an_input_image_sets_the_aspect_and_is_fitted_to_the_grid() -> None:
    portrait = Image.new("RGB", (300, 600), (10, 200, 30))
    params, _ = resolve("ti2v-5B", image=portrait)
    assert (params.width, params.height) == (640, 1280)  # ~ the default area, the image's aspect, multiples of 32
    assert params.image is not None and params.image.size == (640, 1280) and params.image.mode == "RGB"
    params, _ = resolve("i2v-A14B", variant="dev", image=portrait)
    assert (params.width, params.height) == (32, 64)


def test_fit_image_covers_then_crops_the_centre() -> None:
    image = Image.new("RGB", (200, 100), (0, 0, 0))
    image.paste((255, 0, 0), (50, 0, 150, 100))  # a red band in the middle half
    fitted = fit_image(image, 64, 64)
    assert fitted.size == (64, 64)
    assert fitted.getpixel((32, 32)) == (255, 0, 0)  # the centre survives, the black sides are cropped
    assert fitted.getpixel((0, 32))[0] > 200


def test_images_are_decoded_upright_and_in_rgb() -> None:
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned 90 degrees
    Image.new("RGB", (40, 20), (0, 0, 255)).save(buffer, format="JPEG", exif=exif)
    upright = load_image(buffer.getvalue())
    assert upright.size == (20, 40)
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent -> white, not black
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(Image.new("L", (8, 8), 128)).mode == "RGB"


def test_size_text() -> None:
    assert parse_size_text("1280x720") == (1280, 720)
    assert parse_size_text("832*480") == (832, 480)
    with pytest.raises(InvalidParamsError) as caught:
        parse_size_text("big")
    assert caught.value.param == "size"
