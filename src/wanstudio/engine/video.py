"""Frames to MP4 (H.264, yuv420p, faststart) through PyAV, written so that no half-written file is visible.

H.264 in yuv420p with the index at the front (``faststart``) is what every browser, phone and editor plays,
and what a web page can start streaming before the whole file arrived.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from wanstudio.orchestrator._fsutil import unique_name

if TYPE_CHECKING:
    import numpy as np

# Constant quality: 18 is visually lossless for most content; "medium" is x264's speed/size balance.
# MB-tree rate control is off because, once torch is loaded in the process, it made the same frames
# encode to different bytes from run to run (measured at 64x32); without it the same seed gives the
# same file, at the cost of a few percent of bitrate.
X264_OPTIONS = {"crf": "18", "preset": "medium", "x264-params": "mbtree=0"}
# BT.709, limited range ("TV" levels): what HD video is, and what players assume for it. Tagged in the
# stream so that no player has to guess.
_BT709 = 1
_LIMITED_RANGE = 1


@dataclass(frozen=True)
class VideoInfo:
    """What a decoder finds in an MP4: used by tests, the server and anyone checking an output."""

    frames: int
    width: int
    height: int
    fps: float
    codec: str
    pixel_format: str


def to_uint8(frames: "np.ndarray") -> "np.ndarray":
    """(frames, height, width, 3) floats in [0, 1] (or uint8 already) as uint8 RGB."""
    import numpy as np

    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def rgb_to_yuv420p(frame: "np.ndarray") -> "np.ndarray":
    """One uint8 RGB frame (height, width, 3) as planar YUV 4:2:0, BT.709 limited range, chroma averaged
    over 2x2 blocks: the (height * 3 / 2, width) layout PyAV takes for ``yuv420p``.

    Converting here, with the BT.709 matrix the stream is tagged with, means players show the colours the
    model made (libswscale's default for this conversion is the BT.601 matrix).
    """
    import numpy as np

    rgb = frame.astype(np.float32) / 255.0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    height, width = y.shape
    luma = 16.0 + 219.0 * y
    cb = ((b - y) / 1.8556).reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
    cr = ((r - y) / 1.5748).reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
    planes = [luma.ravel(), (128.0 + 224.0 * cb).ravel(), (128.0 + 224.0 * cr).ravel()]
    yuv = np.clip(np.rint(np.concatenate(planes)), 0, 255).astype(np.uint8)
    return yuv.reshape(height * 3 // 2, width)


def write_mp4(frames: "np.ndarray", path: Path, fps: int) -> Path:
    """Encode RGB `frames` (frames, height, width, 3) at `fps` into `path`, replacing it in one rename."""
    import av

    pixels = to_uint8(frames)
    count, height, width, channels = pixels.shape
    if count == 0 or channels != 3 or width % 2 or height % 2:
        raise ValueError(f"cannot encode {count} frames of {width}x{height}x{channels}: need RGB with even sides")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.parent / f".{unique_name(path.stem)}.part"
    try:
        with av.open(str(partial), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = dict(X264_OPTIONS)
            context = stream.codec_context
            context.color_primaries = context.color_trc = context.colorspace = _BT709
            context.color_range = _LIMITED_RANGE
            for index, frame in enumerate(pixels):
                picture = av.VideoFrame.from_ndarray(rgb_to_yuv420p(frame), format="yuv420p")
                picture.pts = index  # x264's rate control reads frame times: leave none to chance
                for packet in stream.encode(picture):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def probe_video(path: Path) -> VideoInfo:
    """Decode every frame of the MP4 at `path` and describe it."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return VideoInfo(
            frames=count,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=float(stream.average_rate or stream.guessed_rate or 0),
            codec=stream.codec_context.name,
            pixel_format=stream.codec_context.pix_fmt or "",
        )
