"""The mock video of WAN_ALLOW_MOCK=1: a test pattern that nobody can take for a generated video.

Colour bars, a white bar sweeping across them frame by frame (so players show motion), and a black
box with "MOCK" in it. Only made when the real pipeline could not run and the setting allows it; the
result, its sidecar and the JSON output say ``"mock": true``.
"""

from __future__ import annotations

import numpy as np

_BARS = np.array([  # the SMPTE colour bars, 75% white to blue
    [0.75, 0.75, 0.75], [0.75, 0.75, 0.0], [0.0, 0.75, 0.75], [0.0, 0.75, 0.0],
    [0.75, 0.0, 0.75], [0.75, 0.0, 0.0], [0.0, 0.0, 0.75],
], dtype=np.float32)


def mock_frames(width: int, height: int, frames: int) -> np.ndarray:
    """Frames (frames, height, width, 3) in [0, 1]: colour bars, a moving white bar, a "MOCK" label."""
    columns = np.minimum(np.arange(width) * len(_BARS) // max(width, 1), len(_BARS) - 1)
    still = np.broadcast_to(_BARS[columns][None, :, :], (height, width, 3)).copy()
    label = _label(width, height)
    video = np.empty((frames, height, width, 3), dtype=np.float32)
    bar = max(width // 16, 1)
    for t in range(frames):
        frame = still.copy()
        x = (t * max(width // max(frames, 1), 1)) % width
        frame[:, x:x + bar] = 1.0
        if label is not None:
            h, w = label.shape
            frame[:h, :w] = label[:, :, None]
        video[t] = frame
    return video


def _label(width: int, height: int) -> np.ndarray | None:
    """"MOCK" in white on black, as a (h, w) mask that fits the frame, or None when the frame is too small."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), "MOCK", font=font)
    w, h = right - left + 6, bottom - top + 6
    if w > width or h > height:
        return None
    image = Image.new("L", (w, h), 0)
    ImageDraw.Draw(image).text((3 - left, 3 - top), "MOCK", fill=255, font=font)
    return np.asarray(image, dtype=np.float32) / 255.0
