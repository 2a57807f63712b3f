"""Score-matrix late fusion (MSFF): combine the members' scores, for any task.

Methods are a registry (``late_fusion.method``): ``weighted``, a weighted average with weights
searched on a simplex grid for the task's objective (classification: UAR, then the
log-likelihood; continuous: mean CCC); ``stacking``, a multinomial logistic regression on the
members' log probabilities (class scores only); ``mean``, equal weights. For the reported
out-of-fold result, whatever is fit for fold k is fit on the other folds' out-of-fold scores
only, so no clip's own label ever chooses how it is fused; test clips (fold -1) are fused with
what all labelled folds taught. A clip that a member could not score (e.g. no audio) is fused
from the members that did (weights renormalised; for stacking, the member's input is the
uniform distribution plus an "absent" indicator).

The fit is saved as ``checkpoint.json`` (plain JSON: weights, or the stacker's coefficients,
per fold and on all folds); :func:`load_late_fusion` gives a :class:`TrainedLateFusion` whose
``combine`` fuses new member scores (e.g. :meth:`pipeline.checkpoint.TrainedMember.predict`
outputs). Adding a method: a :class:`LateFusionMethod` subclass decorated with
``@LATE_FUSIONS.register("name")``.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from pipeline.registry import Registry
from pipeline.sklearn_state import logistic_regression
from pipeline.tasks import Task, task_from_description

FORMAT = "aver.late_fusion"
VERSION = 1


def combine(values: np.ndarray, present: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted average of the members' scores ([M, N, K]) over the members present at each row."""
    effective = weights[:, None] * present  # [M, N]
    total = effective.sum(0)
    # Where every member with weight is absent, fall back to an equal vote of those present.
    fallback = total <= 0
    effective[:, fallback] = present[:, fallback]
    total = effective.sum(0).clip(min=1e-12)
    return np.einsum("mn,mnc->nc", effective, values) / total[:, None]


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


def stacking_inputs(probabilities: np.ndarray, present: np.ndarray) -> np.ndarray:
    """[N, M * (C + 1)]: each member's log probabilities (uniform where absent) and its absence."""
    members, _, classes = probabilities.shape
    filled = np.where(present[..., None], probabilities, 1.0 / classes)
    logs = np.log(np.clip(filled, 1e-6, 1.0))
    return np.concatenate([np.concatenate([logs[m], ~present[m, :, None]], axis=1) for m in range(members)], axis=1)


class LateFusionMethod:
    """``fit`` returns a JSON-able state; ``apply`` fuses with it; ``weights`` is each
    member's share, for the report."""

    registry_name: ClassVar[str]
    class_scores: ClassVar[bool] = False  # needs class probabilities, not per-step values

    def __init__(self, grid_step: float = 0.1, seed: int = 0) -> None:
        self.grid_step, self.seed = grid_step, seed

    def fit(self, task: Task, values: np.ndarray, present: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
        raise NotImplementedError

    def apply(self, state: dict[str, Any], values: np.ndarray, present: np.ndarray) -> np.ndarray:
        return combine(values, present, np.asarray(state["weights"], float))

    def weights(self, state: dict[str, Any], names: list[str], outputs: int) -> dict[str, float]:
        return dict(zip(names, map(float, state["weights"])))


LATE_FUSIONS: Registry[type[LateFusionMethod]] = Registry("late-fusion method")


@LATE_FUSIONS.register("weighted")
class WeightedAverage(LateFusionMethod):
    """Weights on the simplex grid maximising the task's objective; ties go to the more even weighting."""

    def fit(self, task, values, present, targets):
        best, best_key = None, None
        for weights in simplex_grid(len(values), self.grid_step):
            key = (*task.objective(combine(values, present, weights), targets), -np.abs(weights - 1 / len(weights)).sum())
            if best_key is None or key > best_key:
                best, best_key = weights, key
        return {"weights": [float(w) for w in best]}


@LATE_FUSIONS.register("mean")
class MeanFusion(LateFusionMethod):
    def fit(self, task, values, present, targets):
        return {"weights": [1 / len(values)] * len(values)}


def _logistic(state: dict[str, Any]):
    return logistic_regression(np.asarray(state["coef"], float), np.asarray(state["intercept"], float), np.asarray(state["classes"]))


@LATE_FUSIONS.register("stacking")
class Stacking(LateFusionMethod):
    """Multinomial logistic regression (class-balanced) on the members' log probabilities."""

    class_scores = True

    def fit(self, task, values, present, targets):
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced", random_state=self.seed)
        model.fit(stacking_inputs(values, present), targets)
        return {"coef": model.coef_.tolist(), "intercept": model.intercept_.tolist(), "classes": model.classes_.tolist()}

    def apply(self, state, values, present):
        model = _logistic(state)
        fused = np.zeros((values.shape[1], values.shape[2]))
        fused[:, model.classes_] = model.predict_proba(stacking_inputs(values, present))
        return fused

    def weights(self, state, names, outputs):
        """A member's share of the stacker's absolute coefficients."""
        coef = np.asarray(state["coef"])
        magnitude = np.abs(coef).reshape(len(coef), len(names), outputs + 1).sum(axis=(0, 2))
        return dict(zip(names, map(float, magnitude / max(magnitude.sum(), 1e-12))))


@dataclass
class LateFusionResult:
    scores: pd.DataFrame                      # fused out-of-fold (and test) scores
    weights: dict[str, float]                 # fit on all labelled folds
    per_fold: dict[int, dict[str, float]]     # used for each fold's reported scores
    checkpoint: dict[str, Any]

    def save(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.scores.to_parquet(out_dir / "scores.parquet", index=False)
        method = self.checkpoint["method"]
        (out_dir / "weights.json").write_text(json.dumps({"method": method, "weights": self.weights, "per_fold": self.per_fold}, indent=2))
        (out_dir / "checkpoint.json").write_text(json.dumps(self.checkpoint, indent=1))


def late_fusion(members: dict[str, pd.DataFrame], task: Task, method: str, step: float,
                member_checkpoints: dict[str, str] | None = None) -> LateFusionResult:
    """Fuse the members' score matrices (name -> scores) with ``method``."""
    fuser = LATE_FUSIONS.get(method)(step)
    aligned = task.align(members)
    folds, names, outputs = aligned.folds, list(members), aligned.values.shape[2]
    fused = np.zeros((len(aligned.rows), outputs))
    states, per_fold = {}, {}
    for fold in np.unique(folds):
        train, test = (folds != fold) & (folds >= 0) & aligned.scored, folds == fold
        state = fuser.fit(task, aligned.values[:, train], aligned.present[:, train], aligned.targets[train])
        fused[test] = fuser.apply(state, aligned.values[:, test], aligned.present[:, test])
        states[int(fold)], per_fold[int(fold)] = state, fuser.weights(state, names, outputs)
    labelled = (folds >= 0) & aligned.scored
    overall = fuser.fit(task, aligned.values[:, labelled], aligned.present[:, labelled], aligned.targets[labelled])
    checkpoint = {"format": FORMAT, "version": VERSION, "task": task.describe(), "method": method, "grid_step": step,
                  "members": names, "member_checkpoints": member_checkpoints or {},
                  "overall": overall, "folds": {str(f): s for f, s in states.items()}}
    return LateFusionResult(task.fused_frame(aligned, fused), fuser.weights(overall, names, outputs), per_fold, checkpoint)


def fuse_members(params) -> LateFusionResult:
    """Late fusion of the members named in ``late_fusion.members``, read from their folders."""
    from pipeline.results import member_dir, read_scores
    from pipeline.tasks import task_from_params

    config = params.late_fusion
    members = {name: read_scores(name) for name in config.members}
    checkpoints = {name: str(member_dir(name) / "model.pt") for name in config.members}
    return late_fusion(members, task_from_params(params), config.method, config.grid_step, checkpoints)


@dataclass
class TrainedLateFusion:
    path: Path
    task: Task
    method: LateFusionMethod
    members: list[str]
    member_checkpoints: dict[str, str]
    overall: dict[str, Any]
    folds: dict[int, dict[str, Any]]

    def combine(self, member_scores: dict[str, pd.DataFrame], fold: int | None = None) -> pd.DataFrame:
        """Fuse the members' scores of the same clips (name -> frame with clip_id (time_s for
        the continuous task) and the task's score columns; a member may be left out, or miss
        clips). ``fold`` None: the fit on all labelled folds, what new clips get; a fold
        number: the fit that fold's reported scores used."""
        unknown = sorted(set(member_scores) - set(self.members))
        if unknown:
            raise KeyError(f"{self.path}: {unknown} are not members of this late fusion; members: {self.members}")
        empty = self.task.empty_scores()
        frames = {name: member_scores.get(name, empty) for name in self.members}
        aligned = self.task.align(frames)
        state = self.overall if fold is None else self.folds[fold]
        fused = self.method.apply(state, aligned.values, aligned.present)
        frame = self.task.fused_frame(aligned, fused)
        keys = [c for c in ("clip_id", "time_s") if c in frame]
        return frame[keys + self.task.score_columns()]


def load_late_fusion(path: str | Path) -> TrainedLateFusion:
    path = Path(path)
    try:
        checkpoint = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no late-fusion checkpoint (run the late_fusion stage)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if checkpoint.get("format") != FORMAT or checkpoint.get("version") != VERSION:
        raise ValueError(f"{path}: not a version-{VERSION} late-fusion checkpoint")
    method = LATE_FUSIONS.get(checkpoint["method"])(checkpoint["grid_step"])
    folds = {int(f): s for f, s in checkpoint["folds"].items()}
    return TrainedLateFusion(path, task_from_description(checkpoint["task"]), method, checkpoint["members"],
                             checkpoint["member_checkpoints"], checkpoint["overall"], folds)
