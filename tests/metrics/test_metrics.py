import numpy as np
import pytest

from pipeline.metrics import classification_report, confusion_matrix, macro_f1, unweighted_average_recall


def test_uar_is_mean_of_class_recalls_on_imbalanced_data():
    truth = np.array([0] * 8 + [1] * 2)
    predicted = np.array([0] * 8 + [0, 1])
    matrix = confusion_matrix(truth, predicted, 2)
    assert matrix.tolist() == [[8, 0], [1, 1]]
    assert unweighted_average_recall(matrix) == pytest.approx((1.0 + 0.5) / 2)
    report = classification_report(truth, predicted, ["a", "b"])
    assert report["accuracy"] == pytest.approx(0.9)
    assert report["recall"] == {"a": 1.0, "b": 0.5}


def test_macro_f1_matches_hand_computation():
    matrix = np.array([[3, 1], [2, 4]])
    f1_a = 2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4)
    f1_b = 2 * (4 / 5) * (4 / 6) / (4 / 5 + 4 / 6)
    assert macro_f1(matrix) == pytest.approx((f1_a + f1_b) / 2)


def test_classes_absent_from_truth_do_not_count():
    matrix = confusion_matrix(np.array([0, 0, 1]), np.array([0, 2, 1]), 3)
    assert unweighted_average_recall(matrix) == pytest.approx(0.75)


def test_member_without_predictions_reports_zero_clips():
    report = classification_report(np.array([]), np.array([]), ["a", "b"])
    assert report["clips"] == 0 and report["uar"] == 0.0
