from fractions import Fraction

import av
import numpy as np
import pytest

from pipeline.media import MediaError, load_audio, probe, sample_frames


def test_probe_reads_streams_and_duration(clip_factory):
    info = probe(clip_factory(seconds=2.0, fps=25, size=64))
    assert info.has_video and info.has_audio
    assert info.fps == pytest.approx(25.0)
    assert (info.width, info.height) == (64, 64)
    assert info.duration_s == pytest.approx(2.0, abs=0.1)


def test_probe_video_only(clip_factory):
    info = probe(clip_factory(audio=False))
    assert info.has_video and not info.has_audio


@pytest.mark.parametrize(
    "content, problem",
    [(b"", "empty"), (b"\x00\x01garbage" * 100, "cannot open container")],
)
def test_probe_rejects_unusable_files_naming_them(tmp_path, content, problem):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(MediaError, match=problem) as caught:
        probe(path)
    assert str(path) in str(caught.value)


def test_probe_rejects_truncated_file(clip_factory, tmp_path):
    good = clip_factory(seconds=1.0).read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(good[:300] + bytes(np.random.default_rng(0).integers(0, 255, 4000, dtype=np.uint8)))
    with pytest.raises(MediaError):
        probe(path)


def test_sample_frames_uses_presentation_times(clip_factory):
    frames = list(sample_frames(clip_factory(seconds=2.0, fps=25), fps=5))
    times = np.array([t for t, _ in frames])
    assert len(frames) == 10
    np.testing.assert_allclose(np.diff(times), 0.2, atol=1e-6)
    assert frames[0][1].shape == (64, 64, 3) and frames[0][1].dtype == np.uint8


def test_decoder_threads_change_no_pixel(clip_factory):
    clip = clip_factory(seconds=2.0, fps=25, size=96)
    single = list(sample_frames(clip, fps=10, threads=1))
    for threads in (0, 2):
        threaded = list(sample_frames(clip, fps=10, threads=threads))
        assert [t for t, _ in threaded] == [t for t, _ in single]
        for (_, a), (_, b) in zip(threaded, single):
            np.testing.assert_array_equal(a, b)


def test_faces_workers_decode_with_their_share_of_the_cores(monkeypatch):
    import os

    from pipeline.extraction import decoder_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert decoder_threads("local", 8) == 1   # a worker per core: no frame threading on top
    assert decoder_threads("local", 16) == 1
    assert decoder_threads("local", 2) == 4
    assert decoder_threads("local", 1) == 8
    assert decoder_threads("ray", 2) == 0     # a cluster's nodes: FFmpeg's own choice


def test_load_audio_resamples_to_mono(clip_factory):
    samples = load_audio(clip_factory(seconds=1.0, sample_rate=16000), sample_rate=8000)
    assert samples.dtype == np.float32
    assert len(samples) == pytest.approx(8000, abs=1200)  # AAC priming/padding
    spectrum = np.abs(np.fft.rfft(samples[1000:5000]))
    assert np.fft.rfftfreq(4000, 1 / 8000)[spectrum.argmax()] == pytest.approx(220, abs=4)


def test_load_audio_without_audio_stream(clip_factory):
    with pytest.raises(MediaError, match="no audio stream"):
        load_audio(clip_factory(audio=False))


def write_audio(path, channels: np.ndarray, sample_rate: int, layout: str, codec: str = "pcm_s16le", fmt: str | None = None):
    """[C, N] float samples as one audio stream (PCM s16 or a float codec such as AAC)."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=sample_rate, layout=layout)
        for start in range(0, channels.shape[1], 1024):
            piece = channels[:, start : start + 1024]
            if codec.startswith("pcm"):
                frame = av.AudioFrame.from_ndarray((piece.T.reshape(1, -1) * 32767).astype(np.int16), format="s16", layout=layout)
            else:
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece, np.float32), format="fltp", layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = sample_rate, start, Fraction(1, sample_rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def tone(sample_rate: int, seconds: float = 1.0, amplitude: float = 0.99, hz: float = 220.0) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * hz * np.arange(int(seconds * sample_rate)) / sample_rate)


@pytest.mark.parametrize("codec", ["pcm_s16le", "aac"])
def test_48k_5_1_downmix_stays_within_full_scale(tmp_path, codec):
    # The same full-scale voice on all five main channels (LFE quieter): FFmpeg's default
    # matrix sums it to 3.4x full scale.
    voice = tone(48000)
    channels = np.stack([voice, voice, voice, 0.3 * voice, voice, voice])
    path = write_audio(tmp_path / ("surround.wav" if codec.startswith("pcm") else "surround.mp4"), channels, 48000, "5.1", codec)
    with av.open(str(path)) as container:
        assert container.streams.audio[0].layout.name == "5.1" and container.streams.audio[0].rate == 48000
    samples = load_audio(path, 16000)
    assert np.abs(samples).max() <= 1.0
    # Normalised, not attenuated: coefficients summing to 1 give the voice back at its level.
    assert np.percentile(np.abs(samples[2000:-2000]), 99.9) == pytest.approx(0.99, abs=0.03)
    assert len(samples) == pytest.approx(16000, abs=100)
    spectrum = np.abs(np.fft.rfft(samples[2000:10000]))
    assert np.fft.rfftfreq(8000, 1 / 16000)[spectrum.argmax()] == pytest.approx(220, abs=3)


def test_stereo_downmix_is_the_mean_of_the_channels(tmp_path):
    left, right = tone(44100, amplitude=0.9), tone(44100, amplitude=0.9, hz=330)
    samples = load_audio(write_audio(tmp_path / "stereo.wav", np.stack([left, right]), 44100, "stereo"), 44100)
    np.testing.assert_allclose(samples[:44000], ((left + right) / 2)[:44000], atol=2e-3)


def test_mono_audio_is_unchanged_by_the_downmix(tmp_path):
    voice = tone(16000, amplitude=0.5)
    samples = load_audio(write_audio(tmp_path / "mono.wav", voice[None], 16000, "mono"), 16000)
    np.testing.assert_allclose(samples, voice, atol=1e-4)  # s16 quantisation


def test_sample_rate_change_mid_stream_is_resampled_piece_by_piece(tmp_path):
    # Two ADTS AAC streams back to back (a recording cut and joined): 1 s mono at 16 kHz,
    # then 1 s stereo at 44.1 kHz.
    first = write_audio(tmp_path / "a.aac", tone(16000, amplitude=0.5)[None], 16000, "mono", "aac", "adts")
    second = write_audio(tmp_path / "b.aac", np.stack([tone(44100, amplitude=0.5, hz=440)] * 2), 44100, "stereo", "aac", "adts")
    joined = tmp_path / "joined.aac"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    samples = load_audio(joined, 16000)
    # ADTS has no edit list: each part keeps its encoder's priming frame and padding
    # (1 + 16 frames of 1024 samples at 16 kHz, 1 + 44 at 44.1 kHz).
    assert len(samples) == pytest.approx(17 * 1024 + 45 * 1024 * 16000 / 44100, abs=5)
    spectrum = lambda part: np.fft.rfftfreq(len(part), 1 / 16000)[np.abs(np.fft.rfft(part)).argmax()]  # noqa: E731
    assert spectrum(samples[2000:14000]) == pytest.approx(220, abs=3)
    assert spectrum(samples[-14000:-2000]) == pytest.approx(440, abs=3)


def garbled_file(path, video: str, audio: str, seed: int = 0):
    """A 1 s mkv: each of ``video`` (64 px, 25 fps) and ``audio`` (16 kHz AAC) is "good",
    "garbage" (the encoder's packet timing with random payloads) or "none"."""
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        streams = []
        if video != "none":
            stream = container.add_stream("libx264", rate=25)
            stream.width = stream.height = 64
            stream.pix_fmt = "yuv420p"
            frames = [av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 9, np.uint8), format="rgb24") for i in range(25)]
            streams.append((stream, video, frames))
        if audio != "none":
            stream = container.add_stream("aac", rate=16000, layout="mono")
            voice = av.AudioFrame.from_ndarray(tone(16000, amplitude=0.3).astype(np.float32)[None], format="flt", layout="mono")
            voice.sample_rate, voice.pts = 16000, 0
            streams.append((stream, audio, [voice]))
        for stream, kind, frames in streams:
            for packet in [p for frame in frames for p in stream.encode(frame)] + list(stream.encode(None)):
                if kind == "garbage":
                    junk = av.Packet(rng.integers(0, 256, max(packet.size, 32), dtype=np.uint8).tobytes())
                    junk.stream, junk.pts, junk.dts, junk.time_base = stream, packet.pts, packet.dts, packet.time_base
                    packet = junk
                container.mux(packet)
    return path


def test_probe_keeps_the_good_video_next_to_a_garbage_audio_track(tmp_path):
    path = garbled_file(tmp_path / "garbage_audio.mkv", video="good", audio="garbage")
    info = probe(path)
    assert info.has_video and not info.has_audio
    assert info.fps == pytest.approx(25.0) and info.duration_s == pytest.approx(1.0, abs=0.1)
    assert set(info.unusable) == {"audio"} and "audio stream does not decode" in info.unusable["audio"]
    assert len(list(sample_frames(path, fps=5))) == 5
    with pytest.raises(MediaError, match="audio decoding failed") as caught:
        load_audio(path)
    assert str(path) in str(caught.value)


def test_probe_keeps_the_audio_next_to_a_garbage_video_track(tmp_path):
    path = garbled_file(tmp_path / "garbage_video.mkv", video="garbage", audio="good")
    info = probe(path)
    assert info.has_audio and not info.has_video and info.fps == 0.0
    assert info.unusable == {"video": "video stream has no decodable frame"}
    assert len(load_audio(path)) == pytest.approx(16000, abs=1500)


@pytest.mark.parametrize("video", ["garbage", "none"])
def test_probe_of_a_file_with_no_usable_stream_names_each_problem(tmp_path, video):
    path = garbled_file(tmp_path / "garbage.mkv", video=video, audio="garbage")
    with pytest.raises(MediaError, match="audio stream does not decode") as caught:
        probe(path)
    assert str(caught.value).startswith(str(path))
    assert ("video stream has no decodable frame" in str(caught.value)) == (video == "garbage")
