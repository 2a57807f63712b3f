"""Clip-level classification: one label per clip, class probabilities per clip.

Batches are clips padded to the longest visible frame of the batch (not of the corpus), and
with ``train.max_clip_s`` a training clip longer than that is cut to a random window of that
many seconds (the validation clips to their central window), so the memory of a step follows
the batch and the window, never the longest clip. Loss: cross-entropy, class-weighted with
``train.class_weights``. The test split's probabilities are the mean over the fold models.
Metrics: accuracy, unweighted average recall, macro-F1; late fusion maximises UAR, then the
log-likelihood of the true class.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from pipeline.metrics import classification_report, confusion_matrix, probability_columns, unweighted_average_recall
from pipeline.tasks import TASKS, AlignedScores, Batch, Sequences, Task, TaskData, TrainingAugmentation, branch_dims


def stratified_split(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) positions into ``labels``: ``fraction`` of each class with more than
    two clips goes to validation."""
    validation = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        take = int(round(len(members) * fraction)) if len(members) > 2 else 0
        validation.extend(members[:take])
    validation = np.array(sorted(validation), dtype=int)
    fit = np.setdiff1d(np.arange(len(labels)), validation)
    return fit, validation


class ClassificationData(TaskData):
    """Every clip's frames kept as they are (no corpus-wide padding); batches are padded to
    their own longest visible frame. A clip missing from a branch is all-masked there."""

    def __init__(self, branch_sequences: dict[str, Sequences], clips: pd.DataFrame, classes: list[str], train, with_targets: bool,
                 dims: dict[str, int] | None = None, augmentation: TrainingAugmentation | None = None) -> None:
        self.clips = clips.reset_index(drop=True)
        self.branches = list(branch_sequences)
        self.classes = classes
        clip_ids = self.clips["clip_id"].tolist()
        self.rows: dict[str, list] = {b: [sequences.get(c) for c in clip_ids] for b, sequences in branch_sequences.items()}
        self.dims = branch_dims(branch_sequences, dims)
        self.augmentation = augmentation
        # Rows past the clips' are augmented copies: ``sources`` says whose (its label, its speaker).
        self.sources = np.arange(len(clip_ids))
        self.copies = self._add_copies(clip_ids, augmentation.copies if augmentation is not None else {})
        self.labels = self.clips["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()[self.sources] if with_targets else None
        self.class_weights = train.class_weights if train is not None else True
        self.max_clip_s = train.max_clip_s if train is not None else 0.0

    def _add_copies(self, clip_ids: list[str], copies: dict[str, dict[str, Sequences]]) -> dict[int, list[int]]:
        """Append a row per copy (of a clip of ``clips``); returns clip row -> its copies' rows."""
        added: dict[int, list[int]] = {}
        sources = []
        for by_branch in copies.values():
            for row, clip_id in enumerate(clip_ids):
                if not any(clip_id in sequences for sequences in by_branch.values()):
                    continue
                for branch in self.branches:
                    self.rows[branch].append(by_branch.get(branch, {}).get(clip_id, self.rows[branch][row]))
                added.setdefault(row, []).append(len(clip_ids) + len(sources))
                sources.append(row)
        self.sources = np.concatenate([self.sources, np.array(sources, dtype=int)])
        return added

    def with_copies(self, rows):
        rows = np.asarray(rows, dtype=int)
        extra = [copy for row in rows for copy in self.copies.get(int(row), [])]
        return np.concatenate([rows, np.array(extra, dtype=int)])

    def source_rows(self, rows):
        return self.sources[np.asarray(rows, dtype=int)]

    def copy_rows(self, rows):
        return np.asarray(rows, dtype=int) >= len(self.clips)

    def split(self, train_rows, fraction, rng):
        fit, validation = stratified_split(self.labels[train_rows], fraction, rng)
        return train_rows[fit], train_rows[validation]

    def standardizer_frames(self, branch, rows):
        frames = [clip[0][clip[1]] for clip in (self.rows[branch][r] for r in rows) if clip is not None]
        return np.concatenate(frames) if frames else np.zeros((0, self.dims[branch]), np.float32)

    def loss(self, fit_rows) -> Callable:
        import torch
        from torch import nn

        count = len(self.classes)
        counts = np.bincount(self.labels[fit_rows], minlength=count).astype(np.float32)
        weights = counts.sum() / (count * np.maximum(counts, 1.0)) if self.class_weights else np.ones(count, np.float32)
        loss_fn = nn.CrossEntropyLoss(weight=torch.from_numpy(weights.astype(np.float32)))
        return lambda model, batch: loss_fn(model(batch.inputs), batch.targets)

    def training_units(self, fit_rows):
        return self.with_copies(fit_rows)  # the fit clips and their augmented copies

    def _windows(self, rows: np.ndarray, crop_rng: np.random.Generator | None) -> list[tuple[float, float] | None]:
        """Per row, the (start, stop) seconds it is cut to, or None for the whole clip:
        random with ``crop_rng``, else the central window."""
        if self.max_clip_s <= 0:
            return [None] * len(rows)
        windows = []
        for row in rows:
            times = [clip[2] for clip in (self.rows[b][row] for b in self.branches) if clip is not None and len(clip) > 2 and len(clip[2])]
            begin, end = (min(t[0] for t in times), max(t[-1] for t in times)) if times else (0.0, 0.0)
            excess = end - begin - self.max_clip_s
            if excess <= 0:
                windows.append(None)
                continue
            start = begin + (crop_rng.uniform(0.0, excess) if crop_rng is not None else excess / 2)
            windows.append((start, start + self.max_clip_s))
        return windows

    def _padded(self, branch: str, rows: np.ndarray, windows: list) -> tuple[np.ndarray, np.ndarray]:
        pieces = []
        for row, window in zip(rows, windows):
            clip = self.rows[branch][row]
            if clip is None:
                pieces.append(None)
                continue
            frames, mask = clip[0], clip[1]
            if window is not None:
                inside = (clip[2] >= window[0]) & (clip[2] < window[1])
                frames, mask = frames[inside], mask[inside]
            pieces.append((frames, mask))
        ends = [int(np.flatnonzero(p[1]).max()) + 1 for p in pieces if p is not None and p[1].any()]
        length = max(ends, default=1)  # the batch's last visible frame: trailing padding is cut
        x = np.zeros((len(rows), length, self.dims[branch]), np.float32)
        mask = np.zeros((len(rows), length), bool)
        for i, piece in enumerate(pieces):
            if piece is not None:
                kept = min(len(piece[0]), length)
                x[i, :kept], mask[i, :kept] = piece[0][:kept], piece[1][:kept]
        return x, mask

    def inputs(self, rows: np.ndarray, windows: list | None = None) -> dict:
        import torch

        windows = windows if windows is not None else [None] * len(rows)
        return {b: tuple(torch.from_numpy(a) for a in self._padded(b, rows, windows)) for b in self.branches}

    def batch(self, units, crop_rng=None):
        import torch

        rows = np.asarray(units, dtype=int)
        return Batch(self.inputs(rows, self._windows(rows, crop_rng)), torch.from_numpy(self.labels[rows]), len(rows))

    def validation_batch(self, rows):
        if not len(rows):
            return None
        import torch

        return Batch(self.inputs(rows, self._windows(rows, None)), torch.from_numpy(self.labels[rows]), len(rows))

    def predict(self, model, rows):
        # Clip by clip: padded beside a longer clip, a convolution head's edge steps would
        # read the padding, so a clip's scores would depend on which clips shared its batch.
        import torch

        model.eval()
        with torch.no_grad():
            return [torch.softmax(model(self.inputs(np.array([row]))), dim=1).numpy()[0] for row in rows]


@TASKS.register("classification")
class ClassificationTask(Task):
    pooled_heads = True
    class_scores = True
    augmented_copies = True

    @dataclass(frozen=True)
    class Config:
        classes: list[str] = field(default_factory=list)

    @classmethod
    def from_params(cls, params) -> "ClassificationTask":
        return cls(cls.Config(list(params.data.labels)))

    @property
    def classes(self) -> list[str]:
        return self.config.classes

    def output_size(self) -> int:
        return len(self.classes)

    def unlabeled(self, manifest):
        return manifest["label"].fillna("").astype(str) == ""

    def usable_clips(self, manifest):
        """The labelled clips; unlabeled ones (an empty label) are not failures, only never learnt from."""
        return manifest[~self.unlabeled(manifest)], []

    def prepare(self, branch_sequences, clips, train=None, with_targets=True, dims=None, augmentation=None):
        return ClassificationData(branch_sequences, clips, self.classes, train, with_targets, dims, augmentation)

    def pooled_targets(self, data):
        return data.labels

    def score_columns(self):
        return probability_columns(self.classes)

    def score_frame(self, data, rows, fold, outputs):
        values = np.stack(outputs) if len(outputs) else np.zeros((0, len(self.classes)))
        frame = pd.DataFrame(values, columns=self.score_columns())
        labels = data.clips["label"].to_numpy()[rows] if "label" in data.clips else ""
        frame.insert(0, "label", labels)
        frame.insert(0, "fold", fold)
        frame.insert(0, "clip_id", data.clips["clip_id"].to_numpy()[rows])
        return frame

    def merge_folds(self, outputs):
        total = np.zeros(len(self.classes))
        for output in outputs:
            total += output
        return total / max(len(outputs), 1)

    def finish(self, scores):
        return scores.sort_values("clip_id").reset_index(drop=True)

    def empty_scores(self):
        return pd.DataFrame(columns=["clip_id", "fold", "label", *self.score_columns()])

    # -- evaluation ---------------------------------------------------------------------------
    def _truth_and_prediction(self, scores: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return scores["label"].map(self.classes.index).to_numpy(), scores[self.score_columns()].to_numpy().argmax(1)

    def report(self, scores):
        """Clips, accuracy, UAR and macro-F1 (per-class recall: from :meth:`confusion`)."""
        report = classification_report(*self._truth_and_prediction(scores), self.classes)
        return {key: value for key, value in report.items() if key != "recall"}

    def summary(self, scores):
        report = self.report(scores)
        return f"UAR {report['uar']:.3f} accuracy {report['accuracy']:.3f}"

    headline = "uar"

    def figure_columns(self):
        return [("accuracy", "accuracy"), ("uar", "UAR"), ("macro_f1", "macro-F1")]

    def chance_levels(self):
        # A uniform guess: 1/K accuracy and recall of every class; any constant prediction
        # also has UAR 1/K (recall 1 on one class, 0 on the others). Macro-F1 has no
        # single chance value (it depends on the class balance).
        chance = 1.0 / len(self.classes)
        return {"accuracy": chance, "uar": chance}

    def description_line(self):
        return f"Classes ({len(self.classes)}): {', '.join(self.classes)}."

    def confusion(self, scores):
        matrix = confusion_matrix(*self._truth_and_prediction(scores), len(self.classes)) if len(scores) else \
            np.zeros((len(self.classes),) * 2, np.int64)
        return pd.DataFrame(matrix, index=pd.Index(self.classes, name="actual"), columns=pd.Index(self.classes, name="predicted"))

    # -- late fusion --------------------------------------------------------------------------
    def align(self, members):
        columns = self.score_columns()
        keys = [c for c in ("clip_id", "fold", "label") if all(c in scores for scores in members.values())]
        rows = (
            pd.concat([scores[keys] for scores in members.values()])
            .drop_duplicates("clip_id")
            .sort_values("clip_id")
            .reset_index(drop=True)
        )
        values = np.zeros((len(members), len(rows), len(self.classes)))
        present = np.zeros((len(members), len(rows)), bool)
        for m, scores in enumerate(members.values()):
            found = rows["clip_id"].map({c: i for i, c in enumerate(scores["clip_id"])})
            has = found.notna().to_numpy()
            values[m, has] = scores[columns].to_numpy()[found[has].astype(int)]
            present[m, has] = True
        targets = rows["label"].map({c: i for i, c in enumerate(self.classes)}).to_numpy() if "label" in rows else None
        return AlignedScores(rows, values, present, np.ones(len(rows), bool), targets)

    def objective(self, fused, targets):
        uar = unweighted_average_recall(confusion_matrix(targets, fused.argmax(1), len(self.classes)))
        log_likelihood = np.log(fused[np.arange(len(targets)), targets] + 1e-9).mean()
        return round(uar, 9), round(log_likelihood, 9)

    def fused_frame(self, aligned, fused):
        scores = aligned.rows.copy()
        scores[self.score_columns()] = fused
        return scores
