import librosa
import numpy as np
import opensmile
import pytest

from pipeline.extractors import EXTRACTORS
from pipeline.media import load_audio
from pipeline.store import Entry

SR = 16000


def build(name, **options):
    cls = EXTRACTORS.get(name)
    return cls(cls.Config(**options))


def audio_entry(samples, sample_rate=SR):
    return Entry("clip", {"samples": samples.astype(np.float32)}, {"sample_rate": sample_rate})


def chirp_with_burst(seconds=2.0):
    """A 440 Hz tone with a 2 kHz burst from 1.0 s to 1.2 s: a known event to find in time."""
    t = np.arange(int(seconds * SR)) / SR
    signal = 0.05 * np.sin(2 * np.pi * 440 * t)
    burst = (t >= 1.0) & (t < 1.2)
    signal[burst] += 0.5 * np.sin(2 * np.pi * 2000 * t[burst])
    return signal


@pytest.mark.parametrize("name", ["logmel", "spectrogram"])
def test_spectrogram_frames_line_up_with_timestamps(name):
    features = build(name).extract(audio_entry(chirp_with_burst()))
    assert features.data.shape[0] == 1 + 2 * SR // 160
    np.testing.assert_allclose(np.diff(features.timestamps), 0.01)
    energy = features.data.max(1)
    loud = features.timestamps[energy > energy.max() - 1.0]
    assert loud.min() == pytest.approx(1.0, abs=0.02) and loud.max() == pytest.approx(1.2, abs=0.02)


def test_logmel_peak_is_in_the_tone_band():
    t = np.arange(SR) / SR
    features = build("logmel", n_mels=64).extract(audio_entry(0.3 * np.sin(2 * np.pi * 1000 * t)))
    mel_centres = librosa.mel_frequencies(n_mels=66, fmin=50.0, fmax=8000.0)[1:-1]
    peak = mel_centres[features.data[50].argmax()]
    assert peak == pytest.approx(1000, rel=0.1)


def test_linear_spectrogram_stops_at_fmax():
    features = build("spectrogram", n_fft=512, fmax=4000.0).extract(audio_entry(chirp_with_burst()))
    assert features.data.shape[1] == int(4000 / (SR / 512)) + 1


@pytest.mark.parametrize("feature_set, level, dims", [
    ("eGeMAPSv02", "functionals", 88), ("eGeMAPSv02", "lld", 25), ("emobase", "functionals", 988), ("emobase", "lld", 26),
    ("ComParE_2016", "functionals", 6373),
])
def test_opensmile_matches_a_direct_library_call(feature_set, level, dims):
    signal = chirp_with_burst().astype(np.float32)
    features = build("opensmile", feature_set=feature_set, level=level).extract(audio_entry(signal))
    direct = opensmile.Smile(
        feature_set=opensmile.FeatureSet[feature_set],
        feature_level=opensmile.FeatureLevel.Functionals if level == "functionals" else opensmile.FeatureLevel.LowLevelDescriptors,
    ).process_signal(signal, SR)
    assert features.data.shape == (len(direct), dims)
    np.testing.assert_allclose(features.data, np.nan_to_num(direct.to_numpy(np.float32)), rtol=1e-5, atol=1e-6)
    if level == "lld":
        np.testing.assert_allclose(np.diff(features.timestamps), 0.01, atol=1e-9)


def test_opensmile_on_real_emodb_speech(shared_data):
    wav = shared_data / "emodb/wav/03a01Fa.wav"
    samples = load_audio(wav, SR)
    features = build("opensmile", feature_set="eGeMAPSv02", level="functionals").extract(audio_entry(samples))
    direct = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02).process_file(str(wav))
    np.testing.assert_allclose(features.data, direct.to_numpy(np.float32), rtol=1e-3, atol=1e-4)
    lld = build("opensmile", level="lld").extract(audio_entry(samples))
    assert lld.timestamps[-1] == pytest.approx(len(samples) / SR, abs=0.05)


@pytest.mark.parametrize("name", ["03a01Fa", "16b10Wb"])
def test_opensmile_emobase_on_real_emodb_speech(shared_data, name):
    wav = shared_data / f"emodb/wav/{name}.wav"
    features = build("opensmile", feature_set="emobase").extract(audio_entry(load_audio(wav, SR)))
    direct = opensmile.Smile(feature_set=opensmile.FeatureSet.emobase).process_file(str(wav)).to_numpy(np.float32)
    assert features.data.shape == direct.shape == (1, 988)
    np.testing.assert_allclose(features.data, direct, rtol=1e-3, atol=1e-4)
