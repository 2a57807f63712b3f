"""Waveform augmentations: what each does to a clip, and their params."""
import numpy as np
import pytest

from pipeline.config import ExtractorParams, ParamsError, Params, from_dict, validate_extractors
from pipeline.extractors.augment import build, copy_rng, rms

RATE = 16000


def tone(seconds=1.0, frequency=220.0):
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


@pytest.mark.parametrize("factor", [0.9, 1.1, 1.25])
def test_speed_divides_the_duration_by_its_factor_and_moves_the_pitch(factor):
    samples = tone()
    faster = build("speed", {"factor": factor}, "a").apply(samples, RATE, copy_rng("c", "a"))
    assert abs(len(faster) - len(samples) / factor) <= 1
    spectrum = np.abs(np.fft.rfft(faster))
    peak_hz = np.argmax(spectrum) * RATE / len(faster)
    assert peak_hz == pytest.approx(220.0 * factor, abs=2.0)  # played faster: the pitch goes up with it
    assert rms(faster) == pytest.approx(rms(samples), rel=0.02)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_noise_reaches_its_snr_and_is_the_same_on_every_run(snr_db):
    samples = tone()
    noise = build("noise", {"snr_db": snr_db}, "noise")
    noisy = noise.apply(samples, RATE, copy_rng("clip1", "noise"))
    added = noisy.astype(np.float64) - samples
    measured = 20 * np.log10(rms(samples) / rms(added))
    assert measured == pytest.approx(snr_db, abs=0.1)
    np.testing.assert_array_equal(noisy, noise.apply(samples, RATE, copy_rng("clip1", "noise")))
    assert not np.array_equal(noisy, noise.apply(samples, RATE, copy_rng("clip2", "noise")))  # another clip, other noise
    silent = np.zeros(100, np.float32)
    np.testing.assert_array_equal(noise.apply(silent, RATE, copy_rng("s", "noise")), silent)


@pytest.mark.parametrize("db", [-6.0, 3.0])
def test_gain_scales_the_rms_by_its_decibels(db):
    samples = tone()
    louder = build("gain", {"db": db}, "g").apply(samples, RATE, copy_rng("c", "g"))
    assert 20 * np.log10(rms(louder) / rms(samples)) == pytest.approx(db, abs=1e-3)
    assert len(louder) == len(samples)


def params_with(augmentations, augment=("speed0.9",)):
    raw = {
        "data": {"labels": ["a", "b"]},
        "extractors": {"logmel": {"type": "logmel", "input": "audio", "augmentations": augmentations}},
        "branches": {"mel": {"features": "logmel", "head": {"type": "svm"}, "augment": list(augment)}},
    }
    params = from_dict(Params, raw, "")
    validate_extractors(params)
    return params


def test_augmentations_are_validated_into_typed_params():
    params = params_with([{"name": "speed0.9", "type": "speed", "factor": 0.9}, {"name": "noise20", "type": "noise", "snr_db": 20}])
    spec = params.extractors["logmel"]
    assert [(a.name, a.type, a.options) for a in spec.augmentations] == [("speed0.9", "speed", {"factor": 0.9}),
                                                                          ("noise20", "noise", {"snr_db": 20})]
    assert params.branches["mel"].augment == ["speed0.9"]


@pytest.mark.parametrize("augmentations, augment, message", [
    ([{"name": "x", "type": "reverb", "room": 3}], [], "extractors.logmel.augmentations[0].type: unknown augmentation 'reverb'"),
    ([{"name": "x", "type": "speed", "factor": 5.0}], [], "extractors.logmel.augmentations[0].factor: 5.0 is outside"),
    ([{"name": "x", "type": "speed", "factr": 0.9}], [], "extractors.logmel.augmentations[0]: unknown key(s) ['factr']"),
    ([{"name": "x", "type": "noise", "snr_db": "loud"}], [], "extractors.logmel.augmentations[0].snr_db: expected float"),
    ([{"type": "gain", "db": 3}], [], "extractors.logmel.augmentations[0].name: missing"),
    ([{"name": "a~b", "type": "gain", "db": 3}], [], "extractors.logmel.augmentations[0].name: 'a~b' may hold only"),
    ([{"name": "g", "type": "gain", "db": 3}, {"name": "g", "type": "gain", "db": 6}], [], "extractors.logmel.augmentations: name(s) ['g'] given twice"),
    ([{"name": "g", "type": "gain", "db": 3}], ["speed0.9"], "branches.mel.augment: 'speed0.9' is not an augmentation of extractor 'logmel'"),
])
def test_a_bad_augmentation_is_an_error_naming_its_key(augmentations, augment, message):
    with pytest.raises(ParamsError) as error:
        params_with(augmentations, augment)
    assert message in str(error.value)


def test_augmentations_need_the_audio_store_and_spec_augment_non_negative_counts():
    with pytest.raises(ParamsError, match=r"extractors.fer.augmentations: waveform augmentations need .* audio store"):
        from_dict(ExtractorParams, {"type": "fer_mini_xception", "input": "faces", "augmentations": [{"name": "g", "type": "gain", "db": 1}]},
                  "extractors.fer")
    raw = {"data": {"labels": ["a", "b"]}, "extractors": {"logmel": {"type": "logmel", "input": "audio"}},
           "branches": {"mel": {"features": "logmel", "spec_augment": {"time_masks": -1}}}}
    with pytest.raises(ParamsError, match=r"branches.mel.spec_augment.time_masks: -1 is negative"):
        from_dict(Params, raw, "")


def test_spec_augment_needs_a_neural_head_and_copies_a_task_that_takes_them():
    from pipeline.config import _validate_capabilities

    base = {"data": {"labels": ["a", "b"]},
            "extractors": {"logmel": {"type": "logmel", "input": "audio", "augmentations": [{"name": "g", "type": "gain", "db": 3}]}}}
    svm = from_dict(Params, {**base, "branches": {"mel": {"features": "logmel", "head": {"type": "svm"}, "spec_augment": {"time_masks": 2}}}}, "")
    with pytest.raises(ParamsError, match=r"branches.mel.spec_augment: masks apply to a neural head's training batches"):
        _validate_capabilities(svm)
    continuous = from_dict(Params, {**base, "task": "continuous", "branches": {"mel": {"features": "logmel", "head": {"type": "tcn"},
                                                                                        "augment": ["g"]}}}, "")
    with pytest.raises(ParamsError, match=r"branches.mel.augment: task 'continuous' \(task\) cannot train on augmented copies"):
        _validate_capabilities(continuous)
    neural = from_dict(Params, {**base, "branches": {"mel": {"features": "logmel", "head": {"type": "tcn"}, "augment": ["g"],
                                                             "spec_augment": {"time_masks": 2, "freq_masks": 1}}}}, "")
    _validate_capabilities(neural)
