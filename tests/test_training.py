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


def long_clip_data(max_clip_s=30.0):
    """30 clips of 2-4 s and one of 3 minutes, 64 features at 100 frames per second."""
    rng = np.random.default_rng(0)
    lengths = {f"c{i:02d}": int(rng.integers(200, 400)) for i in range(30)} | {"long": 18000}
    sequences = {c: (rng.normal(size=(n, 64)).astype(np.float32), np.ones(n, bool), np.arange(n) / 100.0) for c, n in lengths.items()}
    clips = pd.DataFrame({"clip_id": list(lengths), "label": [CLASSES[i % 2] for i in range(len(lengths))],
                          "fold": [i % 3 for i in range(len(lengths))], "speaker": [f"s{i % 3}" for i in range(len(lengths))]})
    return sequences, TASK.prepare({"voice": sequences}, clips, replace(PARAMS, max_clip_s=max_clip_s)), clips


def batch_bytes(batch):
    return sum(x.numel() * x.element_size() + mask.numel() * mask.element_size() for x, mask in batch.inputs.values())


def test_batch_memory_follows_the_batch_and_the_window_not_the_longest_clip():
    sequences, data, clips = long_clip_data()
    long_row = int(np.flatnonzero(clips["clip_id"] == "long")[0])
    short_rows = [r for r in range(len(clips)) if r != long_row]
    rng = np.random.default_rng(0)
    per_frame = 64 * 4 + 1  # float32 features + the bool mask
    # Short clips are padded to their own longest clip only.
    short = data.batch(short_rows[:16], rng)
    assert batch_bytes(short) == 16 * max(len(sequences[clips["clip_id"][r]][0]) for r in short_rows[:16]) * per_frame
    # The 3-minute clip is cut to a 30 s window: 16 x 3000 frames (3.1 MB), not 16 x 18000 (18 MB).
    with_long = data.batch([long_row, *short_rows[:15]], rng)
    assert with_long.inputs["voice"][0].shape[1] <= 3000 and batch_bytes(with_long) <= 16 * 3000 * per_frame
    # A different window at each draw, always inside the clip; validation reads the centre.
    windows = [data._windows(np.array([long_row]), rng)[0] for _ in range(5)]
    assert len({round(w[0], 3) for w in windows}) == 5 and all(0 <= w[0] and w[1] <= 180 for w in windows)
    assert data._windows(np.array([long_row]), None)[0] == pytest.approx((74.995, 104.995))
    assert data.validation_batch(np.array([long_row])).inputs["voice"][0].shape[1] == 3000
    # Predictions read the whole clip; nothing is padded corpus-wide.
    assert data.inputs(np.array([long_row]))["voice"][0].shape[1] == 18000
    assert sum(clip[0].nbytes for clip in data.rows["voice"]) == sum(s[0].nbytes for s in sequences.values())


def test_without_a_window_long_clips_train_whole():
    _, data, clips = long_clip_data(max_clip_s=0.0)
    long_row = int(np.flatnonzero(clips["clip_id"] == "long")[0])
    assert data.batch([long_row, 0], np.random.default_rng(0)).inputs["voice"][0].shape[1] == 18000


def test_training_prints_fold_epoch_best_validation_loss_and_time_left(capsys, monkeypatch):
    import re

    import pipeline.training as training

    monkeypatch.setattr(training, "PROGRESS_INTERVAL_S", 0.0)  # every epoch, not every 15 s
    sequences, clips = toy_data()
    spec = ModelSpec([BranchSpec("x", 3, "stats", HEADS.get("stats").Config(hidden=8, dropout=0.0))], 2)
    result = cross_validate(spec, {"x": sequences}, clips, TASK, replace(PARAMS, epochs=3, patience=3), label="train@x")
    lines = capsys.readouterr().out.splitlines()
    epochs = [l for l in lines if re.fullmatch(r"train@x: fold [1-4]/4 epoch [1-3]/3, best val_loss \d+\.\d{4} \(epoch [1-3]\); "
                                                r"this fold at most \d+m\d\ds more", l)]
    done = [l for l in lines if re.fullmatch(r"train@x: fold [1-4]/4 done \(3 epochs, best val_loss \d+\.\d{4}\); "
                                              r"[1-4]/4 folds in \d+m\d\ds, about \d+m\d\ds left", l)]
    assert len(epochs) == 12 and len(done) == 4, lines
    assert done[-1].startswith("train@x: fold 4/4") and "4/4 folds" in done[-1] and done[-1].endswith("about 0m00s left")
    assert len(result.fold_states) == 4
