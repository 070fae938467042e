"""Frames to MP4: H.264 yuv420p with faststart, BT.709 tagged, colours kept, same frames give the same file."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch  # noqa: F401  (loaded on purpose: with torch in the process the encoder once varied run to run)

from wanstudio.engine.video import probe_video, write_mp4


def stripes(frames: int = 9, height: int = 32, width: int = 64) -> np.ndarray:
    video = np.zeros((frames, height, width, 3), dtype=np.float32)
    video[:, :, : width // 2] = (1.0, 0.0, 0.0)
    video[:, :, width // 2 :] = (0.2, 0.6, 0.9)
    video += np.random.default_rng(0).random(video.shape, dtype=np.float32) * 0.05
    return np.clip(video, 0, 1)


def test_the_same_frames_encode_to_the_same_bytes(tmp_path: Path) -> None:
    frames = stripes()
    digests = {write_mp4(frames, tmp_path / f"{i}.mp4", 16).read_bytes() for i in range(6)}
    assert len(digests) == 1


def test_the_file_plays_everywhere_and_keeps_its_colours(tmp_path: Path) -> None:
    path = write_mp4(stripes(), tmp_path / "v.mp4", 24)
    info = probe_video(path)
    assert (info.frames, info.width, info.height, info.fps, info.codec, info.pixel_format) == (9, 64, 32, 24.0, "h264", "yuv420p")
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # faststart: the index comes first
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.colorspace, stream.codec_context.color_range) == (1, 1)  # BT.709, limited
        frame = next(container.decode(stream)).to_ndarray(format="rgb24", dst_colorspace=av.video.reformatter.Colorspace.ITU709)
    assert np.abs(frame[16, 8].astype(int) - (255, 0, 0)).max() < 24
    assert np.abs(frame[16, 56].astype(int) - (51, 153, 230)).max() < 24
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]  # no temporary file left


def test_unencodable_frames_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_mp4(np.zeros((3, 31, 64, 3), dtype=np.float32), tmp_path / "odd.mp4", 16)
    assert list(tmp_path.iterdir()) == []
