"""Speaker-independent cross-validation of a classifier on cached features.

For each fold of the manifest, the model is trained on the other folds (a stratified part
of them held out for early stopping) and predicts the held-out fold, giving out-of-fold
class probabilities for every clip: the score matrix that late fusion and evaluation use.
"""
from __future__ import annotations

import copy
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.config import Params, TrainParams
from pipeline.heads import HEADS
from pipeline.heads.pooled import PooledHead, is_pooled_head, pooled_matrix
from pipeline.metrics import probability_columns
from pipeline.models import ModelSpec
from pipeline.store import FeatureStore

# clip_id -> (frames [T, D] float32, mask [T] bool)
Sequences = dict[str, tuple[np.ndarray, np.ndarray]]


def feature_dim(sequences: Sequences) -> int:
    """Feature dimension of a branch's sequences (0 when the branch has none)."""
    return next(iter(sequences.values()))[0].shape[1] if sequences else 0


def load_sequences(store: FeatureStore, clip_ids: list[str] | None = None, with_timestamps: bool = False) -> Sequences:
    """Features of every indexed clip (or of ``clip_ids`` that have an entry); with
    ``with_timestamps`` each also carries its frames' times (the continuous task's grid)."""
    indexed = set(store.clip_ids())
    wanted = indexed if clip_ids is None else indexed & set(clip_ids)
    keys = ["data", "mask", "timestamps"] if with_timestamps else ["data", "mask"]
    sequences = {}
    for clip_id in sorted(wanted):
        arrays = store.read(clip_id, keys).arrays
        sequences[clip_id] = (arrays["data"].astype(np.float32), arrays["mask"].astype(bool), *([arrays["timestamps"]] if with_timestamps else []))
    return sequences


def standardize_per_speaker(sequences: Sequences, speakers: dict[str, str]) -> Sequences:
    """Each clip's frames minus its speaker's mean, over its speaker's std (visible frames of
    all that speaker's clips; no labels are used)."""
    by_speaker: dict[str, list[str]] = {}
    for clip_id in sequences:
        by_speaker.setdefault(speakers[clip_id], []).append(clip_id)
    standardized = {}
    for clip_ids in by_speaker.values():
        frames = np.concatenate([sequences[c][0][sequences[c][1]] for c in clip_ids])
        if not len(frames):
            standardized.update({c: sequences[c] for c in clip_ids})
            continue
        mean, std = frames.mean(0), np.maximum(frames.std(0), 1e-6)
        for c in clip_ids:
            x, mask, *rest = sequences[c]  # rest: timestamps, for the continuous task
            standardized[c] = (np.where(mask[:, None], (x - mean) / std, 0.0).astype(np.float32), mask, *rest)
    return standardized


def _speaker_standardized(branch_sequences: dict[str, Sequences], clips: pd.DataFrame, params: TrainParams) -> dict[str, Sequences]:
    if not params.speaker_standardization:
        return branch_sequences
    speakers = dict(zip(clips["clip_id"], clips["speaker"].astype(str)))
    return {branch: standardize_per_speaker(sequences, speakers) for branch, sequences in branch_sequences.items()}


@dataclass
class CrossValidationResult:
    scores: pd.DataFrame          # clip_id, fold, label, p_<class>...
    fold_states: list[dict]        # one state_dict per fold model
    curves: pd.DataFrame          # fold, epoch, train_loss, val_loss


class PaddedInputs:
    """Every clip's sequences padded once per branch; batches are row selections trimmed to
    their longest clip. A clip missing from a branch is all-masked there."""

    def __init__(self, branch_sequences: dict[str, Sequences], clip_ids: list[str]) -> None:
        self.tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for branch, sequences in branch_sequences.items():
            dim = next(iter(sequences.values()))[0].shape[1]
            length = max((len(sequences[c][0]) for c in clip_ids if c in sequences), default=1)
            x = np.zeros((len(clip_ids), length, dim), np.float32)
            mask = np.zeros((len(clip_ids), length), bool)
            for row, clip_id in enumerate(clip_ids):
                if clip_id in sequences:
                    frames, frame_mask = sequences[clip_id]
                    x[row, : len(frames)] = frames
                    mask[row, : len(frames)] = frame_mask
            self.tensors[branch] = (torch.from_numpy(x), torch.from_numpy(mask))

    def take(self, rows: np.ndarray) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        index = torch.as_tensor(rows, dtype=torch.long)
        batch = {}
        for branch, (x, mask) in self.tensors.items():
            selected = mask[index]
            visible = selected.any(0).nonzero()
            length = int(visible.max()) + 1 if len(visible) else 1
            batch[branch] = (x[index, :length], selected[:, :length])
        return batch

    def visible_frames(self, branch: str, rows: np.ndarray) -> torch.Tensor:
        x, mask = self.tensors[branch]
        index = torch.as_tensor(rows, dtype=torch.long)
        return x[index][mask[index]]


def _stratified_split(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    validation = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        take = int(round(len(members) * fraction)) if len(members) > 2 else 0
        validation.extend(members[:take])
    validation = np.array(sorted(validation), dtype=int)
    fit = np.setdiff1d(np.arange(len(labels)), validation)
    return fit, validation


def _fit_standardizers(model: nn.Module, inputs: PaddedInputs, rows: np.ndarray) -> None:
    for branch, standardize in model.standardize.items():
        frames = inputs.visible_frames(branch, rows)
        if len(frames):
            standardize.fit(frames)


def _predict(model: nn.Module, inputs: PaddedInputs, rows: np.ndarray, batch_size: int) -> np.ndarray:
    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            logits = model(inputs.take(rows[start : start + batch_size]))
            outputs.append(torch.softmax(logits, dim=1).numpy())
    return np.concatenate(outputs)


def parameter_groups(model: nn.Module, lr: float) -> list[dict]:
    """Optimizer parameter groups: a submodule with ``parameter_groups(lr)`` (e.g. a fine-tuned
    backbone wanting a smaller learning rate) supplies its own; every other parameter gets ``lr``."""
    groups, claimed = [], set()
    for module in model.modules():
        hook = getattr(module, "parameter_groups", None)
        if module is model or hook is None:
            continue
        for group in hook(lr):
            fresh = [p for p in group["params"] if id(p) not in claimed]
            claimed.update(id(p) for p in fresh)
            groups.append({**group, "params": fresh})
    rest = [p for p in model.parameters() if id(p) not in claimed]
    return [{"params": rest, "lr": lr}, *groups]


def _train_fold(
    build_model: Callable[[], nn.Module],
    inputs: PaddedInputs,
    train_rows: np.ndarray,
    train_labels: np.ndarray,
    num_classes: int,
    params: TrainParams,
    seed: int,
) -> tuple[nn.Module, list[dict]]:
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    fit, val = _stratified_split(train_labels, params.validation_fraction, rng)
    model = build_model()
    _fit_standardizers(model, inputs, train_rows[fit])
    counts = np.bincount(train_labels[fit], minlength=num_classes).astype(np.float32)
    weights = counts.sum() / (num_classes * np.maximum(counts, 1.0)) if params.class_weights else np.ones(num_classes, np.float32)
    loss_fn = nn.CrossEntropyLoss(weight=torch.from_numpy(weights.astype(np.float32)))
    optimizer = torch.optim.AdamW(parameter_groups(model, params.lr), lr=params.lr, weight_decay=params.weight_decay)
    targets = torch.from_numpy(train_labels)
    val_inputs = inputs.take(train_rows[val]) if len(val) else None

    def train_epoch() -> float:
        order = fit[rng.permutation(len(fit))]
        epoch_loss = 0.0
        for start in range(0, len(order), params.batch_size):
            rows = order[start : start + params.batch_size]
            loss = loss_fn(model(inputs.take(train_rows[rows])), targets[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item() * len(rows)
        return epoch_loss / len(fit)

    def validation_loss() -> float:
        return loss_fn(model(val_inputs), targets[val]).item()

    curve = fit_with_early_stopping(model, params, train_epoch, validation_loss if val_inputs is not None else None)
    return model, curve


def fit_with_early_stopping(
    model: nn.Module, params: TrainParams, train_epoch: Callable[[], float], validation_loss: Callable[[], float] | None
) -> list[dict]:
    """Epochs until the validation loss (the training loss without a validation part) stops
    improving for ``params.patience`` epochs; the model is left with its best weights.
    Returns the training curve."""
    best, best_state, stale, curve = float("inf"), copy.deepcopy(model.state_dict()), 0, []
    for epoch in range(params.epochs):
        for module in model.modules():
            if module is not model and hasattr(module, "on_epoch_start"):
                module.on_epoch_start(epoch)  # e.g. a fine-tuned CNN unfreezing its next block
        model.train()
        train_loss = train_epoch()
        if validation_loss is not None:
            model.eval()
            with torch.no_grad():
                val_loss = validation_loss()
        else:
            val_loss = train_loss
        curve.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
        if val_loss < best - 1e-4:
            best, best_state, stale = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= params.patience:
                break
    model.load_state_dict(best_state)
    return curve


def empty_result(classes: list[str]) -> CrossValidationResult:
    """What a member without any features produces (e.g. the face branch on audio-only data)."""
    columns = ["clip_id", "fold", "label", *probability_columns(classes)]
    return CrossValidationResult(pd.DataFrame(columns=columns), [], pd.DataFrame(columns=["fold", "epoch", "train_loss", "val_loss"]))


def _map_folds(run: Callable, jobs: list, workers: int) -> list:
    if workers > 1 and len(jobs) > 1:
        # fork, as torch's DataLoader workers do: each child sets its own thread count before any
        # torch op, and a spawned child would spend seconds re-importing torch per worker.
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
            return list(pool.map(run, jobs))
    return [run(job) for job in jobs]


@dataclass(frozen=True)
class FoldJob:
    spec: ModelSpec
    inputs: PaddedInputs
    train_rows: np.ndarray
    predict_rows: np.ndarray
    labels: np.ndarray
    params: TrainParams
    seed: int


def _run_fold(job: FoldJob) -> tuple[dict, list[dict], np.ndarray]:
    torch.set_num_threads(job.params.threads)
    model, curve = _train_fold(
        job.spec.build, job.inputs, job.train_rows, job.labels[job.train_rows], job.spec.num_classes, job.params, job.seed
    )
    return model.state_dict(), curve, _predict(model, job.inputs, job.predict_rows, job.params.batch_size)


def cross_validate(
    spec: ModelSpec,
    branch_sequences: dict[str, Sequences],
    clips: pd.DataFrame,
    classes: list[str],
    params: TrainParams,
) -> CrossValidationResult:
    """``clips`` has clip_id, label, fold, speaker; every clip must be in at least one branch.

    Folds train in ``params.workers`` processes at once: these models are too small for
    intra-op threads to pay off, so one thread per fold and folds side by side use the cores.
    """
    class_index = {c: i for i, c in enumerate(classes)}
    clips = clips.reset_index(drop=True)
    branch_sequences = _speaker_standardized(branch_sequences, clips, params)
    labels = clips["label"].map(class_index).to_numpy()
    folds = clips["fold"].to_numpy()
    if len(spec.branches) == 1 and spec.fusion is None and is_pooled_head(spec.branches[0].head):
        return _cross_validate_pooled(spec, branch_sequences[spec.branches[0].name], clips, labels, classes, params)
    inputs = PaddedInputs(branch_sequences, clips["clip_id"].tolist())
    jobs = [FoldJob(spec, inputs, train, predicted, labels, params, params.seed * 1000 + fold) for fold, train, predicted in fold_rows(folds)]
    return _assemble(clips, folds, _map_folds(_run_fold, jobs, params.workers), classes)


def fold_rows(folds: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(fold, training rows, rows to predict) per fold. Test clips (fold -1) never train
    and are predicted by every fold's model, after that fold's own held-out clips."""
    test = np.flatnonzero(folds < 0)
    return [
        (int(fold), np.flatnonzero((folds != fold) & (folds >= 0)), np.concatenate([np.flatnonzero(folds == fold), test]))
        for fold in sorted(np.unique(folds[folds >= 0]))
    ]


def _score_frame(clips: pd.DataFrame, rows: np.ndarray, fold: int, probabilities: np.ndarray, classes: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(probabilities, columns=probability_columns(classes))
    frame.insert(0, "label", clips["label"].to_numpy()[rows])
    frame.insert(0, "fold", fold)
    frame.insert(0, "clip_id", clips["clip_id"].to_numpy()[rows])
    return frame


def _assemble(clips: pd.DataFrame, folds: np.ndarray, outcomes: list, classes: list[str]) -> CrossValidationResult:
    """Out-of-fold score rows, plus test rows (fold -1) averaged over the fold models."""
    rows, states, curves = [], [], []
    test = np.flatnonzero(folds < 0)
    test_sum = np.zeros((len(test), len(classes)))
    for (fold, _, predicted), (state, curve, probabilities) in zip(fold_rows(folds), outcomes):
        held_out = len(predicted) - len(test)
        rows.append(_score_frame(clips, predicted[:held_out], fold, probabilities[:held_out], classes))
        test_sum += probabilities[held_out:]
        states.append(state)
        curves.extend({"fold": fold, **point} for point in curve)
    if len(test):
        rows.append(_score_frame(clips, test, -1, test_sum / max(len(outcomes), 1), classes))
    scores = pd.concat(rows, ignore_index=True).sort_values("clip_id").reset_index(drop=True)
    return CrossValidationResult(scores, states, pd.DataFrame(curves, columns=["fold", "epoch", "train_loss", "val_loss"]))


@dataclass(frozen=True)
class PooledFoldJob:
    head: PooledHead
    x: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    train_rows: np.ndarray
    predict_rows: np.ndarray
    num_classes: int
    seed: int


def _run_pooled_fold(job: PooledFoldJob) -> tuple[PooledHead, list[dict], np.ndarray]:
    train = job.train_rows
    head = copy.deepcopy(job.head).fit(job.x[train], job.labels[train], job.groups[train], job.num_classes, job.seed)
    return head, [], head.predict_proba(job.x[job.predict_rows])


def _cross_validate_pooled(
    spec: ModelSpec, sequences: Sequences, clips: pd.DataFrame, labels: np.ndarray, classes: list[str], params: TrainParams
) -> CrossValidationResult:
    branch = spec.branches[0]
    head = HEADS.get(branch.head)(branch.input_dim, branch.head_config)
    x = pooled_matrix(sequences, clips["clip_id"].tolist(), head.statistics)
    groups = clips["speaker"].astype(str).to_numpy()
    folds = clips["fold"].to_numpy()
    jobs = [
        PooledFoldJob(head, x, labels, groups, train, predicted, len(classes), params.seed * 1000 + fold)
        for fold, train, predicted in fold_rows(folds)
    ]
    return _assemble(clips, folds, _map_folds(_run_pooled_fold, jobs, params.workers), classes)


def output_size(params: Params) -> int:
    return len(params.continuous.dimensions) if params.task == "continuous" else len(params.data.labels)


def load_branch(store: FeatureStore, clip_ids: list[str], params: Params) -> Sequences:
    """A branch's features; the continuous task also needs their timestamps."""
    return load_sequences(store, clip_ids, with_timestamps=params.task == "continuous")


def annotated_clips(manifest: pd.DataFrame, params: Params) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """The clips a model can learn from: all, or for the continuous task those with a
    per-frame annotation file (the others are recorded, not fatal)."""
    if params.task != "continuous":
        return manifest, []
    has = manifest["targets"].fillna("").astype(str) != ""
    missing = [{"clip_id": c, "stage": "train", "reason": "no per-frame annotation (targets) for the continuous task"}
               for c in manifest.loc[~has, "clip_id"]]
    return manifest[has], missing


def cross_validate_task(spec: ModelSpec, branch_sequences: dict[str, Sequences], clips: pd.DataFrame, params: Params) -> CrossValidationResult:
    if params.task == "continuous":
        from pipeline.continuous import cross_validate_continuous

        branch_sequences = _speaker_standardized(branch_sequences, clips, params.train)
        return cross_validate_continuous(spec, branch_sequences, clips, params.train, params.continuous)
    return cross_validate(spec, branch_sequences, clips, params.data.labels, params.train)
