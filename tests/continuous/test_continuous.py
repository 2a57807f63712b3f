import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config import TrainParams
from pipeline.datasets import read_frame_targets
from pipeline.tasks.continuous import ContinuousTask, ccc_centering, ccc_loss, continuous_report, resample, targets_on_grid, time_grid
from pipeline.training import cross_validate
from pipeline.metrics import concordance
from pipeline.models import ModelSpec, branch_spec


def numpy_ccc(x, y):
    x, y = np.asarray(x, float), np.asarray(y, float)
    return 2 * np.cov(x, y, bias=True)[0, 1] / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


def test_concordance_matches_a_direct_numpy_computation():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=200)
    prediction = 0.7 * truth + 0.3 + rng.normal(0, 0.5, 200)
    assert concordance(prediction, truth) == pytest.approx(numpy_ccc(prediction, truth), rel=1e-12)
    assert concordance(truth, truth) == pytest.approx(1.0)
    # A perfectly correlated but shifted prediction is penalised, unlike Pearson's r.
    assert concordance(truth + 1.0, truth) < 0.7


def test_ccc_loss_is_one_minus_the_ccc_of_the_valid_steps():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(3, 10, 2)).astype(np.float32)
    prediction = (truth * 0.5 + rng.normal(0, 0.3, truth.shape)).astype(np.float32)
    valid = np.ones((3, 10), bool)
    valid[1, 6:] = False
    prediction_with_garbage = prediction.copy()
    prediction_with_garbage[1, 6:] = 1e3  # ignored: not valid
    loss = ccc_loss(torch.from_numpy(prediction_with_garbage), torch.from_numpy(truth), torch.from_numpy(valid))
    expected = 1 - np.mean([numpy_ccc(prediction[valid][:, d], truth[valid][:, d]) for d in range(2)])
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_ccc_centering_down_weights_the_model_that_disagrees():
    rng = np.random.default_rng(2)
    consensus = rng.normal(size=(100, 2))
    agreeing = [consensus + rng.normal(0, 0.1, consensus.shape) for _ in range(3)]
    outlier = rng.normal(size=(100, 2))
    merged, weights = ccc_centering(agreeing + [outlier])
    assert weights.shape == (4, 2)
    np.testing.assert_allclose(weights.sum(0), 1.0)
    assert (weights[3] < weights[:3].min(0)).all()
    assert concordance(merged[:, 0], consensus[:, 0]) > concordance(np.mean(agreeing + [outlier], 0)[:, 0], consensus[:, 0])


def test_resample_averages_visible_frames_per_grid_step():
    timestamps = np.arange(100) * 0.01 + 0.005  # frame centres, off the step boundaries
    frames = timestamps[:, None].astype(np.float32)
    mask = np.ones(100, bool)
    mask[40:60] = False  # no face from 0.4 s to 0.6 s
    grid = time_grid(1.0, 5.0)
    values, visible = resample(frames, mask, timestamps, grid, 5.0)
    assert grid.tolist() == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert values[1, 0] == pytest.approx(np.mean(timestamps[10:30]))
    assert visible.tolist() == [True, True, True, True, True, True]
    assert values[2, 0] == pytest.approx(np.mean(timestamps[30:40]))  # only the visible part of the step
    none_visible, _ = resample(frames, np.zeros(100, bool), timestamps, grid, 5.0)
    assert not none_visible.any()


def test_targets_are_interpolated_and_invalid_frames_are_not_scored(tmp_path):
    path = tmp_path / "video.txt"
    values = ["valence,arousal"] + [f"{i / 10:.1f},{-i / 10:.1f}" for i in range(10)] + ["-5,-5"] * 5
    path.write_text("\n".join(values) + "\n")
    times, table, valid = read_frame_targets(str(path), ["valence", "arousal"], fps=10.0)
    assert valid.tolist() == [True] * 10 + [False] * 5
    on_grid, scored = targets_on_grid(times, table, valid, np.array([0.05, 0.5, 1.2, 3.0]))
    assert on_grid[0].tolist() == pytest.approx([0.05, -0.05])
    assert scored.tolist() == [True, True, False, False]


def synthetic_clips(tmp_path, speakers=4, clips_per_speaker=3, steps=30):
    """A feature whose first dimension is the valence (plus noise): learnable, per speaker."""
    rng = np.random.default_rng(0)
    rows, sequences = [], {}
    for s in range(speakers):
        for c in range(clips_per_speaker):
            clip_id = f"s{s}_c{c}"
            times = np.arange(steps) / 5.0
            valence = np.sin(times * (1 + c) + s)
            arousal = np.cos(times * 0.5 + c)
            pd.DataFrame({"time_s": times, "valence": valence, "arousal": arousal}).to_csv(tmp_path / f"{clip_id}.csv", index=False)
            frames = np.stack([valence, arousal, rng.normal(size=steps)], 1) + rng.normal(0, 0.1, (steps, 3))
            sequences[clip_id] = (frames.astype(np.float32), np.ones(steps, bool), times)
            rows.append({"clip_id": clip_id, "speaker": f"s{s}", "fold": s if s < speakers - 1 else -1,
                         "duration_s": (steps - 1) / 5.0, "targets": str(tmp_path / f"{clip_id}.csv"), "fps": 0.0})
    return pd.DataFrame(rows), sequences


def test_continuous_cross_validation_learns_and_merges_test_predictions(tmp_path):
    clips, sequences = synthetic_clips(tmp_path)
    spec = ModelSpec([branch_spec("face", "tcn", {"channels": 16, "levels": 2, "pool": 1, "dropout": 0.0}, 3)], 2)
    params = TrainParams(epochs=40, patience=10, batch_size=8, lr=0.01, workers=1, validation_fraction=0.2)
    task = ContinuousTask(ContinuousTask.Config(["valence", "arousal"], rate=5.0, window=10, hop=5))
    result = cross_validate(spec, {"face": sequences}, clips, task, params)
    scores = result.scores
    assert set(scores["clip_id"]) == set(clips["clip_id"])
    assert (scores.groupby("clip_id").size() == 30).all()
    test_clips = set(clips.loc[clips["fold"] < 0, "clip_id"])
    assert set(scores.loc[scores["fold"] < 0, "clip_id"]) == test_clips
    assert len(result.fold_states) == 3
    oof = continuous_report(scores[scores["fold"] >= 0], ["valence", "arousal"])
    test = continuous_report(scores[scores["fold"] < 0], ["valence", "arousal"])
    assert oof["ccc_valence"] > 0.8 and test["ccc_valence"] > 0.8
    assert oof["ccc_mean"] > 0.7
