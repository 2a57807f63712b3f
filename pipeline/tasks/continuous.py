"""The continuous task: per-step valence and arousal (Aff-Wild2, the leader-follower paper).

Every branch's features are resampled onto one time grid per clip (``continuous.rate`` steps
per second; a step averages the visible frames that fall in it), the clip's annotation is
interpolated onto the same grid, and models are trained on windows of ``continuous.window``
steps taken every ``continuous.hop`` steps with the concordance correlation coefficient
(CCC) as loss. Out-of-fold predictions are made on whole clips. Clips of the held-out test
split are predicted by every fold model and the fold models' predictions merged by CCC
centering. Metrics: CCC per dimension over the valid steps; late fusion maximises the mean CCC.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.datasets import read_frame_targets
from pipeline.metrics import concordance
from pipeline.tasks import TASKS, AlignedScores, Batch, Sequences, Task, TaskData, branch_dims

if TYPE_CHECKING:
    from torch import Tensor


def ccc_loss(prediction: Tensor, truth: Tensor, valid: Tensor) -> Tensor:
    """1 - CCC per dimension, averaged; over the valid steps of the whole batch. prediction
    and truth are [B, T, D], valid [B, T]."""
    weights = valid.unsqueeze(-1).float()
    count = weights.sum((0, 1)).clamp(min=1.0)
    mean_p = (prediction * weights).sum((0, 1)) / count
    mean_t = (truth * weights).sum((0, 1)) / count
    var_p = (((prediction - mean_p) ** 2) * weights).sum((0, 1)) / count
    var_t = (((truth - mean_t) ** 2) * weights).sum((0, 1)) / count
    covariance = ((prediction - mean_p) * (truth - mean_t) * weights).sum((0, 1)) / count
    ccc = 2 * covariance / (var_p + var_t + (mean_p - mean_t) ** 2 + 1e-8)
    return (1 - ccc).mean()


def ccc_centering(predictions: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Merge several models' predictions of the same frames ([N, D] each): each model is
    weighted, per dimension, by its CCC with the models' mean (models that agree with the
    consensus count more, a disagreeing one is down-weighted; negative agreement counts 0).
    Returns (merged [N, D], weights [M, D])."""
    stacked = np.stack(predictions)  # [M, N, D]
    consensus = stacked.mean(0)
    weights = np.array([[max(concordance(model[:, d], consensus[:, d]), 0.0) for d in range(stacked.shape[2])] for model in stacked])
    weights = np.where(weights.sum(0, keepdims=True) > 0, weights, 1.0)
    weights = weights / weights.sum(0, keepdims=True)
    return np.einsum("md,mnd->nd", weights, stacked), weights


def time_grid(duration_s: float, rate: float) -> np.ndarray:
    return np.arange(max(1, int(np.floor(duration_s * rate)) + 1)) / rate


def resample(frames: np.ndarray, mask: np.ndarray, timestamps: np.ndarray, grid: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the visible frames within half a step of each grid time; a step with none is
    masked. Features at a coarser rate than the grid fill the steps they cover (a 0.64 s
    window of a 3D-CNN covers several 0.2 s steps)."""
    half = 0.5 / rate
    if len(timestamps) > 1:
        half = max(half, 0.5 * float(np.median(np.diff(timestamps))))
    out = np.zeros((len(grid), frames.shape[1]), np.float32)
    visible = np.zeros(len(grid), bool)
    frames, timestamps = frames[mask], timestamps[mask]
    if not len(frames):
        return out, visible
    order = np.argsort(timestamps)
    frames, timestamps = frames[order], timestamps[order]
    lower = np.searchsorted(timestamps, grid - half, side="left")
    upper = np.searchsorted(timestamps, grid + half, side="left")
    for step, (a, b) in enumerate(zip(lower, upper)):
        if b > a:
            out[step] = frames[a:b].mean(0)
            visible[step] = True
    return out, visible


def targets_on_grid(times: np.ndarray, values: np.ndarray, valid: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation of the valid annotations; steps beyond the annotated span, or
    whose nearest annotation is invalid, are not scored."""
    out = np.zeros((len(grid), values.shape[1]), np.float32)
    if not valid.any():
        return out, np.zeros(len(grid), bool)
    for d in range(values.shape[1]):
        out[:, d] = np.interp(grid, times[valid], values[valid, d])
    nearest = np.clip(np.searchsorted(times, grid), 0, len(times) - 1)
    inside = (grid >= times[0] - 1e-9) & (grid <= times[-1] + 1e-9)
    return out, inside & valid[nearest]


@dataclass
class GridClip:
    """One clip on the common grid: each branch's features and the targets (zeros, none
    valid, when the clip is only predicted)."""

    clip_id: str
    features: dict[str, tuple[np.ndarray, np.ndarray]]
    targets: np.ndarray
    valid: np.ndarray


def grid_clips(
    branch_sequences: dict[str, Sequences], clips: pd.DataFrame, dimensions: list[str], rate: float, with_targets: bool = True,
    dims: dict[str, int] | None = None,
) -> list[GridClip]:
    dims = branch_dims(branch_sequences, dims)
    result = []
    for row in clips.itertuples(index=False):
        grid = time_grid(float(row.duration_s), rate)
        features = {}
        for branch, sequences in branch_sequences.items():
            if row.clip_id in sequences:
                features[branch] = resample(*sequences[row.clip_id][:3], grid, rate)
            else:
                features[branch] = (np.zeros((len(grid), dims[branch]), np.float32), np.zeros(len(grid), bool))
        if with_targets:
            times, values, valid = read_frame_targets(row.targets, dimensions, float(getattr(row, "fps", 0.0) or 0.0))
            targets, target_valid = targets_on_grid(times, values, valid, grid)
        else:
            targets, target_valid = np.zeros((len(grid), len(dimensions)), np.float32), np.zeros(len(grid), bool)
        result.append(GridClip(row.clip_id, features, targets, target_valid))
    return result


def windows(clips: list[GridClip], indices: np.ndarray, window: int, hop: int) -> list[tuple[int, int, int]]:
    """(clip index, start, stop) spans of ``window`` steps every ``hop`` steps; the clip's end
    is always covered."""
    spans = []
    for index in indices:
        length = len(clips[index].valid)
        starts = list(range(0, max(length - window, 0) + 1, hop))
        if starts[-1] + window < length:
            starts.append(length - window)
        spans += [(int(index), s, min(s + window, length)) for s in starts]
    return spans


class GridData(TaskData):
    """The clips on the task's time grid; training units are windows of the fit clips."""

    def __init__(self, branch_sequences: dict[str, Sequences], clips: pd.DataFrame, config, with_targets: bool,
                 dims: dict[str, int] | None = None) -> None:
        self.clips = clips.reset_index(drop=True)
        self.branches = list(branch_sequences)
        self.config = config
        self.grid = grid_clips(branch_sequences, self.clips, config.dimensions, config.rate, with_targets, dims)

    def split(self, train_rows, fraction, rng):
        shuffled = rng.permutation(train_rows)
        held = max(1, int(round(len(train_rows) * fraction))) if len(train_rows) > 2 else 0
        return shuffled[held:], shuffled[:held]

    def standardizer_frames(self, branch, rows):
        frames = [self.grid[i].features[branch][0][self.grid[i].features[branch][1]] for i in rows]
        return np.concatenate(frames) if frames else np.zeros((0, 1), np.float32)

    def loss(self, fit_rows):
        return lambda model, batch: ccc_loss(model.predict_steps(batch.inputs), *batch.targets)

    def training_units(self, fit_rows):
        return windows(self.grid, fit_rows, self.config.window, self.config.hop)

    def batch(self, units, crop_rng=None):
        """Pad the (clip index, start, stop) spans into tensors."""
        import torch

        length = max(stop - start for _, start, stop in units)
        inputs = {}
        for branch in self.branches:
            dim = self.grid[0].features[branch][0].shape[1]
            x = np.zeros((len(units), length, dim), np.float32)
            mask = np.zeros((len(units), length), bool)
            for row, (index, start, stop) in enumerate(units):
                frames, visible = self.grid[index].features[branch]
                x[row, : stop - start], mask[row, : stop - start] = frames[start:stop], visible[start:stop]
            inputs[branch] = (torch.from_numpy(x), torch.from_numpy(mask))
        targets = np.zeros((len(units), length, self.grid[0].targets.shape[1]), np.float32)
        valid = np.zeros((len(units), length), bool)
        for row, (index, start, stop) in enumerate(units):
            targets[row, : stop - start], valid[row, : stop - start] = self.grid[index].targets[start:stop], self.grid[index].valid[start:stop]
        return Batch(inputs, (torch.from_numpy(targets), torch.from_numpy(valid)), len(units))

    def validation_batch(self, rows):
        if not len(rows):
            return None
        return self.batch(windows(self.grid, rows, self.config.window, self.config.window))

    def predict(self, model, rows):
        import torch

        model.eval()
        with torch.no_grad():
            return [model.predict_steps(self.batch([(int(i), 0, len(self.grid[i].valid))]).inputs)[0].numpy() for i in rows]


def continuous_report(scores: pd.DataFrame, dimensions: list[str]) -> dict:
    """CCC per dimension over every valid scored step (and their mean)."""
    valid = scores[scores["valid"].astype(bool)] if len(scores) else scores
    report = {"steps": int(len(valid)), "clips": int(valid["clip_id"].nunique()) if len(valid) else 0}
    values = {d: concordance(valid[f"pred_{d}"], valid[d]) if len(valid) > 1 else 0.0 for d in dimensions}
    report.update({f"ccc_{d}": v for d, v in values.items()})
    report["ccc_mean"] = float(np.mean(list(values.values())))
    return report


def score_columns(dimensions: list[str]) -> list[str]:
    return [f"pred_{d}" for d in dimensions]


@TASKS.register("continuous")
class ContinuousTask(Task):
    per_step = True

    @dataclass(frozen=True)
    class Config:
        dimensions: list[str] = field(default_factory=lambda: ["valence", "arousal"])
        rate: float = 5.0
        window: int = 40
        hop: int = 20

    @classmethod
    def from_params(cls, params) -> "ContinuousTask":
        c = params.continuous
        return cls(cls.Config(list(c.dimensions), c.rate, c.window, c.hop))

    @property
    def dimensions(self) -> list[str]:
        return self.config.dimensions

    def output_size(self):
        return len(self.dimensions)

    def unlabeled(self, manifest):
        return manifest["targets"].fillna("").astype(str) == ""

    def usable_clips(self, manifest):
        """Clips with a per-frame annotation file (the others are recorded, not fatal)."""
        has = ~self.unlabeled(manifest)
        missing = [{"clip_id": c, "stage": "train", "reason": "no per-frame annotation (targets) for the continuous task"}
                   for c in manifest.loc[~has, "clip_id"]]
        return manifest[has], missing

    def prepare(self, branch_sequences, clips, train=None, with_targets=True, dims=None, augmentation=None):
        if augmentation is not None and augmentation.copies:
            raise ValueError("the continuous task cannot train on augmented copies: a speed change would move its per-step targets")
        data = GridData(branch_sequences, clips, self.config, with_targets, dims)
        data.augmentation = augmentation
        return data

    def score_columns(self):
        return score_columns(self.dimensions)

    def score_frame(self, data, rows, fold, outputs):
        frames = []
        for index, prediction in zip(rows, outputs):
            clip = data.grid[index]
            frame = pd.DataFrame({"clip_id": clip.clip_id, "fold": fold, "time_s": np.arange(len(clip.valid)) / self.config.rate, "valid": clip.valid})
            for d, name in enumerate(self.dimensions):
                frame[name] = clip.targets[:, d]
            for d, name in enumerate(self.score_columns()):
                frame[name] = prediction[:, d]
            frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else self.empty_scores()

    def merge_folds(self, outputs):
        return ccc_centering(outputs)[0]

    def empty_scores(self):
        return pd.DataFrame(columns=["clip_id", "fold", "time_s", "valid", *self.dimensions, *self.score_columns()])

    # -- evaluation ---------------------------------------------------------------------------
    def report(self, scores):
        return continuous_report(scores, self.dimensions)

    def summary(self, scores):
        return " ".join(f"{k} {v:.3f}" for k, v in self.report(scores).items() if k.startswith("ccc_"))

    headline = "ccc_mean"

    def figure_columns(self):
        return [(f"ccc_{d}", f"CCC {d}") for d in self.dimensions] + [("ccc_mean", "mean CCC")]

    def chance_levels(self):
        # A prediction unrelated to the annotation has CCC 0 in expectation.
        return {key: 0.0 for key, _ in self.figure_columns()}

    def description_line(self):
        return f"Task: continuous ({', '.join(self.dimensions)}, CCC per dimension over the annotated steps)."

    # -- late fusion --------------------------------------------------------------------------
    def align(self, members):
        keys = ["clip_id", "time_s"]
        extra = [c for c in ("fold", "valid", *self.dimensions) if all(c in m for m in members.values())]
        rows = pd.concat([m[keys + extra] for m in members.values()]).drop_duplicates(keys)
        rows = rows.sort_values(keys).reset_index(drop=True)
        columns = self.score_columns()
        values = np.zeros((len(members), len(rows), len(self.dimensions)))
        present = np.zeros((len(members), len(rows)), bool)
        for m, scores in enumerate(members.values()):
            merged = rows[keys].merge(scores[keys + columns], on=keys, how="left")
            has = merged[columns[0]].notna().to_numpy()
            values[m, has] = merged.loc[has, columns].to_numpy()
            present[m, has] = True
        scored = rows["valid"].astype(bool).to_numpy() if "valid" in rows else np.zeros(len(rows), bool)
        targets = rows[self.dimensions].to_numpy() if set(self.dimensions) <= set(rows) else None
        return AlignedScores(rows, values, present, scored, targets)

    def objective(self, fused, targets):
        return (float(np.mean([concordance(fused[:, d], targets[:, d]) for d in range(targets.shape[1])])),)

    def fused_frame(self, aligned, fused):
        scores = aligned.rows.copy()
        for d, name in enumerate(self.score_columns()):
            scores[name] = fused[:, d]
        return scores
