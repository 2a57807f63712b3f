"""The speaker standardisation protocols and per-utterance normalisation on a small table:
checked against numpy, and which clips' statistics each protocol reads."""
import numpy as np
import pandas as pd
import pytest

from pipeline.config import ParamsError, TrainParams, from_dict
from pipeline.models import ModelSpec, branch_spec
from pipeline.normalization import normalize_utterances
from pipeline.tasks.classification import ClassificationTask
from pipeline.training import cross_validate

CLASSES = ["low", "high"]
TASK = ClassificationTask(ClassificationTask.Config(CLASSES))
SPEAKERS = ["a", "b", "c"]


def table(seed=0, per_speaker=8, dim=3):
    """Speaker-dependent offsets and scales, the class in feature 0, a masked last frame."""
    rng = np.random.default_rng(seed)
    sequences, rows = {}, []
    for fold, speaker in enumerate(SPEAKERS):
        offset, scale = rng.normal(0, 2, dim), rng.uniform(0.5, 3, dim)
        for i in range(per_speaker):
            length = int(rng.integers(4, 9))
            frames = rng.normal(0, 1, (length, dim)) * scale + offset
            frames[:, 0] += 3.0 * (i % 2)
            frames[-1] = 1e3  # masked out: must never enter a statistic
            mask = np.ones(length, bool)
            mask[-1] = False
            clip_id = f"{speaker}{i}"
            sequences[clip_id] = (frames.astype(np.float32), mask, np.arange(length) / 10)
            rows.append({"clip_id": clip_id, "label": CLASSES[i % 2], "speaker": speaker, "fold": fold})
    return sequences, pd.DataFrame(rows)


def visible(sequences, clip_ids):
    return np.concatenate([sequences[c][0][sequences[c][1]] for c in clip_ids])


def svm_run(protocol, sequences, clips, normalization="none"):
    spec = ModelSpec([branch_spec("x", "svm", {"C": [0.1]}, 3)], 2)
    params = TrainParams(workers=1, speaker_standardization=protocol, feature_normalization=normalization)
    return cross_validate(spec, {"x": sequences}, clips, TASK, params)


def test_old_booleans_read_as_named_protocols_and_a_wrong_name_is_an_error():
    assert from_dict(TrainParams, {"speaker_standardization": True}, "train").speaker_standardization == "transductive"
    assert from_dict(TrainParams, {"speaker_standardization": False}, "train").speaker_standardization == "none"
    assert from_dict(TrainParams, {"speaker_standardization": "train-speakers"}, "train").speaker_standardization == "train-speakers"
    with pytest.raises(ParamsError, match="train.speaker_standardization.*'per-speaker'.*transductive"):
        from_dict(TrainParams, {"speaker_standardization": "per-speaker"}, "train")
    with pytest.raises(ParamsError, match="train.feature_normalization"):
        from_dict(TrainParams, {"feature_normalization": "clip"}, "train")


def test_utterance_normalisation_uses_each_clips_own_visible_frames():
    sequences, _ = table()
    normalized = normalize_utterances(sequences)
    for clip_id, (x, mask, *_) in sequences.items():
        expected = (x[mask] - x[mask].mean(0)) / x[mask].std(0)
        np.testing.assert_allclose(normalized[clip_id][0][mask], expected, rtol=1e-4, atol=1e-5)
        assert not normalized[clip_id][0][~mask].any()
    # A single-frame clip (functionals) has no within-clip statistics: left as it is.
    single = {"f": (np.array([[1.0, 2.0]], np.float32), np.array([True]))}
    np.testing.assert_array_equal(normalize_utterances(single)["f"][0], single["f"][0])


def test_train_speakers_statistics_are_the_training_folds_frames_only():
    sequences, clips = table()
    result = svm_run("train-speakers", sequences, clips)
    assert result.speaker_statistics == {}
    for fold, held_out in enumerate(SPEAKERS):
        training = clips.loc[clips["speaker"] != held_out, "clip_id"]
        frames = visible(sequences, training)
        mean, std = result.fold_statistics["x"][fold]
        np.testing.assert_allclose(mean, frames.mean(0), rtol=1e-5)
        np.testing.assert_allclose(std, frames.std(0), rtol=1e-5)


def test_transductive_statistics_are_each_speakers_own_test_speakers_included():
    sequences, clips = table()
    result = svm_run("transductive", sequences, clips)
    assert set(result.speaker_statistics["x"]) == set(SPEAKERS) and result.fold_statistics == {}
    for speaker in SPEAKERS:
        frames = visible(sequences, clips.loc[clips["speaker"] == speaker, "clip_id"])
        np.testing.assert_allclose(result.speaker_statistics["x"][speaker][0], frames.mean(0), rtol=1e-5)
        np.testing.assert_allclose(result.speaker_statistics["x"][speaker][1], frames.std(0), rtol=1e-5)


@pytest.mark.parametrize("protocol, reads_test_speaker", [("none", False), ("train-speakers", False), ("transductive", True)])
def test_only_the_transductive_protocol_reads_the_test_speakers_statistics(protocol, reads_test_speaker):
    """Shift and scale every frame of speaker c: the fold holding c out scores c the same only
    when c's own statistics undo it, i.e. when they are used."""
    sequences, clips = table()
    moved = {c: ((x * 4.0 + 7.0) if c.startswith("c") else x, mask, *rest) for c, (x, mask, *rest) in sequences.items()}
    before = svm_run(protocol, sequences, clips).scores.set_index("clip_id")
    after = svm_run(protocol, moved, clips).scores.set_index("clip_id")
    test = [c for c in before.index if c.startswith("c")]
    same = np.allclose(before.loc[test, ["p_low", "p_high"]], after.loc[test, ["p_low", "p_high"]], atol=1e-4)
    assert same == reads_test_speaker


def test_each_protocol_learns_the_table_and_utterance_normalisation_runs_before_it():
    sequences, clips = table()
    accuracy = {}
    for protocol in ("none", "train-speakers", "transductive"):
        scores = svm_run(protocol, sequences, clips).scores
        accuracy[protocol] = (scores[["p_low", "p_high"]].to_numpy().argmax(1) == scores["label"].map(CLASSES.index)).mean()
    # The speakers' offsets are as large as the class shift: only their own statistics remove them.
    assert accuracy["none"] > 0.6 and accuracy["train-speakers"] > 0.6 and accuracy["transductive"] > 0.9, accuracy
    # Statistics of utterance-normalised frames: every clip has mean 0 and std 1, so has every speaker.
    result = svm_run("transductive", sequences, clips, "utterance")
    for mean, std in result.speaker_statistics["x"].values():
        np.testing.assert_allclose(mean, 0, atol=1e-5)
        np.testing.assert_allclose(std, 1, atol=1e-4)


def test_a_checkpoint_applies_its_protocol_at_prediction_time(tmp_path):
    from pipeline.checkpoint import load_member, member_checkpoint, save_checkpoint

    sequences, clips = table()
    for protocol in ("train-speakers", "transductive"):
        result = svm_run(protocol, sequences, clips, "utterance")
        spec = ModelSpec([branch_spec("x", "svm", {"C": [0.1]}, 3)], 2)
        train = {"speaker_standardization": protocol, "feature_normalization": "utterance"}
        member = {"name": "x", "kind": "branch", "task": TASK.describe(), "stores": {"x": {"features": "x", "identities": []}}, "train": train}
        save_checkpoint(tmp_path / protocol / "model.pt", member_checkpoint(member, spec, result))
        loaded = load_member(tmp_path / protocol / "model.pt")
        assert loaded.speaker_standardization == protocol and loaded.feature_normalization == "utterance"
        speakers = dict(zip(clips["clip_id"], clips["speaker"]))
        held_out = {c: s for c, s in sequences.items() if c.startswith("a")}
        for fold in (0,):  # fold 0 held speaker a out: its model scores a as in cross-validation
            scores = loaded.predict({"x": held_out}, speakers=speakers, fold=fold).set_index("clip_id")
            expected = result.scores.set_index("clip_id").loc[scores.index, ["p_low", "p_high"]]
            np.testing.assert_allclose(scores[["p_low", "p_high"]], expected, atol=1e-5)
