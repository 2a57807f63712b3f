"""Learning tasks (after pyannote.audio's ``core/task.py``): what a model learns and how it is
scored, separated from how it is trained.

A task owns

- its targets: which clips can be learnt from (``usable_clips``) and what each is taught;
- its batches or windows and its loss (``prepare`` gives a :class:`TaskData` that the fold
  loop in :mod:`pipeline.training` draws batches from);
- how fold outputs become the score matrix (``score_frame``: out-of-fold rows; the held-out
  test split predicted by every fold model and merged by ``merge_folds``; a seed ensemble's
  models of one fold merged by ``merge_seeds``);
- its metrics and its part of the report (``report``, ``summary``, ``figure_columns``, the
  ``headline`` figure whose spread across folds is reported, ``chance_levels``, ``confusion``);
- what late fusion optimises (``align`` the members' scores, ``objective``).

Adding one: a subclass of :class:`Task` with a ``Config`` dataclass and ``from_params``,
decorated with ``@TASKS.register("name")``, in a module imported below. Its modules import
torch only where a model is trained or run, so late fusion and evaluation stay torch-free.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
import pandas as pd

from pipeline.registry import Registry

# clip_id -> (frames [T, D] float32, mask [T] bool, timestamps [T] seconds)
Sequences = dict[str, tuple]


@dataclass
class Batch:
    """What a model is fed in one step: every branch's (x [B, T, D], mask [B, T]) and the
    task's targets for it."""

    inputs: dict[str, tuple]
    targets: Any
    size: int


@dataclass
class TrainingAugmentation:
    """What a member trains on beyond its clips: augmented copies of the clips (augmentation
    name -> branch -> {original clip id: the copy's sequence}; a copy row takes the original's
    frames in a branch that has no copy of it) and SpecAugment masks on its training batches
    (branch -> SpecAugmentParams). Copies join only the training units of the fit clips they
    are copies of: never a validation part, a held-out fold, a score or a metric."""

    copies: dict[str, dict[str, Sequences]] = field(default_factory=dict)
    masks: dict[str, Any] = field(default_factory=dict)

    def transformed(self, transform: Callable[[str, Sequences], Sequences]) -> "TrainingAugmentation":
        """The copies passed through ``transform(branch, sequences)`` (a normalisation applied to
        the clips, keyed by the originals' ids: a copy gets its original's speaker statistics)."""
        copies = {name: {b: transform(b, s) for b, s in by_branch.items()} for name, by_branch in self.copies.items()}
        return TrainingAugmentation(copies, self.masks)

    def count(self) -> int:
        return sum(len(set().union(*(set(s) for s in by_branch.values()))) for by_branch in self.copies.values())


def apply_spec_masks(x: np.ndarray, mask: np.ndarray, params: Any, fill: np.ndarray, rng: np.random.Generator) -> None:
    """SpecAugment-style masks, in place, on a batch's frames ``x`` [B, T, D]: per clip,
    ``params.time_masks`` runs of 0..``time_width`` frames (within its visible span) and
    ``params.freq_masks`` runs of 0..``freq_width`` dimensions are set to ``fill`` [D]."""
    for i in range(len(x)):
        visible = np.flatnonzero(mask[i])
        length = int(visible[-1]) + 1 if len(visible) else 0
        for _ in range(params.time_masks if length else 0):
            width = min(int(rng.integers(0, params.time_width + 1)), length)
            start = int(rng.integers(0, length - width + 1))
            x[i, start:start + width] = fill
        dims = x.shape[2]
        for _ in range(params.freq_masks if length else 0):
            width = min(int(rng.integers(0, params.freq_width + 1)), dims)
            start = int(rng.integers(0, dims - width + 1))
            x[i, :length, start:start + width] = fill[start:start + width]


def branch_dims(branch_sequences: dict[str, Sequences], dims: dict[str, int] | None) -> dict[str, int]:
    return dims or {b: next(iter(s.values()))[0].shape[1] for b, s in branch_sequences.items()}


class TaskData:
    """One experiment's clips prepared for a task: the fold loop asks it for training and
    validation splits, batches, the loss, and per-clip predictions. Rows index ``clips``."""

    clips: pd.DataFrame
    branches: list[str]
    augmentation: TrainingAugmentation | None = None

    def with_copies(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` and the rows of their augmented copies (a task without copies: ``rows``)."""
        return np.asarray(rows)

    def source_rows(self, rows: np.ndarray) -> np.ndarray:
        """The clip (a row of ``clips``) each of ``rows`` is, or is a copy of."""
        return np.asarray(rows)

    def copy_rows(self, rows: np.ndarray) -> np.ndarray:
        """Which of ``rows`` are augmented copies."""
        return np.zeros(len(rows), bool)

    def spec_masker(self, fit_rows: np.ndarray, rng: np.random.Generator) -> Callable[[Batch], None] | None:
        """What masks a training batch in place (``augmentation.masks``; None without any): the
        masked values are the fit clips' mean frame, i.e. zero after the model's standardisation."""
        masks = self.augmentation.masks if self.augmentation is not None else {}
        if not masks:
            return None
        fills = {}
        for branch in masks:
            frames = self.standardizer_frames(branch, fit_rows)
            fills[branch] = frames.mean(0).astype(np.float32) if len(frames) else np.zeros(frames.shape[1], np.float32)

        def mask(batch: Batch) -> None:
            for branch, params in masks.items():
                x, visible = batch.inputs[branch][0], batch.inputs[branch][1]
                apply_spec_masks(x.numpy(), visible.numpy(), params, fills[branch], rng)

        return mask

    def split(self, train_rows: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(rows the model is fit on, rows its early stopping watches)."""
        raise NotImplementedError

    def standardizer_frames(self, branch: str, rows: np.ndarray) -> np.ndarray:
        """The visible frames of ``rows`` in ``branch``: what the per-fold standardisation is fit on."""
        raise NotImplementedError

    def loss(self, fit_rows: np.ndarray) -> Callable[[Any, Batch], Any]:
        """``loss(model, batch) -> scalar tensor``, set up on the rows the model is fit on."""
        raise NotImplementedError

    def training_units(self, fit_rows: np.ndarray) -> list:
        """What one epoch shuffles and batches: clips, or windows of clips."""
        raise NotImplementedError

    def batch(self, units: list, crop_rng: np.random.Generator | None = None) -> Batch:
        raise NotImplementedError

    def validation_batch(self, rows: np.ndarray) -> Batch | None:
        raise NotImplementedError

    def predict(self, model, rows: np.ndarray) -> list[np.ndarray]:
        """One output per row, each clip run on its own (its result does not depend on the
        other clips predicted with it)."""
        raise NotImplementedError


class Task:
    registry_name: ClassVar[str]
    Config: ClassVar[type]
    # Needs a per-step output from every head (heads declare ``per_step``).
    per_step: ClassVar[bool] = False
    # Its targets are class labels a classical (pooled) head can be fit on.
    pooled_heads: ClassVar[bool] = False
    # Its scores are class probabilities (late fusion by stacking needs them).
    class_scores: ClassVar[bool] = False
    # It can train on augmented copies of clips (``prepare(augmentation=...)`` with copies).
    augmented_copies: ClassVar[bool] = False

    def __init__(self, config: Any) -> None:
        self.config = config

    @classmethod
    def from_params(cls, params) -> "Task":
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """JSON description; :func:`task_from_description` rebuilds the task from it."""
        return {"type": self.registry_name, **asdict(self.config)}

    # -- targets ------------------------------------------------------------------------------
    def output_size(self) -> int:
        raise NotImplementedError

    def usable_clips(self, manifest: pd.DataFrame) -> tuple[pd.DataFrame, list[dict[str, str]]]:
        """The clips a model can learn from, and a failures row for each clip left out."""
        return manifest, []

    def unlabeled(self, manifest: pd.DataFrame) -> pd.Series:
        """The clips without this task's targets: never trained or scored on, only predicted
        by the final models (stage predict_unlabeled)."""
        return pd.Series(False, index=manifest.index)

    # -- training and prediction --------------------------------------------------------------
    def prepare(self, branch_sequences: dict[str, Sequences], clips: pd.DataFrame, train=None, with_targets: bool = True,
                dims: dict[str, int] | None = None, augmentation: TrainingAugmentation | None = None) -> TaskData:
        """``train``: the TrainParams the data will be trained with (None: prediction only).
        ``dims``: each branch's feature dimension (by default read from its sequences; a
        branch may have none of the clips). ``augmentation``: copies and masks for training."""
        raise NotImplementedError

    def pooled_targets(self, data: TaskData) -> np.ndarray:
        raise NotImplementedError(f"task {self.registry_name!r} cannot be learnt by a pooled head")

    def score_columns(self) -> list[str]:
        raise NotImplementedError

    def score_frame(self, data: TaskData, rows: np.ndarray, fold: int, outputs: list[np.ndarray]) -> pd.DataFrame:
        """Score-matrix rows of ``rows`` (clips of ``data``), predicted by fold ``fold``'s model
        (-1: the fold models merged)."""
        raise NotImplementedError

    def merge_folds(self, outputs: list[np.ndarray]) -> np.ndarray:
        """One clip's outputs from every fold model -> the output reported for it."""
        raise NotImplementedError

    def merge_seeds(self, outputs: list[np.ndarray]) -> np.ndarray:
        """One clip's outputs from the models of a seed ensemble (one fold's models, trained on
        the same clips but for the seed) -> that fold's output for it: their mean (class
        probabilities averaged; per-step predictions averaged step by step). One model's
        output is returned as it is."""
        return outputs[0] if len(outputs) == 1 else np.mean(np.stack(outputs), axis=0)

    def finish(self, scores: pd.DataFrame) -> pd.DataFrame:
        return scores.reset_index(drop=True)

    def empty_scores(self) -> pd.DataFrame:
        raise NotImplementedError

    # -- evaluation ---------------------------------------------------------------------------
    def report(self, scores: pd.DataFrame) -> dict:
        raise NotImplementedError

    def summary(self, scores: pd.DataFrame) -> str:
        raise NotImplementedError

    # The figure whose spread across folds the report gives (a key of ``report``).
    headline: ClassVar[str]

    def figure_columns(self) -> list[tuple[str, str]]:
        """(key of ``report``, column title) of the figures the report tabulates."""
        raise NotImplementedError

    def chance_levels(self) -> dict[str, float]:
        """What each figure of ``figure_columns`` is for predictions that carry no information."""
        raise NotImplementedError

    def description_line(self) -> str:
        raise NotImplementedError

    def confusion(self, scores: pd.DataFrame) -> pd.DataFrame | None:
        """Counts, rows actual and columns predicted, both in the task's class order; None
        for a task without classes."""
        return None

    # -- late fusion --------------------------------------------------------------------------
    def align(self, members: dict[str, pd.DataFrame]) -> "AlignedScores":
        raise NotImplementedError

    def objective(self, fused: np.ndarray, targets: np.ndarray) -> tuple:
        """Larger is better: how late fusion ranks fused scores against their targets."""
        raise NotImplementedError

    def fused_frame(self, aligned: "AlignedScores", fused: np.ndarray) -> pd.DataFrame:
        raise NotImplementedError


@dataclass
class AlignedScores:
    """The members' scores on the union of their rows: ``rows`` (key, fold and target
    columns), ``values`` [members, rows, K], ``present`` [members, rows]; ``scored`` marks the
    rows an objective may be computed on."""

    rows: pd.DataFrame
    values: np.ndarray
    present: np.ndarray
    scored: np.ndarray
    targets: np.ndarray

    @property
    def folds(self) -> np.ndarray:
        return self.rows["fold"].to_numpy()


TASKS: Registry[type[Task]] = Registry("task")


def task_from_params(params) -> Task:
    return TASKS.get(params.task).from_params(params)


def task_from_description(description: dict[str, Any]) -> Task:
    description = dict(description)
    name = description.pop("type")
    return TASKS.get(name)(TASKS.config(name, description, "checkpoint task"))


# Importing the modules registers their tasks.
from pipeline.tasks import classification, continuous  # noqa: E402,F401
