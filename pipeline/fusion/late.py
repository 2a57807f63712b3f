"""Score-matrix late fusion (MSFF): combine the members' class probabilities.

``weighted``: a weighted average, weights searched on a simplex grid to maximise unweighted
average recall. ``stacking``: a multinomial logistic regression on the members' log
probabilities. ``mean``: equal weights. For the reported out-of-fold result, whatever is
fit for fold k is fit on the other folds' out-of-fold scores only, so no clip's own label
ever chooses how it is fused. A clip that a member could not score (e.g. no audio) is fused
from the members that did (weights renormalised; for stacking, the member's input is the
uniform distribution plus an "absent" indicator).
"""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from pipeline.metrics import concordance, confusion_matrix, probability_columns, unweighted_average_recall


def align_members(members: dict[str, pd.DataFrame], classes: list[str]) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Stack member probabilities on the union of clips: (clips, probs [M, N, C], present [M, N])."""
    columns = probability_columns(classes)
    clips = (
        pd.concat([scores[["clip_id", "fold", "label"]] for scores in members.values()])
        .drop_duplicates("clip_id")
        .sort_values("clip_id")
        .reset_index(drop=True)
    )
    probabilities = np.zeros((len(members), len(clips), len(classes)))
    present = np.zeros((len(members), len(clips)), bool)
    for m, scores in enumerate(members.values()):
        rows = clips["clip_id"].map({c: i for i, c in enumerate(scores["clip_id"])})
        has = rows.notna().to_numpy()
        probabilities[m, has] = scores[columns].to_numpy()[rows[has].astype(int)]
        present[m, has] = True
    return clips, probabilities, present


def combine(probabilities: np.ndarray, present: np.ndarray, weights: np.ndarray) -> np.ndarray:
    effective = weights[:, None] * present  # [M, N]
    total = effective.sum(0)
    # Where every member with weight is absent, fall back to an equal vote of those present.
    fallback = total <= 0
    effective[:, fallback] = present[:, fallback]
    total = effective.sum(0).clip(min=1e-12)
    return np.einsum("mn,mnc->nc", effective, probabilities) / total[:, None]


def simplex_grid(members: int, step: float) -> np.ndarray:
    """Every weighting of ``members`` in multiples of ``step`` that sums to one, in
    lexicographic order. Built from the compositions directly (stars and bars): filtering
    the full product would walk (1/step + 1)^members tuples, 214 million for 8 members."""
    ticks = int(round(1 / step))
    grid = []
    for bars in itertools.combinations(range(ticks + members - 1), members - 1):
        edges = (-1, *bars, ticks + members - 1)
        grid.append([edges[i + 1] - edges[i] - 1 for i in range(members)])
    return np.array(sorted(grid), dtype=float) / ticks


def fit_weights(probabilities: np.ndarray, present: np.ndarray, labels: np.ndarray, step: float) -> np.ndarray:
    """Weights maximising UAR; ties broken by log-likelihood, then by the more even weighting."""
    num_classes = probabilities.shape[2]
    best, best_key = None, None
    for weights in simplex_grid(len(probabilities), step):
        fused = combine(probabilities, present, weights)
        uar = unweighted_average_recall(confusion_matrix(labels, fused.argmax(1), num_classes))
        log_likelihood = np.log(fused[np.arange(len(labels)), labels] + 1e-9).mean()
        key = (round(uar, 9), round(log_likelihood, 9), -np.abs(weights - 1 / len(weights)).sum())
        if best_key is None or key > best_key:
            best, best_key = weights, key
    return best


def stacking_inputs(probabilities: np.ndarray, present: np.ndarray) -> np.ndarray:
    """[N, M * (C + 1)]: each member's log probabilities (uniform where absent) and its absence."""
    members, _, classes = probabilities.shape
    filled = np.where(present[..., None], probabilities, 1.0 / classes)
    logs = np.log(np.clip(filled, 1e-6, 1.0))
    return np.concatenate([np.concatenate([logs[m], ~present[m, :, None]], axis=1) for m in range(members)], axis=1)


def fit_stacking(probabilities: np.ndarray, present: np.ndarray, labels: np.ndarray, seed: int = 0):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced", random_state=seed).fit(
        stacking_inputs(probabilities, present), labels
    )


def stacked(model, probabilities: np.ndarray, present: np.ndarray, num_classes: int) -> np.ndarray:
    fused = np.zeros((probabilities.shape[1], num_classes))
    fused[:, model.classes_] = model.predict_proba(stacking_inputs(probabilities, present))
    return fused


def stacking_weights(model, names: list[str], num_classes: int) -> dict[str, float]:
    """A member's share of the stacker's absolute coefficients: what the report shows as its weight."""
    magnitude = np.abs(model.coef_).reshape(len(model.coef_), len(names), num_classes + 1).sum(axis=(0, 2))
    return dict(zip(names, map(float, magnitude / max(magnitude.sum(), 1e-12))))


def late_fusion(
    members: dict[str, pd.DataFrame], classes: list[str], method: str, step: float
) -> tuple[pd.DataFrame, dict[str, float], dict[int, dict[str, float]]]:
    """Returns (fused out-of-fold scores, weights fit on all folds, weights used per fold)."""
    clips, probabilities, present = align_members(members, classes)
    labels = clips["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    folds = clips["fold"].to_numpy()
    names = list(members)
    fused = np.zeros((len(clips), len(classes)))
    per_fold = {}
    if method == "stacking":
        for fold in np.unique(folds):
            # Test clips (fold -1) are fused with what the labelled folds taught, never fit on.
            train, test = (folds != fold) & (folds >= 0), folds == fold
            model = fit_stacking(probabilities[:, train], present[:, train], labels[train])
            fused[test] = stacked(model, probabilities[:, test], present[:, test], len(classes))
            per_fold[int(fold)] = stacking_weights(model, names, len(classes))
        labelled = folds >= 0
        overall = stacking_weights(fit_stacking(probabilities[:, labelled], present[:, labelled], labels[labelled]), names, len(classes))
        scores = clips.copy()
        scores[probability_columns(classes)] = fused
        return scores, overall, per_fold
    for fold in np.unique(folds):
        # Test clips (fold -1) are fused with what the labelled folds taught, never fit on.
        train, test = (folds != fold) & (folds >= 0), folds == fold
        if method == "mean":
            weights = np.full(len(names), 1 / len(names))
        else:
            weights = fit_weights(probabilities[:, train], present[:, train], labels[train], step)
        fused[test] = combine(probabilities[:, test], present[:, test], weights)
        per_fold[int(fold)] = dict(zip(names, map(float, weights)))
    labelled = folds >= 0
    overall = (
        np.full(len(names), 1 / len(names)) if method == "mean"
        else fit_weights(probabilities[:, labelled], present[:, labelled], labels[labelled], step)
    )
    scores = clips.copy()
    scores[probability_columns(classes)] = fused
    return scores, dict(zip(names, map(float, overall))), per_fold


def _mean_ccc(prediction: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([concordance(prediction[:, d], truth[:, d]) for d in range(truth.shape[1])]))


def late_fusion_continuous(
    members: dict[str, pd.DataFrame], dimensions: list[str], method: str, step: float
) -> tuple[pd.DataFrame, dict[str, float], dict[int, dict[str, float]]]:
    """The continuous task's late fusion: a weighted average of the members' per-step
    predictions, weights searched on the simplex grid for the mean CCC over valid steps (each
    fold's weights fit on the other labelled folds). Stacking falls back to the weighted
    search: there are no class scores to stack."""
    keys = ["clip_id", "time_s"]
    base = pd.concat([m[keys + ["fold", "valid", *dimensions]] for m in members.values()]).drop_duplicates(keys)
    base = base.sort_values(keys).reset_index(drop=True)
    predictions = np.zeros((len(members), len(base), len(dimensions)))
    present = np.zeros((len(members), len(base)), bool)
    for m, scores in enumerate(members.values()):
        merged = base[keys].merge(scores[keys + [f"pred_{d}" for d in dimensions]], on=keys, how="left")
        has = merged[f"pred_{dimensions[0]}"].notna().to_numpy()
        predictions[m, has] = merged.loc[has, [f"pred_{d}" for d in dimensions]].to_numpy()
        present[m, has] = True
    truth = base[dimensions].to_numpy()
    valid = base["valid"].astype(bool).to_numpy()
    folds = base["fold"].to_numpy()
    names = list(members)
    grid = simplex_grid(len(names), step) if method != "mean" else np.full((1, len(names)), 1 / len(names))

    def best_weights(rows: np.ndarray) -> np.ndarray:
        scored = [(_mean_ccc(combine(predictions[:, rows], present[:, rows], w), truth[rows]), -np.abs(w - 1 / len(w)).sum(), i)
                  for i, w in enumerate(grid)]
        return grid[max(scored)[2]]

    fused = np.zeros_like(truth, dtype=float)
    per_fold = {}
    for fold in np.unique(folds):
        weights = best_weights((folds != fold) & (folds >= 0) & valid)
        rows = folds == fold
        fused[rows] = combine(predictions[:, rows], present[:, rows], weights)
        per_fold[int(fold)] = dict(zip(names, map(float, weights)))
    overall = best_weights((folds >= 0) & valid)
    scores = base.copy()
    for d, name in enumerate(dimensions):
        scores[f"pred_{name}"] = fused[:, d]
    return scores, dict(zip(names, map(float, overall))), per_fold

