"""The continuous task: per-frame valence and arousal (Aff-Wild2, the leader-follower paper).

Every branch's features are resampled onto one time grid per clip (``continuous.rate`` steps
per second; a step averages the visible frames that fall in it), the clip's annotation is
interpolated onto the same grid, and models are trained on windows of ``continuous.window``
steps taken every ``continuous.hop`` steps with the concordance correlation coefficient
(CCC) as loss. Out-of-fold predictions are made on whole clips. Clips of the held-out test
split are predicted by every fold model and the fold models' predictions merged by CCC
centering.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from pipeline.config import ContinuousParams, TrainParams
from pipeline.datasets import read_frame_targets
from pipeline.metrics import concordance
from pipeline.models import ModelSpec

# clip_id -> (frames [T, D], mask [T], timestamps [T])
TimedSequences = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


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
    """One clip on the common grid: each branch's features and the targets."""

    clip_id: str
    features: dict[str, tuple[np.ndarray, np.ndarray]]
    targets: np.ndarray
    valid: np.ndarray


def grid_clips(
    branch_sequences: dict[str, TimedSequences], clips: pd.DataFrame, dimensions: list[str], rate: float
) -> list[GridClip]:
    result = []
    for row in clips.itertuples(index=False):
        grid = time_grid(float(row.duration_s), rate)
        features = {}
        for branch, sequences in branch_sequences.items():
            dim = next(iter(sequences.values()))[0].shape[1]
            if row.clip_id in sequences:
                features[branch] = resample(*sequences[row.clip_id], grid, rate)
            else:
                features[branch] = (np.zeros((len(grid), dim), np.float32), np.zeros(len(grid), bool))
        times, values, valid = read_frame_targets(row.targets, dimensions, float(getattr(row, "fps", 0.0) or 0.0))
        targets, target_valid = targets_on_grid(times, values, valid, grid)
        result.append(GridClip(row.clip_id, features, targets, target_valid))
    return result


def _batch(clips: list[GridClip], spans: list[tuple[int, int, int]], branches: list[str]) -> tuple[dict, Tensor, Tensor]:
    """Pad the (clip index, start, stop) spans into tensors."""
    length = max(stop - start for _, start, stop in spans)
    inputs = {}
    for branch in branches:
        dim = clips[0].features[branch][0].shape[1]
        x = np.zeros((len(spans), length, dim), np.float32)
        mask = np.zeros((len(spans), length), bool)
        for row, (index, start, stop) in enumerate(spans):
            frames, visible = clips[index].features[branch]
            x[row, : stop - start], mask[row, : stop - start] = frames[start:stop], visible[start:stop]
        inputs[branch] = (torch.from_numpy(x), torch.from_numpy(mask))
    targets = np.zeros((len(spans), length, clips[0].targets.shape[1]), np.float32)
    valid = np.zeros((len(spans), length), bool)
    for row, (index, start, stop) in enumerate(spans):
        targets[row, : stop - start], valid[row, : stop - start] = clips[index].targets[start:stop], clips[index].valid[start:stop]
    return inputs, torch.from_numpy(targets), torch.from_numpy(valid)


def windows(clips: list[GridClip], indices: np.ndarray, window: int, hop: int) -> list[tuple[int, int, int]]:
    spans = []
    for index in indices:
        length = len(clips[index].valid)
        starts = list(range(0, max(length - window, 0) + 1, hop))
        if starts[-1] + window < length:
            starts.append(length - window)  # the clip's end is always covered
        spans += [(int(index), s, min(s + window, length)) for s in starts]
    return spans


def _fit_standardizers(model, clips: list[GridClip], indices: np.ndarray) -> None:
    for branch, standardize in model.standardize.items():
        frames = [clips[i].features[branch][0][clips[i].features[branch][1]] for i in indices]
        frames = np.concatenate(frames) if frames else np.zeros((0, 1))
        if len(frames):
            standardize.fit(torch.from_numpy(frames))


def predict_clips(model, clips: list[GridClip], indices: np.ndarray, branches: list[str]) -> list[np.ndarray]:
    model.eval()
    outputs = []
    with torch.no_grad():
        for index in indices:
            inputs, _, _ = _batch(clips, [(int(index), 0, len(clips[index].valid))], branches)
            outputs.append(model.predict_steps(inputs)[0].numpy())
    return outputs


def train_fold(spec: ModelSpec, clips: list[GridClip], train: np.ndarray, params: TrainParams, continuous: ContinuousParams, seed: int):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    shuffled = rng.permutation(train)
    held = max(1, int(round(len(train) * params.validation_fraction))) if len(train) > 2 else 0
    val, fit = shuffled[:held], shuffled[held:]
    branches = [b.name for b in spec.branches]
    model = spec.build()
    _fit_standardizers(model, clips, fit)
    from pipeline.training import fit_with_early_stopping, parameter_groups

    optimizer = torch.optim.AdamW(parameter_groups(model, params.lr), lr=params.lr, weight_decay=params.weight_decay)
    fit_spans = windows(clips, fit, continuous.window, continuous.hop)
    val_batch = _batch(clips, windows(clips, val, continuous.window, continuous.window), branches) if held else None
    def train_epoch() -> float:
        order = rng.permutation(len(fit_spans))
        total = 0.0
        for start in range(0, len(order), params.batch_size):
            inputs, targets, valid = _batch(clips, [fit_spans[i] for i in order[start : start + params.batch_size]], branches)
            loss = ccc_loss(model.predict_steps(inputs), targets, valid)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * min(params.batch_size, len(order) - start)
        return total / max(len(fit_spans), 1)

    def validation_loss() -> float:
        return ccc_loss(model.predict_steps(val_batch[0]), val_batch[1], val_batch[2]).item()

    curve = fit_with_early_stopping(model, params, train_epoch, validation_loss if val_batch is not None else None)
    return model, curve


@dataclass(frozen=True)
class ContinuousFoldJob:
    spec: ModelSpec
    clips: list
    train: np.ndarray
    predict: np.ndarray   # the fold's held-out clips, then the test clips
    params: TrainParams
    continuous: ContinuousParams
    seed: int


def _run_continuous_fold(job: ContinuousFoldJob):
    torch.set_num_threads(job.params.threads)
    model, curve = train_fold(job.spec, job.clips, job.train, job.params, job.continuous, job.seed)
    return model.state_dict(), curve, predict_clips(model, job.clips, job.predict, [b.name for b in job.spec.branches])


def score_columns(dimensions: list[str]) -> list[str]:
    return [f"pred_{d}" for d in dimensions]


def cross_validate_continuous(
    spec: ModelSpec, branch_sequences: dict[str, TimedSequences], clips: pd.DataFrame, params: TrainParams, continuous: ContinuousParams
):
    """Out-of-fold per-step predictions of every clip (fold >= 0), and of the test clips
    (fold -1) merged over the fold models by CCC centering. Returns a CrossValidationResult
    whose scores have one row per grid step: clip_id, fold, time_s, valid, the targets and
    pred_<dimension>."""
    from pipeline.training import CrossValidationResult, _map_folds, fold_rows

    clips = clips.reset_index(drop=True)
    prepared = grid_clips(branch_sequences, clips, continuous.dimensions, continuous.rate)
    folds = clips["fold"].to_numpy()
    test = np.flatnonzero(folds < 0)
    jobs = [
        ContinuousFoldJob(spec, prepared, train, predicted, params, continuous, params.seed * 1000 + fold)
        for fold, train, predicted in fold_rows(folds)
    ]
    outcomes = _map_folds(_run_continuous_fold, jobs, params.workers)
    rows, states, curves = [], [], []
    test_predictions: dict[int, list[np.ndarray]] = {int(i): [] for i in test}
    for job, (state, curve, predictions) in zip(jobs, outcomes):
        fold = int(folds[job.predict[0]]) if len(job.predict) > len(test) else -1
        held_out = job.predict[: len(job.predict) - len(test)]
        for index, prediction in zip(held_out, predictions):
            rows.append(_rows(prepared[index], fold, prediction, continuous))
        for index, prediction in zip(test, predictions[len(held_out):]):
            test_predictions[int(index)].append(prediction)
        states.append(state)
        curves += [{"fold": fold, **point} for point in curve]
    for index, predictions in test_predictions.items():
        merged, _ = ccc_centering(predictions)
        rows.append(_rows(prepared[index], -1, merged, continuous))
    scores = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    return CrossValidationResult(scores, states, pd.DataFrame(curves, columns=["fold", "epoch", "train_loss", "val_loss"]))


def _rows(clip: GridClip, fold: int, prediction: np.ndarray, continuous: ContinuousParams) -> pd.DataFrame:
    frame = pd.DataFrame({"clip_id": clip.clip_id, "fold": fold, "time_s": np.arange(len(clip.valid)) / continuous.rate, "valid": clip.valid})
    for d, name in enumerate(continuous.dimensions):
        frame[name] = clip.targets[:, d]
    for d, name in enumerate(score_columns(continuous.dimensions)):
        frame[name] = prediction[:, d]
    return frame
