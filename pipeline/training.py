"""Speaker-independent cross-validation of a member on cached features, for any task.

For each fold of the manifest, the member is trained on the other folds (a part of them
held out for early stopping) and predicts the held-out fold, giving out-of-fold scores for
every clip: the score matrix that late fusion and evaluation use. Clips of the held-out test
split (fold -1) never train; every fold model predicts them and the task merges the fold
models' outputs. One fold loop serves every task: the task (:mod:`pipeline.tasks`) supplies
the batches, the loss, the per-clip outputs and the score rows; the member is either a torch
model (:class:`NeuralFolds`) or a classical head fit on pooled statistics (:class:`PooledFolds`).

A seed ensemble (``seeds`` > 1) trains each fold that many times with different seeds
(:func:`fold_seed`); the fold's output for a clip is the task's ``merge_seeds`` of its
models' outputs (their mean), for the held-out fold and the test split alike.
"""
from __future__ import annotations

import copy
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.config import TrainParams
from pipeline.heads import HEADS
from pipeline.heads.pooled import pool_statistics, statistics_used
from pipeline.models import ModelSpec
from pipeline.store import FeatureStore
from pipeline.tasks import Sequences, Task, TaskData, TrainingAugmentation


def feature_dim(sequences: Sequences) -> int:
    """Feature dimension of a branch's sequences (0 when the branch has none)."""
    return next(iter(sequences.values()))[0].shape[1] if sequences else 0


def read_features(store: FeatureStore, clip_ids: list[str] | None = None) -> tuple[Sequences, list[dict[str, Any]]]:
    """Features of every indexed clip (or of ``clip_ids`` that have an entry) as (frames,
    mask, timestamps), and the distinct extractor identities their entries record (normally
    one: the store's extractor, its config and its weights)."""
    indexed = set(store.clip_ids())
    wanted = indexed if clip_ids is None else indexed & set(clip_ids)
    sequences, identities = {}, {}
    for clip_id in sorted(wanted):
        entry = store.read(clip_id, ["data", "mask", "timestamps"])
        arrays = entry.arrays
        sequences[clip_id] = (arrays["data"].astype(np.float32), arrays["mask"].astype(bool), arrays["timestamps"])
        record = {key: entry.attrs[key] for key in ("extractor", "config_hash", "weights_sha256", "weights_origin") if key in entry.attrs}
        if "identity" in entry.attrs:
            identity = entry.attrs["identity"]
            record["identity"] = json.loads(identity) if isinstance(identity, str) else identity
        identities.setdefault(json.dumps(record, sort_keys=True, default=str), record)
    return sequences, list(identities.values())


def load_sequences(store: FeatureStore, clip_ids: list[str] | None = None) -> Sequences:
    return read_features(store, clip_ids)[0]


# -- normalisation (pipeline/normalization.py; re-exported for the callers that import it here)
from pipeline.normalization import (  # noqa: E402
    SpeakerStatistics, Statistics, apply_speaker_statistics, apply_statistics, normalize_features, pooled_statistics,
    speaker_statistics, standardize_per_speaker,
)


# -- the fold loop ------------------------------------------------------------------------------
@dataclass
class CrossValidationResult:
    scores: pd.DataFrame                 # the task's score matrix (out-of-fold rows, test rows fold -1)
    fold_states: list[dict]              # per fold and seed: the torch state_dict, or the pooled head's state
    curves: pd.DataFrame                 # fold, seed (0..seeds-1), epoch, train_loss, val_loss
    folds: list[int] = field(default_factory=list)  # the fold number of each state
    # branch -> speaker -> (mean, std), when the features were standardised per speaker
    speaker_statistics: dict[str, SpeakerStatistics] = field(default_factory=dict)
    # branch -> fold -> (mean, std) of the training speakers, under train-speakers
    fold_statistics: dict[str, dict[int, Statistics]] = field(default_factory=dict)
    pooled_statistics: list[str] = field(default_factory=list)  # what a pooled head pooled
    seeds: list[int] = field(default_factory=list)  # the seed each state was trained with


CURVE_COLUMNS = ["fold", "seed", "epoch", "train_loss", "val_loss"]
# Model k of a seed ensemble trains as the single model of train.seed + k * this would: an
# ensemble of N is the mean of those N single models, and the ensembles of train.seed values
# below the stride share no model.
ENSEMBLE_SEED_STRIDE = 1000


def fold_seed(train_seed: int, fold: int, index: int = 0) -> int:
    """The seed of model ``index`` of fold ``fold``'s ensemble (index 0: the single model)."""
    return (train_seed + index * ENSEMBLE_SEED_STRIDE) * 1000 + fold


def empty_result(task: Task) -> CrossValidationResult:
    """What a member without any features produces (e.g. the face branch on audio-only data)."""
    return CrossValidationResult(task.empty_scores(), [], pd.DataFrame(columns=CURVE_COLUMNS))


def fold_rows(folds: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(fold, training rows, rows to predict) per fold. Test clips (fold -1) never train
    and are predicted by every fold's model, after that fold's own held-out clips."""
    test = np.flatnonzero(folds < 0)
    return [
        (int(fold), np.flatnonzero((folds != fold) & (folds >= 0)), np.concatenate([np.flatnonzero(folds == fold), test]))
        for fold in sorted(np.unique(folds[folds >= 0]))
    ]


@dataclass(frozen=True)
class FoldJob:
    fold: int
    train_rows: np.ndarray
    predict_rows: np.ndarray
    seed: int
    position: int = 0  # 1-based, among the member's folds (progress lines)
    seed_index: int = 0  # 0-based, among the fold's seed ensemble


@dataclass
class FoldOutcome:
    state: dict
    curve: list[dict]
    outputs: list[np.ndarray]  # one per predicted row


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


def duration(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


PROGRESS_INTERVAL_S = 15.0  # at most one epoch line per fold worker this often


class Progress:
    """Progress lines of one member's cross-validation: per fold (and seed, in a seed ensemble)
    its epoch and best validation loss so far (at most one line per ``interval_s`` per fold
    process, from inside the forked fold workers), and at each finished fold model the models
    done and an estimate of the time left."""

    def __init__(self, label: str, folds: int, epochs: int, interval_s: float | None = None, seeds: int = 1) -> None:
        self.label, self.folds, self.epochs, self.seeds = label or "training", folds, epochs, seeds
        self.interval_s = PROGRESS_INTERVAL_S if interval_s is None else interval_s
        self.started = time.monotonic()
        self.done = 0
        self._last = -float("inf")

    def where(self, job: FoldJob) -> str:
        seed = f" seed {job.seed_index + 1}/{self.seeds}" if self.seeds > 1 else ""
        return f"fold {job.position}/{self.folds}{seed}"

    def epoch(self, job: FoldJob, epoch: int, best: float, best_epoch: int, fold_started: float) -> None:
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return
        self._last = now
        per_epoch = (now - fold_started) / (epoch + 1)
        print(f"{self.label}: {self.where(job)} epoch {epoch + 1}/{self.epochs}, best val_loss {best:.4f} "
              f"(epoch {best_epoch + 1}); this fold at most {duration(per_epoch * (self.epochs - epoch - 1))} more", flush=True)

    def fold_done(self, job: FoldJob, outcome: "FoldOutcome") -> None:
        self.done += 1
        total = self.folds * self.seeds
        elapsed = time.monotonic() - self.started
        # Folds run side by side: the ones left take about as long per fold as the finished ones.
        left = elapsed / self.done * (total - self.done)
        curve = outcome.curve
        detail = (f"{len(curve)} epochs, best val_loss {min(p['val_loss'] for p in curve):.4f}" if curve else "fit")
        count = f"{self.done}/{total} fold models" if self.seeds > 1 else f"{self.done}/{total} folds"
        print(f"{self.label}: {self.where(job)} done ({detail}); {count} in "
              f"{duration(elapsed)}, about {duration(left)} left", flush=True)


def fit_with_early_stopping(
    model: nn.Module, params: TrainParams, train_epoch: Callable[[], float], validation_loss: Callable[[], float] | None,
    report: Callable[[int, float, int], None] | None = None,
) -> list[dict]:
    """Epochs until the validation loss (the training loss without a validation part) stops
    improving for ``params.patience`` epochs; the model is left with its best weights.
    Returns the training curve."""
    best, best_state, stale, curve, best_epoch = float("inf"), copy.deepcopy(model.state_dict()), 0, [], 0
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
            best, best_state, stale, best_epoch = val_loss, copy.deepcopy(model.state_dict()), 0, epoch
        else:
            stale += 1
            if stale >= params.patience:
                break
        if report is not None:
            report(epoch, best, best_epoch)
    model.load_state_dict(best_state)
    return curve


class NeuralFolds:
    """Fold models that are torch modules built from ``spec``, trained by minibatches the
    task draws (its loss, its validation part), with early stopping."""

    def __init__(self, spec: ModelSpec, params: TrainParams) -> None:
        self.spec, self.params = spec, params

    def prepare(self, data: TaskData) -> None:
        """Nothing to precompute: batches are drawn from the task's data."""

    def train(self, data: TaskData, train_rows: np.ndarray, seed: int,
              report: Callable[[int, float, int], None] | None = None) -> tuple[nn.Module, list[dict]]:
        params = self.params
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        # Cropping long clips draws from its own stream, so it never shifts the shuffling.
        crop_rng = np.random.default_rng([seed, 1])
        fit, validation = data.split(train_rows, params.validation_fraction, rng)
        model = self.spec.build()
        for branch, standardize in model.standardize.items():
            frames = data.standardizer_frames(branch, fit)
            if len(frames):
                standardize.fit(torch.from_numpy(frames))
        loss_fn = data.loss(fit)
        optimizer = torch.optim.AdamW(parameter_groups(model, params.lr), lr=params.lr, weight_decay=params.weight_decay)
        units = data.training_units(fit)  # the fit clips and their augmented copies
        validation_batch = data.validation_batch(validation)
        # SpecAugment masks (training batches only) draw from a stream of their own too.
        spec_masks = data.spec_masker(fit, np.random.default_rng([seed, 2]))

        def train_epoch() -> float:
            order = rng.permutation(len(units))
            total = 0.0
            for start in range(0, len(order), params.batch_size):
                batch = data.batch([units[i] for i in order[start : start + params.batch_size]], crop_rng)
                if spec_masks is not None:
                    spec_masks(batch)
                loss = loss_fn(model, batch)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * batch.size
            return total / max(len(units), 1)

        def validation_loss() -> float:
            return loss_fn(model, validation_batch).item()

        curve = fit_with_early_stopping(model, params, train_epoch, validation_loss if validation_batch is not None else None, report)
        return model, curve

    def run(self, data: TaskData, job: FoldJob, progress: Progress | None = None) -> FoldOutcome:
        torch.set_num_threads(self.params.threads)
        report = None
        if progress is not None:
            started = time.monotonic()
            report = lambda epoch, best, best_epoch: progress.epoch(job, epoch, best, best_epoch, started)  # noqa: E731
        model, curve = self.train(data, job.train_rows, job.seed, report)
        return FoldOutcome(model.state_dict(), curve, data.predict(model, job.predict_rows))

    def restore(self, state: dict) -> nn.Module:
        model = self.spec.build()
        model.load_state_dict(state)
        return model.eval()

    def predict(self, model: nn.Module, data: TaskData, rows: np.ndarray) -> list[np.ndarray]:
        return data.predict(model, rows)


class PooledFolds:
    """Fold models that are a classical head (:mod:`pipeline.heads.pooled`) fit on each
    clip's pooled statistics, its hyper-parameters chosen on the training speakers."""

    def __init__(self, spec: ModelSpec, params: TrainParams | None, task: Task, statistics: list[str] | None = None) -> None:
        if not task.pooled_heads:
            raise ValueError(f"task {task.registry_name!r} cannot be learnt by the pooled head {spec.branches[0].head!r}")
        self.spec, self.params, self.task = spec, params, task
        self.branch = spec.branches[0]
        self.head_class = HEADS.get(self.branch.head)
        self.statistics = statistics  # set from the training clips by prepare()

    def new_head(self):
        return self.head_class(self.branch.input_dim, self.branch.head_config)

    def prepare(self, data: TaskData) -> None:
        clips = data.rows[self.branch.name]
        sequences = {i: clip for i, clip in enumerate(clips)}
        self.statistics = statistics_used(sequences, list(sequences), self.new_head().statistics)
        self.pooled = self.matrix(data, np.arange(len(clips)))

    def matrix(self, data: TaskData, rows: np.ndarray) -> np.ndarray:
        clips = data.rows[self.branch.name]
        return np.stack([pool_statistics(clips[r][0], clips[r][1], self.statistics) for r in rows])

    def run(self, data: TaskData, job: FoldJob, progress: Progress | None = None) -> FoldOutcome:
        train = data.with_copies(job.train_rows)  # the training clips and their augmented copies, with the original's speaker
        groups = data.clips["speaker"].astype(str).to_numpy()[data.source_rows(train)]
        head = self.new_head().fit(self.pooled[train], self.task.pooled_targets(data)[train], groups, self.task.output_size(), job.seed,
                                   augmented=data.copy_rows(train))
        probabilities = head.predict_proba(self.pooled[job.predict_rows])
        return FoldOutcome({"head": head.state(), "chosen": head.chosen}, [], list(probabilities))

    def restore(self, state: dict):
        return self.head_class.from_state(self.branch.input_dim, self.branch.head_config, state["head"])

    def predict(self, head, data: TaskData, rows: np.ndarray) -> list[np.ndarray]:
        return list(head.predict_proba(self.matrix(data, rows)))


def fold_models(spec: ModelSpec, params: TrainParams | None, task: Task, statistics: list[str] | None = None):
    return PooledFolds(spec, params, task, statistics) if spec.pooled else NeuralFolds(spec, params)


_FORKED_WORK: tuple | None = None  # what forked fold workers run, inherited instead of pickled


def _run_forked(index: int):
    run, jobs = _FORKED_WORK
    return run(jobs[index])


def map_folds(run: Callable, jobs: list, workers: int, on_done: Callable[[int, Any], None] | None = None) -> list:
    """``run(job)`` for every job, in ``workers`` forked processes; ``on_done(index, result)``
    as each one finishes (in the order they finish). Results in the order of ``jobs``."""
    global _FORKED_WORK
    on_done = on_done or (lambda index, result: None)
    if workers > 1 and len(jobs) > 1:
        # fork, as torch's DataLoader workers do: each child sets its own thread count before any
        # torch op, and a spawned child would spend seconds re-importing torch per worker. The
        # children inherit the prepared data: only the fold's index goes through a pipe.
        _FORKED_WORK = (run, jobs)
        try:
            context = multiprocessing.get_context("fork")
            results: list = [None] * len(jobs)
            with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
                futures = {pool.submit(_run_forked, index): index for index in range(len(jobs))}
                for future in as_completed(futures):
                    index = futures[future]
                    results[index] = future.result()
                    on_done(index, results[index])
            return results
        finally:
            _FORKED_WORK = None
    results = []
    for index, job in enumerate(jobs):
        results.append(run(job))
        on_done(index, results[-1])
    return results


def merge_fold_seeds(task: Task, jobs: list[FoldJob], outputs: list[list[np.ndarray]]) -> tuple[list[FoldJob], list[list[np.ndarray]]]:
    """Per fold (in the order of ``jobs``), its first job and, per predicted row, the task's
    merge of the outputs of the fold's seed models."""
    by_fold: dict[int, tuple[FoldJob, list]] = {}
    for job, predicted in zip(jobs, outputs):
        by_fold.setdefault(job.fold, (job, []))[1].append(predicted)
    return ([job for job, _ in by_fold.values()],
            [[task.merge_seeds(list(row)) for row in zip(*ensemble)] for _, ensemble in by_fold.values()])


def _known(sequences: Sequences, speakers: dict[str, str]) -> Sequences:
    """The copies of clips that are in ``speakers`` (the others have no clip to train with)."""
    return {clip_id: sequence for clip_id, sequence in sequences.items() if clip_id in speakers}


def assemble(task: Task, data: TaskData, jobs: list[FoldJob], outputs: list[list[np.ndarray]]) -> pd.DataFrame:
    """Out-of-fold score rows, plus test rows (fold -1) merged over the fold models; the
    outputs of a fold's seed models are merged first."""
    folds = data.clips["fold"].to_numpy()
    test = np.flatnonzero(folds < 0)
    frames, test_outputs = [], [[] for _ in test]
    for job, predicted in zip(*merge_fold_seeds(task, jobs, outputs)):
        held_out = len(job.predict_rows) - len(test)
        frames.append(task.score_frame(data, job.predict_rows[:held_out], job.fold, predicted[:held_out]))
        for merged, output in zip(test_outputs, predicted[held_out:]):
            merged.append(output)
    if len(test):
        frames.append(task.score_frame(data, test, -1, [task.merge_folds(o) for o in test_outputs]))
    return task.finish(pd.concat(frames, ignore_index=True)) if frames else task.empty_scores()


def cross_validate(
    spec: ModelSpec, branch_sequences: dict[str, Sequences], clips: pd.DataFrame, task: Task, params: TrainParams, label: str = "",
    seeds: int = 1,
    augmentation: TrainingAugmentation | None = None,
) -> CrossValidationResult:
    """``clips`` has clip_id, fold, speaker and the task's targets (label; or targets,
    duration_s for the continuous task); every clip must be in at least one branch.
    ``label`` names the member in the progress lines. ``seeds``: models per fold (a seed
    ensemble, merged by the task's ``merge_seeds``); 1: a single model per fold.
    ``augmentation``: augmented copies of the clips (each fold trains on those of its fit
    clips only) and SpecAugment masks.

    The features are normalised first (``params.feature_normalization``), then standardised
    by the protocol ``params.speaker_standardization`` (:mod:`pipeline.normalization`):
    transductive once for all clips; train-speakers per fold, with that fold's training clips.
    The statistics come from the clips only; a copy is standardised with its original's.

    Fold models (one per fold and seed) train in ``params.workers`` processes at once: these
    models are too small for intra-op threads to pay off, so one thread per fold model and
    models side by side use the cores.
    """
    if seeds < 1:
        raise ValueError(f"seeds: {seeds}; a member trains at least one model per fold")
    clips = clips.reset_index(drop=True)
    branch_sequences = {b: normalize_features(s, params.feature_normalization) for b, s in branch_sequences.items()}
    augmentation = (augmentation or TrainingAugmentation()).transformed(lambda b, s: normalize_features(s, params.feature_normalization))
    dims = {b.name: b.input_dim for b in spec.branches}
    statistics, fold_statistics = {}, {}
    if params.speaker_standardization == "transductive":
        speakers = dict(zip(clips["clip_id"], clips["speaker"].astype(str)))
        statistics = {b: speaker_statistics(s, speakers) for b, s in branch_sequences.items()}
        branch_sequences = {b: apply_speaker_statistics(s, speakers, statistics[b]) for b, s in branch_sequences.items()}
        augmentation = augmentation.transformed(lambda b, s: apply_speaker_statistics(_known(s, speakers), speakers, statistics[b]))
    data = task.prepare(branch_sequences, clips, params, dims=dims, augmentation=augmentation)
    models = fold_models(spec, params, task)
    models.prepare(data)
    folds = fold_rows(clips["fold"].to_numpy())
    jobs = [FoldJob(fold, train, predicted, fold_seed(params.seed, fold, index), position, index)
            for position, (fold, train, predicted) in enumerate(folds, 1) for index in range(seeds)]
    progress = Progress(label, len(folds), params.epochs, seeds=seeds)

    def run(job: FoldJob) -> FoldOutcome:
        return models.run(data, job, progress)

    if params.speaker_standardization == "train-speakers":
        clip_ids = clips["clip_id"].to_numpy()
        fold_statistics = {b: {job.fold: pooled_statistics(s, clip_ids[job.train_rows]) for job in jobs if job.seed_index == 0}
                           for b, s in branch_sequences.items()}

        def run(job: FoldJob) -> FoldOutcome:  # noqa: F811
            # The fold's clips, held-out ones included, standardised with its training clips' statistics.
            fold_sequences = {b: apply_statistics(s, fold_statistics[b][job.fold]) for b, s in branch_sequences.items()}
            fold_augmentation = augmentation.transformed(lambda b, s: apply_statistics(s, fold_statistics[b][job.fold]))
            fold_data = task.prepare(fold_sequences, clips, params, dims=dims, augmentation=fold_augmentation)
            fold_model = fold_models(spec, params, task)
            fold_model.prepare(fold_data)
            return fold_model.run(fold_data, job, progress)

    outcomes = map_folds(run, jobs, params.workers, lambda index, outcome: progress.fold_done(jobs[index], outcome))
    curves = [{"fold": job.fold, "seed": job.seed_index, **point} for job, outcome in zip(jobs, outcomes) for point in outcome.curve]
    return CrossValidationResult(
        assemble(task, data, jobs, [o.outputs for o in outcomes]),
        [o.state for o in outcomes],
        pd.DataFrame(curves, columns=CURVE_COLUMNS),
        [job.fold for job in jobs],
        statistics,
        {b: {f: s for f, s in by_fold.items() if s is not None} for b, by_fold in fold_statistics.items()},
        list(models.statistics) if isinstance(models, PooledFolds) else [],
        [job.seed for job in jobs],
    )
