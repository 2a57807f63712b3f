"""Shared fixtures: small media files written with PyAV, and the shared real-data folder."""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def write_clip(
    path: Path,
    seconds: float = 1.0,
    fps: int = 25,
    size: int = 64,
    audio: bool = True,
    video: bool = True,
    frame=None,
    sample_rate: int = 16000,
) -> Path:
    """An h264/AAC clip (PCM audio only for .wav); ``frame(i) -> HxWx3 uint8`` draws the
    frames (default: a flat grey that changes per frame)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        if video:
            vstream = container.add_stream("libx264", rate=fps)
            vstream.width = vstream.height = size
            vstream.pix_fmt = "yuv420p"
        if audio:
            astream = container.add_stream("pcm_s16le" if path.suffix == ".wav" else "aac", rate=sample_rate)
            astream.layout = "mono"
        if video:
            for i in range(int(seconds * fps)):
                image = frame(i) if frame else np.full((size, size, 3), (i * 7) % 255, np.uint8)
                for packet in vstream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in vstream.encode():
                container.mux(packet)
        if audio:
            t = np.arange(int(seconds * sample_rate)) / sample_rate
            tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
            chunk = 1024
            for start in range(0, len(tone), chunk):
                piece = tone[start : start + chunk].reshape(1, -1)
                if path.suffix == ".wav":
                    piece = (piece * 32767).astype(np.int16)
                audio_frame = av.AudioFrame.from_ndarray(piece, format="s16" if path.suffix == ".wav" else "flt", layout="mono")
                audio_frame.sample_rate = sample_rate
                audio_frame.pts = start
                audio_frame.time_base = Fraction(1, sample_rate)
                for packet in astream.encode(audio_frame):
                    container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)
    return path


@pytest.fixture
def clip_factory(tmp_path):
    def make(name: str = "clip.mp4", **kwargs) -> Path:
        return write_clip(tmp_path / name, **kwargs)

    return make


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real corpora folder named by AVER_SHARED_DATA (``.ci/run`` sets it)."""
    root = os.environ.get("AVER_SHARED_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("AVER_SHARED_DATA is not set to the shared data folder")
    return Path(root)
