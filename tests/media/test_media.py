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


def test_load_audio_resamples_to_mono(clip_factory):
    samples = load_audio(clip_factory(seconds=1.0, sample_rate=16000), sample_rate=8000)
    assert samples.dtype == np.float32
    assert len(samples) == pytest.approx(8000, abs=1200)  # AAC priming/padding
    spectrum = np.abs(np.fft.rfft(samples[1000:5000]))
    assert np.fft.rfftfreq(4000, 1 / 8000)[spectrum.argmax()] == pytest.approx(220, abs=4)


def test_load_audio_without_audio_stream(clip_factory):
    with pytest.raises(MediaError, match="no audio stream"):
        load_audio(clip_factory(audio=False))
