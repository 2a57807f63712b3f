"""Cross-validation on cached sequences: out-of-fold scores, determinism, parallel folds."""
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from pipeline.config import TrainParams
from pipeline.heads import HEADS
from pipeline.models import BranchSpec, ModelSpec
from pipeline.tasks.classification import ClassificationTask
from pipeline.training import cross_validate

CLASSES = ["low", "high"]
TASK = ClassificationTask(ClassificationTask.Config(CLASSES))


def toy_data(speakers=4, per_speaker=12, seed=0):
    """Class shifts the mean of feature 0; each speaker adds its own offset to every feature."""
    rng = np.random.default_rng(seed)
    sequences, rows = {}, []
    for speaker in range(speakers):
        offset = rng.normal(0, 0.3, 3)
        for i in range(per_speaker):
            label = i % 2
            length = rng.integers(5, 12)
            frames = rng.normal(0, 1, (length, 3)) + offset
            frames[:, 0] += 2.0 * label
            clip_id = f"s{speaker}_{i}"
            sequences[clip_id] = (frames.astype(np.float32), np.ones(length, bool))
            rows.append({"clip_id": clip_id, "label": CLASSES[label], "fold": speaker, "speaker": f"s{speaker}"})
    return sequences, pd.DataFrame(rows)


PARAMS = TrainParams(epochs=30, patience=6, batch_size=8, lr=0.01, workers=1)


def run(params=PARAMS):
    sequences, clips = toy_data()
    spec = ModelSpec([BranchSpec("x", 3, "stats", HEADS.get("stats").Config(hidden=8, dropout=0.0))], 2)
    return cross_validate(spec, {"x": sequences}, clips, TASK, params), clips


def test_out_of_fold_scores_cover_every_clip_once():
    result, clips = run()
    scores = result.scores
    assert sorted(scores["clip_id"]) == sorted(clips["clip_id"])
    assert scores.set_index("clip_id")["fold"].to_dict() == clips.set_index("clip_id")["fold"].to_dict()
    np.testing.assert_allclose(scores[["p_low", "p_high"]].sum(1), 1, atol=1e-5)
    accuracy = (scores[["p_low", "p_high"]].to_numpy().argmax(1) == scores["label"].map(CLASSES.index)).mean()
    assert accuracy > 0.9  # the class shift is large; speakers never seen in training
    assert len(result.fold_states) == 4 and set(result.curves["fold"]) == {0, 1, 2, 3}


def test_repeated_and_parallel_runs_give_identical_scores():
    first, _ = run()
    again, _ = run()
    parallel, _ = run(replace(PARAMS, workers=2))
    pd.testing.assert_frame_equal(first.scores, again.scores)
    pd.testing.assert_frame_equal(first.scores, parallel.scores)


def test_early_stopping_ends_before_the_epoch_budget():
    result, _ = run(replace(PARAMS, epochs=200, patience=3))
    assert result.curves.groupby("fold")["epoch"].max().max() < 199


def test_speaker_standardization_uses_each_speakers_own_statistics():
    from pipeline.training import standardize_per_speaker

    sequences, clips = toy_data()
    speakers = {c: c.split("_")[0] for c in sequences}
    standardized = standardize_per_speaker(sequences, speakers)
    for speaker in set(speakers.values()):
        frames = np.concatenate([standardized[c][0] for c in sequences if speakers[c] == speaker])
        np.testing.assert_allclose(frames.mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(frames.std(0), 1, atol=1e-4)
    result, _ = run(replace(PARAMS, speaker_standardization=True))
    accuracy = (result.scores[["p_low", "p_high"]].to_numpy().argmax(1) == result.scores["label"].map(CLASSES.index)).mean()
    assert accuracy > 0.9
