"""Input images: decoded from their bytes (never trusted by name), upright, RGB, fitted to the model's grid."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Union

from wanstudio.errors import InvalidParamsError

if TYPE_CHECKING:
    from PIL.Image import Image

ImageInput = Union[str, Path, bytes, "Image"]

# Decompression bombs: refuse images with more pixels than this (a 16k x 16k photo still passes).
MAX_IMAGE_PIXELS = 16384 * 16384


def load_image(source: ImageInput, *, param: str = "image") -> "Image":
    """Decode `source` (a path, raw bytes or a PIL image) into an upright RGB image, or INVALID_PARAMS."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(source, Image.Image):
        image = source
        label = "the given image"
    else:
        label = f"{source}" if isinstance(source, (str, Path)) else f"the uploaded file ({len(source)} bytes)"
        if isinstance(source, (str, Path)) and not Path(source).is_file():
            raise InvalidParamsError(
                f"{param}: {source} does not exist or is not a file", param=param, suggestions=["check the path"]
            )
        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
        try:
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else Path(source))
            image.load()
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError) as exc:
            raise InvalidParamsError(
                f"{param}: {label} is not an image that can be decoded ({type(exc).__name__}: {exc})",
                param=param,
                suggestions=["give a PNG, JPEG or WebP image"],
            ) from None
    image = ImageOps.exif_transpose(image)
    if image.mode != "RGB":
        image = _to_rgb(image)
    return image


def _to_rgb(image: "Image") -> "Image":
    from PIL import Image

    if image.mode in ("RGBA", "LA", "P") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))  # transparent pixels become white, as in browsers
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def fit_image(image: "Image", width: int, height: int) -> "Image":
    """Scale `image` to cover width x height, then crop the centre: no stretching, no borders."""
    from PIL import Image

    if image.size == (width, height):
        return image
    scale = max(width / image.width, height / image.height)
    resized = image.resize(
        (max(width, round(image.width * scale)), max(height, round(image.height * scale))), Image.Resampling.LANCZOS
    )
    left = (resized.width - width) // 2
    top = (resized.height - height) // 2
    return resized.crop((left, top, left + width, top + height))
