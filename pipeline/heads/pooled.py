"""Classical heads on pooled clip statistics: linear SVM, logistic regression and LightGBM.

Each clip's visible frames are pooled into one vector (their mean, plus standard deviation
and percentiles when clips have several frames), then a scikit-learn style estimator is fit
per fold. These are the heads of the paralinguistics literature (a linear SVM on openSMILE
functionals is the GeMAPS/ComParE reference), registered in the same ``HEADS`` registry as
the neural heads, so a branch switches with ``head.type: svm``; they are not neural (no
fusion can hold them) and have no per-step output (no continuous task). Hyper-parameters
given as a list are chosen inside the training part of each fold by a speaker-grouped inner
cross-validation: the held-out speakers never influence them.

A fitted head is described by plain arrays and text (``state()``; ``from_state`` rebuilds it):
the linear SVM by its primal one-vs-one weights, logistic regression by its coefficients,
the scaler and the probability calibration by their parameters, LightGBM by its model text.
Predictions are always made from that description, so a head loaded from a checkpoint
predicts exactly what the trained one did.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from pipeline.heads import HEADS
from pipeline.metrics import confusion_matrix, unweighted_average_recall
from pipeline.sklearn_state import logistic_regression, standard_scaler

STATISTICS = ("mean", "std", "p10", "p50", "p90")


def pool_statistics(frames: np.ndarray, mask: np.ndarray, statistics: list[str]) -> np.ndarray:
    """One clip's [T, D] frames -> [len(statistics) * D] over its visible frames (zeros if none)."""
    visible = frames[mask]
    if not len(visible):
        return np.zeros(len(statistics) * frames.shape[1], np.float32)
    parts = []
    for name in statistics:
        if name == "mean":
            parts.append(visible.mean(0))
        elif name == "std":
            parts.append(visible.std(0))
        else:
            parts.append(np.percentile(visible, float(name[1:]), axis=0))
    return np.concatenate(parts).astype(np.float32)


def statistics_used(sequences: dict[str, tuple], clip_ids: list[str], statistics: list[str]) -> list[str]:
    """The statistics pooled for these clips. Single-frame features (e.g. openSMILE
    functionals) are already clip statistics: only their mean, i.e. the vector itself, is kept."""
    single_frame = all(len(sequences[c][0]) <= 1 for c in clip_ids)
    return ["mean"] if single_frame else list(statistics)


def pooled_matrix(sequences: dict[str, tuple], clip_ids: list[str], statistics: list[str]) -> np.ndarray:
    """[N, S * D] pooled statistics of the clips (see :func:`statistics_used`)."""
    used = statistics_used(sequences, clip_ids, statistics)
    return np.stack([pool_statistics(sequences[c][0], sequences[c][1], used) for c in clip_ids])


class PooledHead:
    """Base of the classical heads: ``fit`` on pooled statistics, ``predict_proba``, and
    ``state`` / ``from_state`` for checkpoints (arrays, numbers and text only)."""

    registry_name: ClassVar[str]
    Config: ClassVar[type]
    neural: ClassVar[bool] = False
    per_step: ClassVar[bool] = False
    raw_input: ClassVar[bool] = False
    # The linear heads' solvers are deterministic (the seed reaches no random choice).
    seeded: ClassVar[bool] = False

    def __init__(self, input_dim: int, config: Any) -> None:
        self.input_dim = input_dim
        self.config = config
        self.statistics = list(config.statistics)
        unknown = [s for s in self.statistics if s not in ("mean", "std") and not (s[:1] == "p" and s[1:].isdigit() and int(s[1:]) <= 100)]
        if unknown or not self.statistics:
            raise ValueError(f"{self.registry_name}: statistics {unknown or '[]'} not understood; use mean, std and pNN percentiles, e.g. {list(STATISTICS)}")
        negative = [k for k in getattr(config, "select_k", []) if k < 0]
        if negative:
            raise ValueError(f"{self.registry_name}: select_k {negative} not understood; give numbers of features to keep, 0 for all")
        self.chosen: dict[str, Any] = {}

    def fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray, num_classes: int, seed: int,
            augmented: np.ndarray | None = None) -> "PooledHead":
        """``augmented`` marks the rows that are augmented copies (with their original's group):
        they are trained on, never the rows an inner validation scores."""
        raise NotImplementedError

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """Everything ``predict_proba`` needs, as numpy arrays, numbers and strings."""
        raise NotImplementedError

    def load_state(self, state: dict[str, Any]) -> "PooledHead":
        raise NotImplementedError

    @classmethod
    def from_state(cls, input_dim: int, config: Any, state: dict[str, Any]) -> "PooledHead":
        return cls(input_dim, config).load_state(state)


def svm_primal_weights(dual_coef: np.ndarray, n_support: np.ndarray, support_vectors: np.ndarray) -> np.ndarray:
    """[pairs, D] one-vs-one weight vectors of a linear-kernel libsvm model, pairs in libsvm's
    order (0v1, 0v2, ..., 1v2, ...): its decision values are ``x @ weights.T + intercept``."""
    classes = dual_coef.shape[0] + 1
    starts = np.cumsum([0, *n_support])
    weights = []
    for first in range(classes):
        for second in range(first + 1, classes):
            first_svs, second_svs = slice(starts[first], starts[first + 1]), slice(starts[second], starts[second + 1])
            weights.append(dual_coef[second - 1, first_svs] @ support_vectors[first_svs] + dual_coef[first, second_svs] @ support_vectors[second_svs])
    return np.array(weights)


def one_vs_rest_decisions(ovo: np.ndarray, classes: int) -> np.ndarray:
    """libsvm's one-vs-one decision values -> per-class scores: votes plus the summed
    confidences squashed into (-1/3, 1/3), scikit-learn's tie-breaking transform."""
    votes = np.zeros((len(ovo), classes))
    confidence = np.zeros((len(ovo), classes))
    pair = 0
    for first in range(classes):
        for second in range(first + 1, classes):
            confidence[:, first] += ovo[:, pair]
            confidence[:, second] -= ovo[:, pair]
            votes[ovo[:, pair] >= 0, first] += 1
            votes[ovo[:, pair] < 0, second] += 1
            pair += 1
    return votes + confidence / (3 * (np.abs(confidence) + 1))


def feature_counts(select_k: list[int], dim: int) -> list[int]:
    """``select_k`` as numbers of features to keep (0, or at least ``dim``: all of them), in
    order, without repeats."""
    counts = []
    for k in select_k:
        kept = dim if k <= 0 or k >= dim else int(k)
        if kept not in counts:
            counts.append(kept)
    return counts or [dim]


def feature_ranking(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Feature columns, most class-discriminative first, by the one-way ANOVA F statistic of
    each column over the classes (constant columns last)."""
    from sklearn.feature_selection import f_classif

    if len(np.unique(y)) < 2:
        return np.arange(x.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Features [...] are constant": ranked last
        f_statistic, _ = f_classif(x, y)
    return np.argsort(-np.nan_to_num(f_statistic, nan=-1.0, posinf=np.finfo(f_statistic.dtype).max), kind="stable")


def kept_columns(ranking: np.ndarray | None, kept: int, dim: int) -> np.ndarray | slice:
    """The ``kept`` best-ranked columns in column order; every column (a view) when all are kept."""
    return slice(None) if kept >= dim else np.sort(ranking[:kept])


class _GridSearchedLinear(PooledHead):
    """Standardise with the training part's statistics, pick C (and, with several
    ``select_k``, how many features to keep, ranked by their ANOVA F statistic on the same
    training part) by inner grouped CV (UAR), refit on the whole training part. Class probabilities come from a multinomial logistic
    calibration of the decision values, fit on the same inner cross-validation's held-out
    speakers (Platt scaling, speaker-grouped)."""

    def _estimator(self, c: float, seed: int):
        raise NotImplementedError

    # Estimators may read a precomputed Gram matrix instead of the features (see the SVM).
    def _inputs(self, x: np.ndarray, reference: np.ndarray) -> np.ndarray:
        return x

    def _decisions(self, model, inputs: np.ndarray) -> np.ndarray:
        """[N, classes seen in training] decision values, whatever the class count."""
        values = model.decision_function(inputs)
        return np.stack([-values, values], 1) if values.ndim == 1 else values

    def _linear_form(self, model, train_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(weights [K, D], intercept [K]) of the refit model's decision function on
        standardised features."""
        return model.coef_, model.intercept_

    def fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray, num_classes: int, seed: int,
            augmented: np.ndarray | None = None) -> "PooledHead":
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GroupKFold, LeaveOneGroupOut
        from sklearn.preprocessing import StandardScaler

        self.num_classes = num_classes
        grid = list(self.config.C)
        kept_grid = feature_counts(self.config.select_k, x.shape[1])
        selecting = min(kept_grid) < x.shape[1]
        best_c, best_kept, calibration = grid[0], kept_grid[0], None
        original = np.ones(len(y), bool) if augmented is None else ~np.asarray(augmented, bool)
        unique_groups = np.unique(groups)
        if len(unique_groups) > 1 and len(np.unique(y)) > 1:
            folds = self.config.inner_folds
            splitter = LeaveOneGroupOut() if folds == 0 or folds >= len(unique_groups) else GroupKFold(folds)
            seen = np.unique(y)
            decisions = {(k, c): np.zeros((len(y), len(seen))) for k in kept_grid for c in grid}
            for train, test in splitter.split(x, y, groups):
                test = test[original[test]]  # copies train; C and the calibration are judged on clips
                if len(np.unique(y[train])) < len(seen) or not len(test):
                    continue  # a class only this speaker has: nothing to learn it from here
                scaler = StandardScaler().fit(x[train])
                inner_train, inner_test = scaler.transform(x[train]), scaler.transform(x[test])
                # The ranking sees the inner training part only, like the scaler.
                ranking = feature_ranking(inner_train, y[train]) if selecting else None
                for k in kept_grid:
                    columns = kept_columns(ranking, k, x.shape[1])
                    fit_part, test_part = inner_train[:, columns], inner_test[:, columns]
                    fit_inputs, test_inputs = self._inputs(fit_part, fit_part), self._inputs(test_part, fit_part)
                    for c in grid:
                        model = self._estimator(c, seed).fit(fit_inputs, y[train])
                        decisions[k, c][test] = self._decisions(model, test_inputs)
            scores = {key: unweighted_average_recall(confusion_matrix(y[original], seen[values[original].argmax(1)], num_classes))
                      for key, values in decisions.items()}
            # Ties go to the smaller C (the more regularised model), then to more features.
            best_kept, best_c = max(scores, key=lambda key: (round(scores[key], 9), -key[1], key[0]))
            self.chosen = {"C": best_c, "inner_uar": {c: scores[best_kept, c] for c in grid}}
            if len(kept_grid) > 1:
                self.chosen.update({"select_k": best_kept,
                                    "inner_uar_by_k": {k: max(scores[k, c] for c in grid) for k in kept_grid}})
            calibration = LogisticRegression(max_iter=1000).fit(decisions[best_kept, best_c][original], y[original])
        scaler = StandardScaler().fit(x)
        train_x = scaler.transform(x).astype(np.float32)
        columns = kept_columns(feature_ranking(train_x, y) if best_kept < x.shape[1] else None, best_kept, x.shape[1])
        train_part = train_x[:, columns]
        model = self._estimator(best_c, seed).fit(self._inputs(train_part, train_part), y)
        kept_weights, intercept = self._linear_form(model, train_part)
        # Features left out get weight 0: the state (and every checkpoint) keeps its full-width form.
        weights = np.zeros((len(kept_weights), x.shape[1]))
        weights[:, columns] = kept_weights
        return self.load_state({
            "num_classes": num_classes, "scaler_mean": scaler.mean_, "scaler_scale": scaler.scale_,
            "weights": weights, "intercept": np.asarray(intercept, np.float64), "classes": model.classes_,
            **({"calibration_coef": calibration.coef_, "calibration_intercept": calibration.intercept_,
                "calibration_classes": calibration.classes_} if calibration is not None else {}),
        })

    def state(self) -> dict[str, Any]:
        return dict(self._state)

    def load_state(self, state: dict[str, Any]) -> "PooledHead":
        self._state = dict(state)
        self.num_classes = int(state["num_classes"])
        self.scaler = standard_scaler(state["scaler_mean"], state["scaler_scale"])
        self.classes = np.asarray(state["classes"])
        self.calibration = (logistic_regression(state["calibration_coef"], state["calibration_intercept"], state["calibration_classes"])
                            if "calibration_coef" in state else None)
        return self

    def decision_values(self, x: np.ndarray) -> np.ndarray:
        """[N, classes seen in training] decision values of the refit model."""
        values = self.scaler.transform(x) @ self._state["weights"].T + self._state["intercept"]
        return np.concatenate([-values, values], 1) if values.shape[1] == 1 else values

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        decisions = self.decision_values(x)
        if self.calibration is not None:
            seen, calibrated = self.calibration.classes_, self.calibration.predict_proba(decisions)
        else:
            seen, calibrated = self.classes, np.exp(decisions - decisions.max(1, keepdims=True))
            calibrated /= calibrated.sum(1, keepdims=True)
        probabilities = np.zeros((len(x), self.num_classes))
        probabilities[:, seen] = calibrated
        return probabilities


@HEADS.register("svm")
class LinearSvmHead(_GridSearchedLinear):
    """Linear SVM (libsvm; one-vs-rest decision values from its one-vs-one votes)."""

    @dataclass(frozen=True)
    class Config:
        C: list[float] = field(default_factory=lambda: [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2])
        inner_folds: int = 0  # 0: leave one training speaker out
        # Features kept, by ANOVA F rank within each training part; 0 keeps all. A list is
        # searched with C by the inner cross-validation (e.g. [500, 1000, 2000, 0] on ComParE).
        select_k: list[int] = field(default_factory=lambda: [0])
        statistics: list[str] = field(default_factory=lambda: ["mean", "std"])
        class_weights: bool = True

    def _estimator(self, c: float, seed: int):
        from sklearn.svm import SVC

        weight = "balanced" if self.config.class_weights else None
        return SVC(kernel="precomputed", C=c, class_weight=weight, random_state=seed)

    def _inputs(self, x: np.ndarray, reference: np.ndarray) -> np.ndarray:
        # The linear kernel as one matrix product: libsvm otherwise recomputes dot products
        # of 6373-dimensional ComParE vectors inside its solver, about 30x slower.
        return x @ reference.T

    def _linear_form(self, model, train_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        support_vectors = train_x[model.support_].astype(np.float64)
        return svm_primal_weights(model.dual_coef_, model.n_support_, support_vectors), model.intercept_

    def decision_values(self, x: np.ndarray) -> np.ndarray:
        ovo = self.scaler.transform(x) @ self._state["weights"].T + self._state["intercept"]
        if len(self.classes) == 2:
            return np.concatenate([-ovo, ovo], 1)
        return one_vs_rest_decisions(ovo, len(self.classes))


@HEADS.register("logreg")
class LogisticRegressionHead(_GridSearchedLinear):
    """Multinomial logistic regression (L2), C by inner grouped CV."""

    @dataclass(frozen=True)
    class Config:
        C: list[float] = field(default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0])
        inner_folds: int = 0
        # Features kept, by ANOVA F rank within each training part; 0 keeps all. A list is
        # searched with C by the inner cross-validation (e.g. [500, 1000, 2000, 0] on ComParE).
        select_k: list[int] = field(default_factory=lambda: [0])
        statistics: list[str] = field(default_factory=lambda: ["mean", "std"])
        class_weights: bool = True

    def _estimator(self, c: float, seed: int):
        from sklearn.linear_model import LogisticRegression

        weight = "balanced" if self.config.class_weights else None
        return LogisticRegression(C=c, max_iter=2000, class_weight=weight, random_state=seed)


@HEADS.register("lightgbm")
class LightGbmHead(PooledHead):
    """Gradient-boosted trees on the pooled statistics; the number of rounds is set by early
    stopping on a speaker-disjoint validation part of the training folds."""

    seeded = True  # the seed draws the validation speakers and each tree's features

    @dataclass(frozen=True)
    class Config:
        num_leaves: int = 15
        learning_rate: float = 0.05
        max_rounds: int = 500
        early_stopping_rounds: int = 40
        feature_fraction: float = 0.3
        min_child_samples: int = 10
        statistics: list[str] = field(default_factory=lambda: ["mean", "std", "p10", "p50", "p90"])
        class_weights: bool = True

    def fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray, num_classes: int, seed: int,
            augmented: np.ndarray | None = None) -> "PooledHead":
        import lightgbm

        rng = np.random.default_rng(seed)
        unique_groups = rng.permutation(np.unique(groups))
        held_out = np.isin(groups, unique_groups[: max(1, len(unique_groups) // 5)])
        if len(unique_groups) < 2 or held_out.all():
            held_out = rng.random(len(y)) < 0.2
        counts = np.bincount(y, minlength=num_classes).astype(float)
        class_weight = len(y) / (num_classes * np.maximum(counts, 1)) if self.config.class_weights else np.ones(num_classes)
        settings = {
            "objective": "multiclass", "num_class": num_classes, "num_leaves": self.config.num_leaves,
            "learning_rate": self.config.learning_rate, "feature_fraction": self.config.feature_fraction,
            "min_child_samples": self.config.min_child_samples, "seed": seed, "num_threads": 1,
            "verbosity": -1, "deterministic": True, "force_col_wise": True,
        }
        # Early stopping watches held-out clips only (the copies of held-out speakers are neither fit nor watched).
        fit, val = ~held_out, held_out & (np.ones(len(y), bool) if augmented is None else ~np.asarray(augmented, bool))
        train_set = lightgbm.Dataset(x[fit], y[fit], weight=class_weight[y[fit]])
        val_set = lightgbm.Dataset(x[val], y[val], weight=class_weight[y[val]], reference=train_set)
        probe = lightgbm.train(settings, train_set, self.config.max_rounds, valid_sets=[val_set],
                               callbacks=[lightgbm.early_stopping(self.config.early_stopping_rounds, verbose=False)])
        rounds = max(1, probe.best_iteration)
        self.chosen = {"rounds": rounds}
        model = lightgbm.train(settings, lightgbm.Dataset(x, y, weight=class_weight[y]), rounds)
        return self.load_state({"num_classes": num_classes, "model": model.model_to_string()})

    def state(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "model": self.model_text}

    def load_state(self, state: dict[str, Any]) -> "PooledHead":
        import lightgbm

        self.num_classes, self.model_text = int(state["num_classes"]), str(state["model"])
        self.model = lightgbm.Booster(model_str=self.model_text)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(x)
