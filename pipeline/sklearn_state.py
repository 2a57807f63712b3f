"""Fitted scikit-learn estimators rebuilt from their parameters, so checkpoints hold arrays
instead of pickles and a rebuilt estimator computes exactly what the fitted one did (its own
``transform`` / ``predict_proba``). Torch-free: late fusion uses it."""
from __future__ import annotations

import numpy as np


def standard_scaler(mean: np.ndarray, scale: np.ndarray):
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler()
    scaler.mean_, scaler.scale_, scaler.var_ = mean, scale, scale**2
    scaler.n_features_in_, scaler.n_samples_seen_ = len(mean), 0
    return scaler


def logistic_regression(coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray):
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression()
    model.coef_, model.intercept_, model.classes_ = coef, intercept, classes
    model.n_features_in_ = coef.shape[1]
    return model
