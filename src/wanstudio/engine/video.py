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
X264_OPTIONS = {"crf": "18", "preset": "medium"}


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
            for frame in pixels:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
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
