"""Decoding of any container through PyAV: probing, sampled video frames with their
presentation timestamps, and the audio track resampled to mono float32."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import av
import numpy as np


class MediaError(RuntimeError):
    """A media file cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclass(frozen=True)
class MediaInfo:
    """What a file offers. ``has_video`` / ``has_audio`` are true only for a stream that
    decodes; a stream that is present but broken is named in ``unusable`` with its problem,
    so that a clip keeps its good stream (a bad audio track next to a good video)."""

    duration_s: float
    has_video: bool
    has_audio: bool
    fps: float
    width: int
    height: int
    sample_rate: int
    unusable: dict[str, str] = field(default_factory=dict)  # "video" / "audio" -> problem


def _open(path: str | Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.exists():
        raise MediaError(path, "file does not exist")
    if path.stat().st_size == 0:
        raise MediaError(path, "file is empty (0 bytes)")
    try:
        return av.open(str(path))
    except av.FFmpegError as error:
        raise MediaError(path, f"cannot open container: {error}") from None


def probe(path: str | Path) -> MediaInfo:
    """Read stream metadata and decode the first frame of each stream, so a file whose
    header parses but whose payload is garbage is caught here, not in a later stage. A
    MediaError only when no stream at all is usable."""
    with _open(path) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is None and audio is None:
            raise MediaError(path, "no audio or video stream")
        unusable = _first_frame_problems(container, [s for s in (video, audio) if s is not None])
        video = None if "video" in unusable else video
        audio = None if "audio" in unusable else audio
        if video is None and audio is None:
            raise MediaError(path, "; ".join(unusable.values()))
        durations = []
        if container.duration:
            durations.append(container.duration / av.time_base)
        for stream in (video, audio):
            if stream is not None and stream.duration and stream.time_base:
                durations.append(float(stream.duration * stream.time_base))
        if not durations:
            raise MediaError(path, "duration unknown")
        return MediaInfo(
            duration_s=max(durations),
            has_video=video is not None,
            has_audio=audio is not None,
            fps=float(video.average_rate) if video is not None and video.average_rate else 0.0,
            width=video.codec_context.width if video is not None else 0,
            height=video.codec_context.height if video is not None else 0,
            sample_rate=audio.codec_context.sample_rate if audio is not None else 0,
            unusable=unusable,
        )


def _first_frame_problems(container: av.container.InputContainer, streams: list) -> dict[str, str]:
    """Demux once (some containers, e.g. FLV, cannot seek) until every stream gave a frame
    or failed; returns the problem of each stream that gave none."""
    waiting = {stream.index: stream for stream in streams}
    problems: dict[str, str] = {}
    try:
        for packet in container.demux(*streams):
            stream = waiting.get(packet.stream.index)
            if stream is None:
                continue
            try:
                if packet.decode():
                    del waiting[stream.index]
            except av.FFmpegError as error:
                problems[stream.type] = f"{stream.type} stream does not decode: {error}"
                del waiting[stream.index]
            if not waiting:
                break
    except av.FFmpegError as error:  # the container itself breaks off
        for stream in waiting.values():
            problems[stream.type] = f"{stream.type} stream does not decode: {error}"
        waiting.clear()
    for stream in waiting.values():
        problems[stream.type] = f"{stream.type} stream has no decodable frame"
    return problems


def sample_frames(path: str | Path, fps: float, threads: int = 0) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (timestamp_s, RGB uint8 frame) at about ``fps`` frames per second.

    ``threads``: decoder threads (0: FFmpeg's choice, one per core). A stage that already
    runs one worker per core decodes with 1: frame threading on top costs up to twice the
    CPU per frame (256x256 MEAD clips: 0.51 vs 1.14 CPU-s for 1233 frames) for no speed
    when every core is busy anyway. The pixels are the same either way.

    Every frame is decoded (inter-frame codecs need it) but only the sampled ones are
    converted to RGB, which is the expensive part at low sampling rates. A frame is taken
    when its presentation time reaches the next sampling instant, so timestamps are the
    true PTS of the frames used. A stream that stops decoding part-way (a truncated file)
    ends there; only one that decodes no frame at all is an error (callers compare the
    decoded duration with the declared one).
    """
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(path, "no video stream")
        stream = container.streams.video[0]
        if threads == 1:
            stream.thread_type, stream.thread_count = "SLICE", 1
        else:
            stream.thread_type, stream.thread_count = "AUTO", max(threads, 0)
        step = 1.0 / fps
        next_time = 0.0
        decoded = False
        try:
            for frame in container.decode(stream):
                decoded = True
                if frame.pts is None:
                    continue
                time_s = float(frame.pts * stream.time_base)
                if time_s + 1e-6 < next_time:
                    continue
                yield time_s, frame.to_ndarray(format="rgb24")
                next_time = max(next_time + step, time_s + step / 2)
        except av.FFmpegError as error:
            if not decoded:
                raise MediaError(path, f"video decoding failed: {error}") from None


# libswresample's default matrix adds the channels at up to -3 dB each (stereo to mono
# peaks at 1.41, 5.1 at 3.4 for a signal on every channel); normalised, each output's
# coefficients sum to 1, so a mix of full-scale channels stays within full scale. The LFE
# channel is left out, as in FFmpeg's default.
DOWNMIX_OPTIONS = {"rematrix_maxval": "1.0"}


def load_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """The first audio stream as mono float32 in [-1, 1] at ``sample_rate``: channels
    mixed down with a normalised matrix, and lossy decoders' overshoot past full scale
    clipped. A stream whose sample rate or layout changes part-way (concatenated
    recordings) is resampled piece by piece; a stream that stops decoding part-way ends
    there (see :func:`sample_frames`)."""
    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError(path, "no audio stream")
        resampler, source = None, None
        chunks = []
        try:
            try:
                for frame in container.decode(container.streams.audio[0]):
                    layout = (frame.format.name, frame.layout.name, frame.sample_rate)
                    if layout != source:
                        if resampler is not None:
                            chunks += _resampled(resampler, None)
                        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate, options=DOWNMIX_OPTIONS)
                        source = layout
                    chunks += _resampled(resampler, frame)
            except av.FFmpegError:
                if not chunks:
                    raise
            if resampler is not None:
                chunks += _resampled(resampler, None)
        except av.FFmpegError as error:
            raise MediaError(path, f"audio decoding failed: {error}") from None
    if not chunks:
        raise MediaError(path, "audio stream has no samples")
    return np.clip(np.concatenate(chunks), -1.0, 1.0).astype(np.float32, copy=False)


def _resampled(resampler: av.AudioResampler, frame: av.AudioFrame | None) -> list[np.ndarray]:
    return [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]


def frame_count(path: str | Path) -> int:
    """The number of frames of the file's first video stream, from its packets (no decoding;
    the container's frame count is unreliable for some formats); 0 without video."""
    with _open(path) as container:
        if not container.streams.video:
            return 0
        return sum(1 for packet in container.demux(video=0) if packet.size)
