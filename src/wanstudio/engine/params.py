"""Requests, and their validation against an architecture: every value checked, every gap filled.

Each rejected value is INVALID_PARAMS naming the parameter, the allowed range and the nearest valid
value, so a user (or a UI) can fix it in one go. Bad input is rejected before any model is touched.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wanstudio.engine._images import ImageInput, fit_image, load_image
from wanstudio.engine.family import IMAGE_NONE, IMAGE_REQUIRED, Defaults, GenerationParams, Limits, ModelSpec
from wanstudio.errors import InvalidParamsError

if TYPE_CHECKING:
    from wanstudio.engine.lora import LoraRequest

MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class GenerationRequest:
    """What a caller asks for; None means "the model's default". ``size`` may replace width and height."""

    model: str
    prompt: str
    variant: str | None = None
    image: ImageInput | None = None
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    fps: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    guidance_scale_2: float | None = None
    flow_shift: float | None = None
    seed: int | None = None
    output: Path | None = None
    memory_profile: str | None = None  # None: the fastest profile that fits the GPU (see engine.memory)
    allow_fallback: bool = False  # may run a lighter model of the family when nothing fits (marked on the result)
    loras: tuple["LoraRequest", ...] = ()  # applied for this job only (see engine.lora)

    def with_size(self, size: str | None) -> "GenerationRequest":
        """This request with width and height taken from a ``WxH`` text (``1280x720``; ``*`` also accepted)."""
        if size is None:
            return self
        width, height = parse_size_text(size)
        return replace(self, width=width, height=height)


def parse_size_text(size: str) -> tuple[int, int]:
    parts = size.lower().replace("*", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise InvalidParamsError(
            f"size {size!r} is not WIDTHxHEIGHT", param="size", suggestions=["write it like 1280x720 or 832x480"]
        )
    return int(parts[0]), int(parts[1])


def resolve_params(
    spec: ModelSpec, request: GenerationRequest, *, model_id: str, variant: str
) -> tuple[GenerationParams, list[str]]:
    """Validate `request` against `spec` and fill in the variant's defaults; returns parameters and warnings."""
    defaults, limits = spec.defaults_for(variant), spec.limits
    warnings: list[str] = []
    where = f"for {model_id}"

    prompt = _text(request.prompt, "prompt", limits, where, required=True)
    negative = defaults.negative_prompt if request.negative_prompt is None else _text(
        request.negative_prompt, "negative_prompt", limits, where, required=False
    )

    image = None
    if request.image is not None:
        if spec.image == IMAGE_NONE:
            raise InvalidParamsError(
                f"image: {model_id} makes video from text only and takes no input image",
                param="image",
                suggestions=["use i2v-A14B or ti2v-5B for image-to-video", "or leave out the image"],
            )
        image = load_image(request.image)
    elif spec.image == IMAGE_REQUIRED:
        raise InvalidParamsError(
            f"image: {model_id} animates an input image, and none was given",
            param="image",
            suggestions=["pass --image PATH (PNG, JPEG or WebP)", "or use t2v-A14B or ti2v-5B for text-to-video"],
        )

    width, height = _size(defaults, limits, request, image, where)
    if variant != "dev" and spec.trained_sizes and (width, height) not in spec.trained_sizes:
        trained = ", ".join(f"{w}x{h}" for w, h in spec.trained_sizes)
        warnings.append(f"{width}x{height} is not a resolution {model_id} was trained at ({trained}); quality may suffer")

    num_frames = _frames(request.num_frames, defaults.num_frames, limits, where)
    fps = _int_in("fps", request.fps, defaults.fps, limits.min_fps, limits.max_fps, where)
    steps = _int_in("steps", request.steps, defaults.steps, 1, limits.max_steps, where)
    guidance = _float_in("guidance_scale", request.guidance_scale, defaults.guidance_scale, 0.0, limits.max_guidance, where)
    guidance_2 = request.guidance_scale_2
    if spec.experts < 2 and guidance_2 is not None:
        raise InvalidParamsError(
            f"guidance_scale_2 sets the low-noise expert's guidance; {model_id} has a single denoiser",
            param="guidance_scale_2",
            suggestions=["leave out guidance_scale_2 and set guidance_scale"],
        )
    if spec.experts >= 2:
        # As in diffusers: a guidance_scale given alone applies to both experts.
        fallback = guidance if request.guidance_scale is not None or defaults.guidance_scale_2 is None else defaults.guidance_scale_2
        guidance_2 = _float_in("guidance_scale_2", guidance_2, fallback, 0.0, limits.max_guidance, where)
    flow_shift = request.flow_shift
    if flow_shift is not None or defaults.flow_shift is not None:
        flow_shift = _float_in("flow_shift", flow_shift, defaults.flow_shift or 1.0, 0.1, 30.0, where)
    seed = secrets.randbelow(2**32) if request.seed is None else _int_in("seed", request.seed, 0, 0, MAX_SEED, where)

    if image is not None:
        image = fit_image(image, width, height)
    params = GenerationParams(
        prompt=prompt,
        negative_prompt=negative,
        width=width,
        height=height,
        num_frames=num_frames,
        fps=fps,
        steps=steps,
        guidance_scale=guidance,
        guidance_scale_2=guidance_2,
        flow_shift=flow_shift,
        seed=seed,
        image=image,
    )
    return params, warnings


def _text(value: Any, name: str, limits: Limits, where: str, *, required: bool) -> str:
    if not isinstance(value, str):
        raise InvalidParamsError(f"{name} must be text {where}", param=name)
    if required and not value.strip():
        raise InvalidParamsError(
            f"{name} is empty: describe the video to make {where}",
            param=name,
            suggestions=['--prompt "a red fox runs through fresh snow, morning light"'],
        )
    if len(value) > limits.max_prompt_chars:
        raise InvalidParamsError(
            f"{name} has {len(value)} characters; at most {limits.max_prompt_chars} are allowed {where}",
            param=name,
            suggestions=[f"shorten the {name} to {limits.max_prompt_chars} characters"],
        )
    return value.strip()


def _size(defaults: Defaults, limits: Limits, request: GenerationRequest, image: Any, where: str) -> tuple[int, int]:
    if request.width is None and request.height is None:
        if image is None:
            return defaults.width, defaults.height
        return size_for_aspect(image.width / image.height, defaults.width * defaults.height, limits)
    if request.width is None or request.height is None:
        raise InvalidParamsError(f"give both width and height, or neither, {where}", param="size")
    width, height = request.width, request.height
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidParamsError(f"{name} must be a whole number of pixels {where}", param="size")
    nearest = nearest_size(width, height, limits)
    if (width, height) != nearest:
        m = limits.size_multiple
        raise InvalidParamsError(
            f"size {width}x{height} is not valid {where}: width and height must be multiples of {m} between "
            f"{limits.min_side} and {limits.max_side}, at most {limits.max_pixels} pixels in all; "
            f"nearest valid value: {nearest[0]}x{nearest[1]}",
            param="size",
            suggestions=[f"--size {nearest[0]}x{nearest[1]}"],
        )
    return width, height


def nearest_size(width: int, height: int, limits: Limits) -> tuple[int, int]:
    """The valid size closest to width x height, keeping the aspect ratio (the server maps `size` with it)."""
    width, height = max(width, 1), max(height, 1)
    # Shrink to the side and pixel limits first, both sides together, so that the aspect ratio holds.
    scale = min(1.0, limits.max_side / max(width, height), math.sqrt(limits.max_pixels / (width * height)))
    width, height = int(width * scale), int(height * scale)
    m = limits.size_multiple

    def snap(value: int) -> int:
        return min(max(max(1, round(value / m)) * m, limits.min_side), limits.max_side)

    w, h = snap(width), snap(height)
    while w * h > limits.max_pixels:  # rounding up can pass the pixel budget: shrink the longer side
        if w >= h:
            w -= m
        else:
            h -= m
    return w, h


def size_for_aspect(aspect: float, area: int, limits: Limits) -> tuple[int, int]:
    """The valid size nearest to `area` pixels with the given width/height ratio (for input images)."""
    height = math.sqrt(area / aspect)
    return nearest_size(round(height * aspect), round(height), limits)


def _frames(value: Any, default: int, limits: Limits, where: str) -> int:
    if value is None:
        return default
    k = limits.frame_multiple
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidParamsError(f"num_frames must be a whole number {where}", param="num_frames")
    nearest = min(max(round((value - 1) / k) * k + 1, limits.min_frames), limits.max_frames)
    if value != nearest:
        raise InvalidParamsError(
            f"num_frames {value} is not valid {where}: it must be {k}n+1 between {limits.min_frames} and "
            f"{limits.max_frames}; nearest valid value: {nearest}",
            param="num_frames",
            suggestions=[f"--frames {nearest}"],
        )
    return value


def _int_in(name: str, value: Any, default: int, low: int, high: int, where: str) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidParamsError(f"{name} must be a whole number between {low} and {high} {where}", param=name)
    if not low <= value <= high:
        nearest = min(max(value, low), high)
        raise InvalidParamsError(
            f"{name} {value} is out of range {where}: allowed {low} to {high}; nearest valid value: {nearest}",
            param=name,
        )
    return value


def _float_in(name: str, value: Any, default: float, low: float, high: float, where: str) -> float:
    if value is None:
        return float(default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise InvalidParamsError(f"{name} must be a number between {low:g} and {high:g} {where}", param=name)
    if not low <= value <= high:
        nearest = min(max(value, low), high)
        raise InvalidParamsError(
            f"{name} {value:g} is out of range {where}: allowed {low:g} to {high:g}; nearest valid value: {nearest:g}",
            param=name,
        )
    return float(value)
