import numpy as np
import pandas as pd
import pytest

from pipeline.fusion.late import LATE_FUSIONS, combine, late_fusion, simplex_grid
from pipeline.tasks.classification import ClassificationTask

CLASSES = ["a", "b"]
TASK = ClassificationTask(ClassificationTask.Config(CLASSES))


def fuse(members, method):
    result = late_fusion(members, TASK, method, 0.1)
    return result.scores, result.weights, result.per_fold


def member(prob_a, labels, folds, clip_ids=None):
    prob_a = np.asarray(prob_a, float)
    return pd.DataFrame(
        {
            "clip_id": clip_ids or [f"c{i}" for i in range(len(prob_a))],
            "fold": folds,
            "label": labels,
            "p_a": prob_a,
            "p_b": 1 - prob_a,
        }
    )


def test_simplex_grid_sums_to_one():
    grid = simplex_grid(3, 0.25)
    assert len(grid) == 15
    np.testing.assert_allclose(grid.sum(1), 1)


def test_weights_prefer_the_informative_member():
    labels = np.array([0, 1] * 10)
    good = np.stack([np.where(labels == 0, 0.8, 0.2), np.where(labels == 0, 0.2, 0.8)], -1)
    noise = np.random.default_rng(0).dirichlet([1, 1], size=20)
    weights = LATE_FUSIONS.get("weighted")(0.1).fit(TASK, np.stack([good, noise]), np.ones((2, 20), bool), labels)["weights"]
    assert weights[0] > weights[1]


def test_missing_member_is_renormalised_away():
    probabilities = np.array([[[0.9, 0.1]], [[0.2, 0.8]]])
    fused = combine(probabilities, np.array([[True], [False]]), np.array([0.3, 0.7]))
    np.testing.assert_allclose(fused, [[0.9, 0.1]])


def test_fold_weights_are_fit_without_the_test_fold():
    # Member x is right on folds 0-1 and wrong on fold 2; member y the opposite. If fold 2's
    # weights saw fold 2, they would favour y there; fit on folds 0-1 they must favour x.
    labels = ["a", "b"] * 6
    folds = [0] * 4 + [1] * 4 + [2] * 4
    truth = np.array([1.0, 0.0] * 6)
    x = np.where(np.array(folds) < 2, truth * 0.8 + 0.1, 0.9 - truth * 0.8)
    y = np.where(np.array(folds) < 2, 0.55 - truth * 0.1, truth * 0.8 + 0.1)
    scores, overall, per_fold = fuse({"x": member(x, labels, folds), "y": member(y, labels, folds)}, "weighted")
    assert per_fold[2]["x"] > per_fold[2]["y"]
    assert scores["clip_id"].tolist() == sorted(scores["clip_id"])
    np.testing.assert_allclose(scores[["p_a", "p_b"]].sum(1), 1)
    assert sum(overall.values()) == pytest.approx(1)


def test_clip_scored_by_one_member_only_is_kept():
    labels, folds = ["a", "b", "a", "b"], [0, 0, 1, 1]
    full = member([0.9, 0.1, 0.8, 0.3], labels, folds)
    partial = member([0.6, 0.4, 0.7], labels[:3], folds[:3], ["c0", "c1", "c2"])
    scores, _, _ = fuse({"full": full, "partial": partial}, "mean")
    assert len(scores) == 4
    assert scores.loc[scores["clip_id"] == "c3", "p_a"].item() == pytest.approx(0.3)


def test_stacking_is_fit_without_the_test_fold_and_learns_which_member_to_trust():
    rng = np.random.default_rng(0)
    folds = np.repeat(np.arange(4), 30).tolist()
    labels_index = rng.integers(0, 2, 120)
    labels = [CLASSES[i] for i in labels_index]
    informative = np.clip(np.where(labels_index == 0, 0.75, 0.25) + rng.normal(0, 0.1, 120), 0.01, 0.99)
    noise = rng.uniform(0.01, 0.99, 120)
    members = {"good": member(informative, labels, folds), "noise": member(noise, labels, folds)}
    scores, overall, per_fold = fuse(members, "stacking")
    predicted = np.where(scores["p_a"] > 0.5, "a", "b")
    assert (predicted == scores["label"]).mean() >= 0.85
    assert overall["good"] > overall["noise"] and all(w["good"] > w["noise"] for w in per_fold.values())
    # Fold 0's stacker never saw fold 0: flipping fold 0's labels leaves its fused scores unchanged.
    flipped = {name: frame.assign(label=[("b" if l == "a" else "a") if f == 0 else l for l, f in zip(frame["label"], frame["fold"])])
               for name, frame in members.items()}
    again, _, _ = fuse(flipped, "stacking")
    fold0 = scores["fold"] == 0
    np.testing.assert_allclose(again.loc[fold0, "p_a"], scores.loc[fold0, "p_a"])


def test_simplex_grid_lists_every_weighting_once_in_order():
    import itertools
    from math import comb

    for members, step in [(1, 0.1), (3, 0.25), (4, 0.1)]:
        ticks = round(1 / step)
        expected = [c for c in itertools.product(range(ticks + 1), repeat=members) if sum(c) == ticks]
        assert np.array_equal(simplex_grid(members, step), np.array(expected, float) / ticks)
    eight = simplex_grid(8, 0.1)  # 214 million tuples if the product were filtered
    assert len(eight) == comb(17, 7) and np.allclose(eight.sum(1), 1)
