"""`POST /v1/videos` bodies (JSON or multipart) into a `GenerationRequest`, every field checked first.

The OpenAI fields (`model`, `prompt`, `seconds`, `size`, `input_reference`) mean what they mean there and
are mapped onto the chosen architecture: `seconds` becomes frames at the model's frame rate on its 4n+1
grid, `size` the nearest size on its pixel grid; any such adjustment is reported in `warnings`. Our
extensions (`variant`, `negative_prompt`, `num_inference_steps`, `guidance_scale`, `num_frames`, `fps`,
`seed`, `loras`, `memory_profile`, `allow_fallback`) win over what the OpenAI fields imply. Unknown fields
are refused with the closest known name, as a typo would otherwise be silently ignored.

Multipart bodies carry text only, so numbers are parsed here (strictly: `"3.5"` is no step count); the
official client sends lists of objects as `loras[][name]` / `loras[][weight]`, which are zipped back (a
single `loras` field holding the JSON list works too).
"""

from __future__ import annotations

import base64
import binascii
import difflib
import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any, Mapping

from wanstudio.engine.lora import lora_requests_from_json
from wanstudio.engine.params import GenerationRequest, nearest_size, parse_size_text
from wanstudio.engine.registry import family_for, spec_of
from wanstudio.errors import InvalidParamsError, PayloadTooLargeError, WanError
from wanstudio.orchestrator.manifest import Manifest

DEFAULT_MODEL = "ti2v-5B"
"""The model used when a request names none: the one that fits consumer GPUs and does both tasks."""

_INT_FIELDS = ("num_inference_steps", "num_frames", "fps", "seed")
_FLOAT_FIELDS = ("guidance_scale",)
_TEXT_FIELDS = ("model", "prompt", "variant", "negative_prompt", "size", "memory_profile")
KNOWN_FIELDS = (
    *_TEXT_FIELDS,
    "seconds",
    "input_reference",
    *_INT_FIELDS,
    *_FLOAT_FIELDS,
    "loras",
    "allow_fallback",
)
_API_FIELDS = {
    "steps": "num_inference_steps",
    "frames": "num_frames",
    "image": "input_reference",
    "lora": "loras",
    "memory-profile": "memory_profile",
    "allow-fallback": "allow_fallback",
}
_CLI_FLAG = re.compile(r"--([a-z][a-z_-]*) ")


@dataclass(frozen=True)
class ParsedVideoRequest:
    """A checked request: what the engine validates next, and the notes to show the user."""

    request: GenerationRequest
    image: bytes | None
    warnings: tuple[str, ...]


def fields_from_form(items: list[tuple[str, Any]]) -> dict[str, Any]:
    """Multipart form items into request fields: `loras[][name]`/`loras[][weight]` become a list of objects."""
    fields: dict[str, Any] = {}
    lora_names: list[str] = []
    lora_weights: list[str] = []
    lora_weights_2: list[str] = []
    for key, value in items:
        if key == "loras[][name]":
            lora_names.append(value)
        elif key == "loras[][weight]":
            lora_weights.append(value)
        elif key == "loras[][weight_2]":
            lora_weights_2.append(value)
        elif key in fields:
            raise InvalidParamsError(f"{key} is given more than once", param=key)
        else:
            fields[key] = value
    if lora_names or lora_weights or lora_weights_2:
        if len(lora_weights) not in (0, len(lora_names)) or len(lora_weights_2) not in (0, len(lora_names)):
            raise InvalidParamsError(
                "loras: every LoRA needs a name, and a weight for each or for none", param="loras"
            )
        fields["loras"] = [
            {
                "name": name,
                **({"weight": _float(lora_weights[i], "loras", True)} if lora_weights else {}),
                **({"weight_2": _float(lora_weights_2[i], "loras", True)} if lora_weights_2 else {}),
            }
            for i, name in enumerate(lora_names)
        ]
    return fields


def as_api_error(error: WanError) -> WanError:
    """`error` in the API's words: the engine and the manifest name the CLI's parameters and flags (param
    `steps`, "--frames 9"), while an API caller sent fields (`num_inference_steps`, `num_frames`)."""
    if error.param == "lora":  # the engine's catalogue lookup: its hints name files, while a client uploads
        error.suggestions = [
            "upload the LoRA: POST /v1/loras with the .safetensors file and a name",
            "see what is there: GET /v1/loras",
        ]
    else:
        error.suggestions = [
            _CLI_FLAG.sub(lambda flag: _API_FIELDS.get(flag[1], flag[1].replace("-", "_")) + "=", text)
            for text in error.suggestions
        ]
    if error.param is not None:
        error.param = _API_FIELDS.get(error.param, error.param)
    return error


def parse_video_request(
    fields: Mapping[str, Any],
    upload: bytes | None,
    manifest: Manifest,
    *,
    max_upload_bytes: int,
    from_form: bool,
) -> ParsedVideoRequest:
    """Check every field of a create request; INVALID_PARAMS (or PAYLOAD_TOO_LARGE) names the first bad one."""
    unknown = [name for name in fields if name not in KNOWN_FIELDS]
    if unknown:
        name = unknown[0]
        close = difflib.get_close_matches(name, KNOWN_FIELDS, n=1)
        raise InvalidParamsError(
            f"unknown field {name!r}; known fields are {', '.join(KNOWN_FIELDS)}",
            param=name,
            suggestions=[f"did you mean {close[0]!r}?"] if close else [],
        )
    text = {name: _text(fields.get(name), name) for name in _TEXT_FIELDS}
    if text["prompt"] is None:
        raise InvalidParamsError(
            "prompt is required: describe the video to make",
            param="prompt",
            suggestions=['"prompt": "a red fox runs through fresh snow, morning light"'],
        )
    numbers: dict[str, Any] = {name: _int(fields.get(name), name, from_form) for name in _INT_FIELDS}
    numbers.update({name: _float(fields.get(name), name, from_form) for name in _FLOAT_FIELDS})
    loras = lora_requests_from_json(_form_loras(fields.get("loras")) if from_form else fields.get("loras"))
    allow_fallback = _bool(fields.get("allow_fallback"), "allow_fallback", from_form)

    image = (
        upload if upload is not None else _image_reference(fields.get("input_reference"), max_upload_bytes)
    )
    if image is not None and len(image) > max_upload_bytes:
        raise PayloadTooLargeError(
            f"input_reference is {len(image)} bytes; this server accepts images up to {max_upload_bytes} bytes",
            param="input_reference",
            suggestions=[
                "send a smaller image (the model scales it to the video size anyway)",
                "or raise WAN_MAX_UPLOAD_BYTES on the server",
            ],
        )
    if image is not None and not image:
        raise InvalidParamsError(
            "input_reference is an empty file",
            param="input_reference",
            suggestions=["upload a PNG, JPEG or WebP image"],
        )

    model = manifest.resolve(text["model"] or DEFAULT_MODEL)
    variant = model.variant(text["variant"]) if text["variant"] else model.variant()
    spec = spec_of(family_for(model), model)
    defaults = spec.defaults_for(variant.name)
    warnings: list[str] = []

    request = GenerationRequest(
        model=model.id,
        prompt=text["prompt"],
        variant=variant.name,
        image=image,
        negative_prompt=text["negative_prompt"],
        num_frames=numbers["num_frames"],
        fps=numbers["fps"],
        steps=numbers["num_inference_steps"],
        guidance_scale=numbers["guidance_scale"],
        seed=numbers["seed"],
        memory_profile=text["memory_profile"],
        allow_fallback=allow_fallback,
        loras=loras,
    )
    if text["size"] is not None:
        width, height = parse_size_text(text["size"])
        if width < 1 or height < 1:
            raise InvalidParamsError(f"size {text['size']!r} has a zero side", param="size")
        snapped = nearest_size(width, height, spec.limits)
        if snapped != (width, height):
            warnings.append(
                f"size {width}x{height} is not on {model.id}'s grid; made {snapped[0]}x{snapped[1]}"
            )
        request = replace(request, width=snapped[0], height=snapped[1])

    seconds = _seconds(fields.get("seconds"))
    if seconds is not None and request.num_frames is None:
        fps = request.fps or defaults.fps
        limits = spec.limits
        wanted = round(seconds * fps) + 1
        frames = min(
            max(round((wanted - 1) / limits.frame_multiple) * limits.frame_multiple + 1, limits.min_frames),
            limits.max_frames,
        )
        if abs(frames - wanted) > limits.frame_multiple:
            warnings.append(
                f"{seconds:g} s is outside what {model.id} makes at {fps} fps "
                f"({(limits.min_frames - 1) / fps:.2f} to {(limits.max_frames - 1) / fps:.2f} s); "
                f"made {(frames - 1) / fps:.2f} s ({frames} frames)"
            )
        request = replace(request, num_frames=frames)
    return ParsedVideoRequest(request, image, tuple(warnings))


def _text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidParamsError(f"{name} must be text, not {type(value).__name__}", param=name)
    if "\x00" in value:
        raise InvalidParamsError(f"{name} contains a NUL character", param=name)
    return value


def _int(value: Any, name: str, from_form: bool) -> int | None:
    if value is None or (from_form and value == ""):
        return None
    if from_form and isinstance(value, str):
        stripped = value.strip()
        if stripped.lstrip("-").isdigit():
            return int(stripped)
    elif isinstance(value, int) and not isinstance(value, bool):
        return value
    raise InvalidParamsError(f"{name} must be a whole number, not {value!r}", param=name)


def _float(value: Any, name: str, from_form: bool) -> float | None:
    if value is None or (from_form and value == ""):
        return None
    number: float | None = None
    if from_form and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    if number is None or not math.isfinite(number):
        raise InvalidParamsError(f"{name} must be a number, not {value!r}", param=name)
    return number


def _seconds(value: Any) -> float | None:
    """`seconds`: the OpenAI client sends text ("4"); JSON callers may send a number."""
    if value is None or value == "":
        return None
    try:
        seconds = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0 or seconds > 600:
        raise InvalidParamsError(
            f"seconds must be a positive number of seconds (at most 600), not {value!r}",
            param="seconds",
            suggestions=['"seconds": "4"'],
        )
    return seconds


def _form_loras(value: Any) -> Any:
    """`loras` in a form: the zipped `loras[][...]` list, or one text field holding the JSON list."""
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise InvalidParamsError(
                'loras must be a JSON list like [{"name": "my_style", "weight": 0.8}]', param="loras"
            ) from None
    return value


def _bool(value: Any, name: str, from_form: bool) -> bool:
    if value is None or (from_form and value == ""):
        return False
    if isinstance(value, bool):
        return value
    if from_form and isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise InvalidParamsError(f"{name} must be true or false, not {value!r}", param=name)


def _image_reference(value: Any, max_upload_bytes: int) -> bytes | None:
    """A JSON `input_reference`: `{"image_url": "data:image/...;base64,..."}`. URLs are never fetched."""
    if value is None:
        return None
    if isinstance(value, str):  # a multipart text field where a file was expected
        raise InvalidParamsError(
            "input_reference must be an uploaded image file",
            param="input_reference",
            suggestions=["send it as a file part of a multipart/form-data request"],
        )
    if not isinstance(value, dict) or set(value) - {"image_url", "file_id"}:
        raise InvalidParamsError(
            'input_reference must be {"image_url": "data:image/png;base64,..."} or a file upload',
            param="input_reference",
        )
    url = value.get("image_url")
    if not isinstance(url, str) or not url.startswith("data:"):
        raise InvalidParamsError(
            "input_reference: this server does not fetch images from URLs or file ids",
            param="input_reference",
            suggestions=[
                "upload the image as a file (multipart/form-data)",
                'or send it inline: {"image_url": "data:image/png;base64,..."}',
            ],
        )
    header, _, payload = url.partition(",")
    if not header.endswith(";base64"):
        raise InvalidParamsError(
            "input_reference: the data URL must be base64 encoded", param="input_reference"
        )
    if len(payload) * 3 // 4 > max_upload_bytes:
        raise PayloadTooLargeError(
            f"input_reference is over {max_upload_bytes} bytes",
            param="input_reference",
            suggestions=["send a smaller image", "or raise WAN_MAX_UPLOAD_BYTES on the server"],
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParamsError(
            "input_reference: the data URL is not valid base64", param="input_reference"
        ) from None
