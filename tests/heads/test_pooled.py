import numpy as np
import pandas as pd
import pytest

from pipeline.config import TrainParams
from pipeline.heads import HEADS
from pipeline.heads.pooled import pool_statistics, pooled_matrix
from pipeline.models import ModelSpec, branch_spec
from pipeline.tasks.classification import ClassificationTask
from pipeline.training import cross_validate


def build(name, input_dim, **options):
    cls = HEADS.get(name)
    return cls(input_dim, HEADS.config(name, options, "test"))


def grouped_blobs(seed=0, groups=6, per_class=8, classes=3, dim=20):
    """Class-dependent means plus a per-group offset (the speaker effect)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.5, (classes, dim))
    x, y, g = [], [], []
    for group in range(groups):
        offset = rng.normal(0, 0.5, dim)
        for label in range(classes):
            x.append(centres[label] + offset + rng.normal(0, 1.0, (per_class, dim)))
            y += [label] * per_class
            g += [f"s{group}"] * per_class
    return np.concatenate(x), np.array(y), np.array(g)


def test_pool_statistics_over_visible_frames_only():
    frames = np.array([[1.0, 10.0], [3.0, 30.0], [100.0, 100.0], [5.0, 50.0]])
    mask = np.array([True, True, False, True])
    pooled = pool_statistics(frames, mask, ["mean", "std", "p50"])
    visible = frames[mask]
    np.testing.assert_allclose(pooled, np.concatenate([visible.mean(0), visible.std(0), np.median(visible, 0)]), rtol=1e-6)
    assert not pool_statistics(frames, np.zeros(4, bool), ["mean", "std"]).any()


def test_single_frame_features_are_kept_as_they_are():
    sequences = {"a": (np.array([[1.0, 2.0]]), np.array([True])), "b": (np.array([[3.0, 4.0]]), np.array([True]))}
    np.testing.assert_array_equal(pooled_matrix(sequences, ["a", "b"], ["mean", "std", "p90"]), [[1, 2], [3, 4]])


def test_unknown_statistic_is_rejected_by_name():
    with pytest.raises(ValueError, match="p200"):
        build("svm", 4, statistics=["mean", "p200"])


def test_svm_kernel_trick_matches_a_plain_linear_svm():
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    x, y, groups = grouped_blobs()
    head = build("svm", x.shape[1], C=[0.01]).fit(x[:100], y[:100], groups[:100], 3, seed=0)
    reference = SVC(kernel="linear", C=0.01, class_weight="balanced").fit(StandardScaler().fit(x[:100]).transform(x[:100]), y[:100])
    scaled_test = StandardScaler().fit(x[:100]).transform(x[100:])
    # The head predicts from the primal weights of its Gram-matrix SVM: the same decision
    # values as a plain linear SVM (up to its float32 support vectors), hence the same labels.
    decisions = head.decision_values(x[100:])
    np.testing.assert_allclose(decisions, reference.decision_function(scaled_test), atol=1e-3)
    np.testing.assert_array_equal(decisions.argmax(1), reference.predict(scaled_test))


@pytest.mark.parametrize("name", ["svm", "logreg", "lightgbm"])
def test_pooled_heads_learn_and_return_probabilities(name):
    x, y, groups = grouped_blobs()
    train, test = groups != "s5", groups == "s5"
    head = build(name, x.shape[1]).fit(x[train], y[train], groups[train], 3, seed=0)
    probabilities = head.predict_proba(x[test])
    assert probabilities.shape == (test.sum(), 3)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-6)
    assert (probabilities.argmax(1) == y[test]).mean() >= 0.8


def test_regularisation_is_chosen_on_training_speakers_only():
    x, y, groups = grouped_blobs()
    train = groups != "s5"
    head = build("svm", x.shape[1], C=[1e-4, 1e-2, 1.0]).fit(x[train], y[train], groups[train], 3, seed=0)
    assert head.chosen["C"] in (1e-4, 1e-2, 1.0)
    assert set(head.chosen["inner_uar"]) == {1e-4, 1e-2, 1.0}
    # Changing the held-out speaker's labels cannot change the choice: it never saw them.
    y_scrambled = y.copy()
    y_scrambled[~train] = (y[~train] + 1) % 3
    again = build("svm", x.shape[1], C=[1e-4, 1e-2, 1.0]).fit(x[train], y_scrambled[train], groups[train], 3, seed=0)
    assert again.chosen == head.chosen


def test_cross_validation_with_a_pooled_head_scores_every_clip_once():
    x, y, groups = grouped_blobs(per_class=4)
    classes = ["a", "b", "c"]
    clip_ids = [f"clip{i:03d}" for i in range(len(y))]
    # Three frames per clip, the last one masked out.
    sequences = {c: (np.stack([row, row + 0.1, row * 0 + 99]).astype(np.float32), np.array([True, True, False])) for c, row in zip(clip_ids, x)}
    folds = {g: i for i, g in enumerate(sorted(set(groups)))}
    clips = pd.DataFrame({"clip_id": clip_ids, "label": [classes[i] for i in y], "speaker": groups, "fold": [folds[g] for g in groups]})
    spec = ModelSpec([branch_spec("prosody", "svm", {"C": [0.01]}, x.shape[1])], 3)
    result = cross_validate(spec, {"prosody": sequences}, clips, ClassificationTask(ClassificationTask.Config(classes)), TrainParams(workers=1))
    assert sorted(result.scores["clip_id"]) == clip_ids
    assert len(result.fold_states) == len(folds)
    predicted = result.scores[["p_a", "p_b", "p_c"]].to_numpy().argmax(1)
    truth = result.scores["label"].map(classes.index).to_numpy()
    assert (predicted == truth).mean() >= 0.8


def informative_and_noise_columns(seed=0, noise=200):
    """grouped_blobs' 20 class-dependent columns followed by ``noise`` columns of pure noise."""
    x, y, groups = grouped_blobs(seed)
    rng = np.random.default_rng(seed + 1)
    return np.hstack([x, rng.normal(0, 1, (len(x), noise))]), y, groups


@pytest.mark.parametrize("name", ["svm", "logreg"])
def test_feature_selection_keeps_the_ranked_columns_and_zeroes_the_rest(name):
    from sklearn.feature_selection import f_classif

    x, y, groups = informative_and_noise_columns()
    train = groups != "s5"
    head = build(name, x.shape[1], C=[1e-2], select_k=[20]).fit(x[train], y[train], groups[train], 3, seed=0)
    weights = head.state()["weights"]
    assert weights.shape == (len(weights), 220)
    kept = np.flatnonzero(np.abs(weights).sum(0) > 0)
    # The 20 columns of largest F on the training part (standardising does not move F).
    expected = np.sort(np.argsort(-f_classif(x[train], y[train])[0])[:20])
    np.testing.assert_array_equal(kept, expected)
    assert (kept < 20).mean() >= 0.9  # nearly all the class-dependent columns
    assert (head.predict_proba(x[~train]).argmax(1) == y[~train]).mean() >= 0.8


def test_feature_count_is_chosen_with_c_on_training_speakers_only():
    x, y, groups = informative_and_noise_columns(noise=2000)
    train = groups != "s5"
    options = {"C": [1e-3, 1e-2], "select_k": [10, 20, 0]}
    head = build("svm", x.shape[1], **options).fit(x[train], y[train], groups[train], 3, seed=0)
    assert set(head.chosen["inner_uar_by_k"]) == {10, 20, 2020}
    # 2000 noise columns swamp 20 informative ones: the inner CV prefers a selection.
    assert head.chosen["select_k"] in (10, 20)
    assert head.chosen["inner_uar_by_k"][head.chosen["select_k"]] > head.chosen["inner_uar_by_k"][2020]
    scrambled = y.copy()
    scrambled[~train] = (y[~train] + 1) % 3  # the held-out speaker's labels cannot move the choice
    again = build("svm", x.shape[1], **options).fit(x[train], scrambled[train], groups[train], 3, seed=0)
    assert again.chosen == head.chosen


def test_select_k_zero_is_the_unselected_head():
    x, y, groups = grouped_blobs()
    plain_head = build("svm", x.shape[1], C=[1e-2]).fit(x, y, groups, 3, seed=0)
    all_kept = build("svm", x.shape[1], C=[1e-2], select_k=[0, 500]).fit(x, y, groups, 3, seed=0)
    np.testing.assert_array_equal(plain_head.state()["weights"], all_kept.state()["weights"])
    np.testing.assert_array_equal(plain_head.predict_proba(x), all_kept.predict_proba(x))
