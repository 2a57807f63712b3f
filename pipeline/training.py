"""Speaker-independent cross-validation of a classifier on cached features.

For each fold of the manifest, the model is trained on the other folds (a stratified part
of them held out for early stopping) and predicts the held-out fold, giving out-of-fold
class probabilities for every clip: the score matrix that late fusion and evaluation use.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.config import TrainParams
from pipeline.store import FeatureStore

# clip_id -> (frames [T, D] float32, mask [T] bool)
Sequences = dict[str, tuple[np.ndarray, np.ndarray]]


def load_sequences(store: FeatureStore, clip_ids: list[str] | None = None) -> Sequences:
    """Features of every indexed clip (or of ``clip_ids`` that have an entry)."""
    indexed = set(store.clip_ids())
    wanted = indexed if clip_ids is None else indexed & set(clip_ids)
    sequences = {}
    for clip_id in sorted(wanted):
        entry = store.read(clip_id, ["data", "mask"])
        sequences[clip_id] = (entry.arrays["data"].astype(np.float32), entry.arrays["mask"].astype(bool))
    return sequences


def probability_columns(classes: list[str]) -> list[str]:
    return [f"p_{c}" for c in classes]


@dataclass
class CrossValidationResult:
    scores: pd.DataFrame          # clip_id, fold, label, p_<class>...
    fold_states: list[dict]        # one state_dict per fold model
    curves: pd.DataFrame          # fold, epoch, train_loss, val_loss


def _batch(branch_sequences: dict[str, Sequences], clip_ids: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Pad each branch's sequences; a clip missing from a branch gets one masked frame."""
    inputs = {}
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
        inputs[branch] = (torch.from_numpy(x), torch.from_numpy(mask))
    return inputs


def _stratified_split(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    validation = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        take = int(round(len(members) * fraction)) if len(members) > 2 else 0
        validation.extend(members[:take])
    validation = np.array(sorted(validation), dtype=int)
    fit = np.setdiff1d(np.arange(len(labels)), validation)
    return fit, validation


def _fit_standardizers(model: nn.Module, branch_sequences: dict[str, Sequences], clip_ids: list[str]) -> None:
    for branch, sequences in branch_sequences.items():
        frames = [sequences[c][0][sequences[c][1]] for c in clip_ids if c in sequences]
        frames = np.concatenate([f for f in frames if len(f)] or [np.zeros((1, model.standardize[branch].mean.numel()), np.float32)])
        model.standardize[branch].fit(torch.from_numpy(frames))


def _predict(model: nn.Module, branch_sequences: dict[str, Sequences], clip_ids: list[str], batch_size: int) -> np.ndarray:
    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(clip_ids), batch_size):
            logits = model(_batch(branch_sequences, clip_ids[start : start + batch_size]))
            outputs.append(torch.softmax(logits, dim=1).numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, 0))


def _train_fold(
    build_model: Callable[[], nn.Module],
    branch_sequences: dict[str, Sequences],
    train_ids: list[str],
    train_labels: np.ndarray,
    num_classes: int,
    params: TrainParams,
    seed: int,
) -> tuple[nn.Module, list[dict]]:
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    fit_rows, val_rows = _stratified_split(train_labels, params.validation_fraction, rng)
    fit_ids = [train_ids[i] for i in fit_rows]
    val_ids = [train_ids[i] for i in val_rows]
    model = build_model()
    _fit_standardizers(model, branch_sequences, fit_ids)
    counts = np.bincount(train_labels[fit_rows], minlength=num_classes).astype(np.float32)
    weights = counts.sum() / (num_classes * np.maximum(counts, 1.0)) if params.class_weights else np.ones(num_classes, np.float32)
    loss_fn = nn.CrossEntropyLoss(weight=torch.from_numpy(weights.astype(np.float32)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)

    val_inputs = _batch(branch_sequences, val_ids) if val_ids else None
    val_targets = torch.from_numpy(train_labels[val_rows])
    best_loss, best_state, stale, curve = float("inf"), copy.deepcopy(model.state_dict()), 0, []
    for epoch in range(params.epochs):
        model.train()
        order = rng.permutation(len(fit_ids))
        epoch_loss = 0.0
        for start in range(0, len(order), params.batch_size):
            rows = order[start : start + params.batch_size]
            inputs = _batch(branch_sequences, [fit_ids[i] for i in rows])
            targets = torch.from_numpy(train_labels[fit_rows[rows]])
            loss = loss_fn(model(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item() * len(rows)
        train_loss = epoch_loss / len(fit_ids)
        if val_inputs is not None:
            model.eval()
            with torch.no_grad():
                val_loss = loss_fn(model(val_inputs), val_targets).item()
        else:
            val_loss = train_loss
        curve.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
        if val_loss < best_loss - 1e-4:
            best_loss, best_state, stale = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= params.patience:
                break
    model.load_state_dict(best_state)
    return model, curve


def empty_result(classes: list[str]) -> CrossValidationResult:
    """What a member without any features produces (e.g. the face branch on audio-only data)."""
    columns = ["clip_id", "fold", "label", *probability_columns(classes)]
    return CrossValidationResult(pd.DataFrame(columns=columns), [], pd.DataFrame(columns=["fold", "epoch", "train_loss", "val_loss"]))


def cross_validate(
    build_model: Callable[[], nn.Module],
    branch_sequences: dict[str, Sequences],
    clips: pd.DataFrame,
    classes: list[str],
    params: TrainParams,
) -> CrossValidationResult:
    """``clips`` has clip_id, label, fold; every clip must be in at least one branch."""
    torch.set_num_threads(params.threads)
    class_index = {c: i for i, c in enumerate(classes)}
    rows, states, curves = [], [], []
    for fold in sorted(clips["fold"].unique()):
        train = clips[clips["fold"] != fold]
        test = clips[clips["fold"] == fold]
        train_labels = train["label"].map(class_index).to_numpy()
        model, curve = _train_fold(
            build_model, branch_sequences, train["clip_id"].tolist(), train_labels, len(classes), params, params.seed * 1000 + int(fold)
        )
        probabilities = _predict(model, branch_sequences, test["clip_id"].tolist(), params.batch_size)
        fold_scores = pd.DataFrame(probabilities, columns=probability_columns(classes))
        fold_scores.insert(0, "label", test["label"].to_numpy())
        fold_scores.insert(0, "fold", int(fold))
        fold_scores.insert(0, "clip_id", test["clip_id"].to_numpy())
        rows.append(fold_scores)
        states.append(model.state_dict())
        curves.extend({"fold": int(fold), **point} for point in curve)
    scores = pd.concat(rows, ignore_index=True).sort_values("clip_id").reset_index(drop=True)
    return CrossValidationResult(scores, states, pd.DataFrame(curves))
