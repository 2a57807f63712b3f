"""Training on augmented copies and with SpecAugment masks: copies join only the training units
of the clips they are copies of, never a validation part, a held-out fold, a test clip or a
score; masks touch only training batches."""
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from pipeline.config import SpecAugmentParams, TrainParams
from pipeline.heads import HEADS
from pipeline.heads.pooled import LinearSvmHead
from pipeline.models import BranchSpec, ModelSpec
from pipeline.tasks import Batch, TrainingAugmentation, apply_spec_masks
from pipeline.tasks.classification import ClassificationData, ClassificationTask
from pipeline.training import cross_validate

CLASSES = ["low", "high"]
TASK = ClassificationTask(ClassificationTask.Config(CLASSES))
PARAMS = TrainParams(epochs=4, patience=2, batch_size=8, lr=0.01, workers=1)


def toy_data(speakers=4, per_speaker=6, seed=0):
    """Speakers 0-2 in folds 0-2, speaker 3 the held-out test split (fold -1)."""
    rng = np.random.default_rng(seed)
    sequences, rows = {}, []
    for speaker in range(speakers):
        for i in range(per_speaker):
            frames = rng.normal(0, 1, (8, 3)).astype(np.float32)
            frames[:, 0] += 2.0 * (i % 2)
            clip_id = f"s{speaker}_{i}"
            sequences[clip_id] = (frames, np.ones(8, bool), np.arange(8) * 0.1)
            rows.append({"clip_id": clip_id, "label": CLASSES[i % 2], "fold": speaker if speaker < 3 else -1, "speaker": f"s{speaker}"})
    return sequences, pd.DataFrame(rows)


def copies_of(sequences, shift):
    """A copy of every clip (a test clip's too: extraction makes copies of every clip)."""
    return {c: (x + shift, mask, times) for c, (x, mask, times) in sequences.items()}


def augmentation(sequences, masks=None):
    return TrainingAugmentation({"up": {"x": copies_of(sequences, 0.5)}, "down": {"x": copies_of(sequences, -0.5)}}, masks or {})


def stats_spec():
    return ModelSpec([BranchSpec("x", 3, "stats", HEADS.get("stats").Config(hidden=8, dropout=0.0))], 2)


@pytest.fixture
def recorded_units(monkeypatch):
    """(data, fit rows, training units) of every fold trained."""
    calls = []
    original = ClassificationData.training_units

    def spy(self, fit_rows):
        units = original(self, fit_rows)
        calls.append((self, np.asarray(fit_rows), np.asarray(units)))
        return units

    monkeypatch.setattr(ClassificationData, "training_units", spy)
    return calls


@pytest.mark.parametrize("protocol", ["none", "train-speakers", "transductive"])
def test_a_fold_trains_on_the_copies_of_its_fit_clips_only_and_scores_the_clips_alone(recorded_units, protocol):
    sequences, clips = toy_data()
    result = cross_validate(stats_spec(), {"x": sequences}, clips, TASK, replace(PARAMS, speaker_standardization=protocol),
                            augmentation=augmentation(sequences))
    assert sorted(result.scores["clip_id"]) == sorted(clips["clip_id"])  # no copy is scored, the test clips once
    assert result.scores.set_index("clip_id")["fold"].to_dict() == clips.set_index("clip_id")["fold"].to_dict()
    assert len(recorded_units) == 3
    folds = clips["fold"].to_numpy()
    for fold, (data, fit, units) in enumerate(recorded_units):
        sources = data.source_rows(units)
        copies = units[data.copy_rows(units)]
        assert len(copies) == 2 * len(fit)  # both augmentations of every fit clip ...
        assert set(data.source_rows(copies)) == set(fit)  # ... and of no other clip
        assert set(sources) == set(fit)
        assert not (folds[sources] == fold).any() and not (folds[sources] < 0).any()  # no held-out or test clip, as itself or a copy
        assert (data.labels[copies] == data.labels[data.source_rows(copies)]).all()
        held_out_validation = set(np.flatnonzero((folds != fold) & (folds >= 0))) - set(fit)
        assert held_out_validation and held_out_validation.isdisjoint(sources)  # the early-stopping part has no copies in training


def test_copies_are_standardised_with_their_originals_speaker_statistics():
    from pipeline.normalization import apply_speaker_statistics, speaker_statistics

    sequences, clips = toy_data()
    speakers = dict(zip(clips["clip_id"], clips["speaker"]))
    statistics = speaker_statistics(sequences, speakers)
    extra = augmentation(sequences).transformed(lambda b, s: apply_speaker_statistics(s, speakers, statistics))
    copy = extra.copies["up"]["x"]["s1_2"][0]
    mean, std = statistics["s1"]
    np.testing.assert_allclose(copy, (sequences["s1_2"][0] + 0.5 - mean) / std, rtol=1e-5)


def test_pooled_heads_get_the_copies_as_training_rows_with_their_speakers_and_judge_c_on_clips(monkeypatch):
    fits = []
    original = LinearSvmHead.fit

    def spy(self, x, y, groups, num_classes, seed, augmented=None):
        fits.append((len(x), groups.copy(), augmented.copy()))
        return original(self, x, y, groups, num_classes, seed, augmented)

    monkeypatch.setattr(LinearSvmHead, "fit", spy)
    sequences, clips = toy_data()
    spec = ModelSpec([BranchSpec("x", 3, "svm", HEADS.get("svm").Config(C=[0.01, 1.0]))], 2)
    result = cross_validate(spec, {"x": sequences}, clips, TASK, PARAMS, augmentation=augmentation(sequences))
    assert sorted(result.scores["clip_id"]) == sorted(clips["clip_id"])
    for fold, (rows, groups, augmented) in enumerate(fits):
        training_speakers = {f"s{s}" for s in range(3) if s != fold}
        assert rows == 3 * 12 and augmented.sum() == 24  # 12 training clips, 2 copies each
        assert set(groups) == training_speakers
        assert all((groups == s).sum() == 18 for s in training_speakers)  # a copy keeps its original's speaker


def test_without_copies_training_is_unchanged():
    sequences, clips = toy_data()
    plain = cross_validate(stats_spec(), {"x": sequences}, clips, TASK, PARAMS)
    empty = cross_validate(stats_spec(), {"x": sequences}, clips, TASK, PARAMS, augmentation=TrainingAugmentation())
    pd.testing.assert_frame_equal(plain.scores, empty.scores)


def test_spec_masks_set_runs_of_frames_and_dimensions_to_the_fill_value():
    rng = np.random.default_rng(0)
    x = np.ones((3, 50, 16), np.float32)
    mask = np.ones((3, 50), bool)
    mask[2, 30:] = False  # a shorter clip: masks stay inside its visible span
    fill = np.full(16, 7.0, np.float32)
    apply_spec_masks(x, mask, SpecAugmentParams(time_masks=2, time_width=10, freq_masks=1, freq_width=4), fill, rng)
    masked = x == 7.0
    assert masked.any() and not masked[2, 30:].any()
    assert (masked.all(2).sum(1) <= 20).all()  # at most two runs of 10 frames
    untouched = np.ones((1, 50, 16), np.float32)
    apply_spec_masks(untouched, np.ones((1, 50), bool), SpecAugmentParams(), fill, rng)
    assert (untouched == 1).all()  # 0 masks: off


def test_spec_masks_touch_training_batches_only_and_are_deterministic(monkeypatch):
    import pipeline.tasks as tasks

    masked_shapes = []
    original = tasks.apply_spec_masks

    def spy(x, mask, params, fill, rng):
        masked_shapes.append(x.shape)
        original(x, mask, params, fill, rng)

    monkeypatch.setattr(tasks, "apply_spec_masks", spy)
    predicted = []
    original_predict = ClassificationData.predict
    original_validation = ClassificationData.validation_batch

    def predict(self, model, rows):
        inputs = [self.inputs(np.array([row]))["x"][0].numpy() for row in rows]
        predicted.extend(np.allclose(i[0], self.rows["x"][row][0]) for i, row in zip(inputs, rows))
        return original_predict(self, model, rows)

    def validation_batch(self, rows):
        batch = original_validation(self, rows)
        batches.append((self, rows, batch))
        return batch

    batches: list[tuple[ClassificationData, np.ndarray, Batch]] = []
    monkeypatch.setattr(ClassificationData, "predict", predict)
    monkeypatch.setattr(ClassificationData, "validation_batch", validation_batch)
    sequences, clips = toy_data()
    masks = {"x": SpecAugmentParams(time_masks=2, time_width=4, freq_masks=1, freq_width=1)}
    first = cross_validate(stats_spec(), {"x": sequences}, clips, TASK, PARAMS, augmentation=TrainingAugmentation({}, masks))
    assert masked_shapes and all(shape[0] <= PARAMS.batch_size for shape in masked_shapes)
    assert all(predicted)  # every predicted clip read unmasked
    assert batches
    for data, rows, batch in batches:  # the validation batches too, after every epoch of training
        np.testing.assert_array_equal(batch.inputs["x"][0].numpy(), np.stack([data.rows["x"][r][0] for r in rows]))
    again = cross_validate(stats_spec(), {"x": sequences}, clips, TASK, PARAMS, augmentation=TrainingAugmentation({}, masks))
    pd.testing.assert_frame_equal(first.scores, again.scores)
    plain = cross_validate(stats_spec(), {"x": sequences}, clips, TASK, PARAMS)
    assert not np.allclose(first.scores[["p_low", "p_high"]], plain.scores[["p_low", "p_high"]])


def test_a_copy_row_takes_its_originals_frames_in_a_branch_without_that_copy():
    sequences, clips = toy_data(speakers=2, per_speaker=2)
    clips["fold"] = [0, 0, 1, 1]
    extra = TrainingAugmentation({"up": {"audio": copies_of(sequences, 1.0)}})
    data = TASK.prepare({"audio": sequences, "face": sequences}, clips, PARAMS, augmentation=extra)
    units = data.training_units(np.array([0, 2]))
    assert list(units) == [0, 2, 4, 6] and list(data.source_rows(units)) == [0, 2, 0, 2]
    np.testing.assert_array_equal(data.rows["audio"][4][0], sequences["s0_0"][0] + 1.0)
    assert data.rows["face"][4] is data.rows["face"][0]
    scores = TASK.score_frame(data, np.arange(len(clips)), 0, [np.array([0.5, 0.5])] * len(clips))
    assert list(scores["clip_id"]) == list(clips["clip_id"])


def test_a_seed_ensemble_trained_on_copies_is_the_mean_of_its_single_seed_runs():
    """Seeds and copies together: each seed model of a fold trains on the same copies, and the
    fold's scores are the mean of the single runs of those seeds."""
    from pipeline.metrics import probability_columns

    sequences, clips = toy_data()
    columns = probability_columns(CLASSES)
    ensemble = cross_validate(stats_spec(), {"x": sequences}, clips, TASK, PARAMS, seeds=2, augmentation=augmentation(sequences))
    singles = [cross_validate(stats_spec(), {"x": sequences}, clips, TASK, replace(PARAMS, seed=seed), augmentation=augmentation(sequences))
               for seed in (0, 1000)]
    assert sorted(ensemble.scores["clip_id"]) == sorted(clips["clip_id"])
    key = ["clip_id", "fold"]
    mean = (singles[0].scores.sort_values(key)[columns].to_numpy() + singles[1].scores.sort_values(key)[columns].to_numpy()) / 2
    oof = ensemble.scores.sort_values(key)
    in_folds = (oof["fold"] >= 0).to_numpy()
    np.testing.assert_allclose(oof[columns].to_numpy()[in_folds], mean[in_folds], atol=1e-6)
