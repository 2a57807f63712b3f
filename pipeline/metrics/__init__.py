"""Classification and continuous-task metrics (numpy only)."""
from __future__ import annotations

import numpy as np


def probability_columns(classes: list[str]) -> list[str]:
    """Column names of class probabilities in a score matrix."""
    return [f"p_{c}" for c in classes]


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def per_class_recall(matrix: np.ndarray) -> np.ndarray:
    support = matrix.sum(1)
    return np.divide(np.diag(matrix), support, out=np.zeros(len(matrix)), where=support > 0)


def unweighted_average_recall(matrix: np.ndarray) -> float:
    """Mean recall over the classes present in the ground truth (balanced accuracy)."""
    present = matrix.sum(1) > 0
    return float(per_class_recall(matrix)[present].mean()) if present.any() else 0.0


def macro_f1(matrix: np.ndarray) -> float:
    true_positive = np.diag(matrix).astype(float)
    predicted, actual = matrix.sum(0), matrix.sum(1)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, actual, out=np.zeros_like(true_positive), where=actual > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(true_positive), where=denominator > 0)
    present = actual > 0
    return float(f1[present].mean()) if present.any() else 0.0


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    matrix = confusion_matrix(y_true, y_pred, len(classes))
    recalls = per_class_recall(matrix)
    return {
        "clips": int(len(y_true)),
        "accuracy": float(np.mean(np.asarray(y_true) == np.asarray(y_pred))) if len(y_true) else 0.0,
        "uar": unweighted_average_recall(matrix),
        "macro_f1": macro_f1(matrix),
        "recall": {c: float(r) for c, r in zip(classes, recalls)},
    }


def concordance(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Lin's concordance correlation coefficient of two 1-D series."""
    prediction, truth = np.asarray(prediction, float), np.asarray(truth, float)
    mean_p, mean_t = prediction.mean(), truth.mean()
    covariance = ((prediction - mean_p) * (truth - mean_t)).mean()
    denominator = prediction.var() + truth.var() + (mean_p - mean_t) ** 2
    return float(2 * covariance / denominator) if denominator > 0 else 0.0
