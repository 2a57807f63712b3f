"""Self-describing member checkpoints, and prediction with them on new clips.

Every trained member (a branch, the cross-modal fusion) writes one ``model.pt`` that rebuilds
and runs it without params.yaml:

- ``member``: plain JSON-able values: its name and kind, the task (classes or dimensions and
  their settings), the model (each branch's head type, config and input dimension; the
  fusion's type and config), the feature store each branch was trained on with the extractor
  identities its entries record, the training params, and what a pooled head pooled;
- ``speaker_statistics``: per branch and speaker the mean and std the features were
  standardised with (``train.speaker_standardization: transductive``), for every speaker
  seen in training;
- ``fold_statistics``: per branch and fold the training speakers' mean and std that fold's
  clips were standardised with (``train.speaker_standardization: train-speakers``);
- ``folds``: every fold's models (one, or one per seed of a seed ensemble, with the seeds
  they were trained with): a torch state_dict (the per-fold input standardisation is in it),
  or a classical head's arrays and text (:mod:`pipeline.heads.pooled`).

It holds tensors, numbers, strings, lists and dicts only, and is read with
``torch.load(weights_only=True)``: no pickled code. :func:`load_member` gives a
:class:`TrainedMember` whose ``predict`` runs every fold model on new feature sequences and
combines them as for the held-out test split (probabilities averaged; CCC-centred for the
continuous task), a fold's seed models merged first as in training (their mean)::

    member = load_member("models/branches/voice/model.pt")
    features = member.read_features("features", clip_ids=["clip_a", "clip_b"])
    scores = member.predict(features)              # clip_id, p_<class>...
"""
from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.models import ModelSpec
from pipeline.store import FeatureStore
from pipeline.tasks import Sequences, Task, task_from_description

FORMAT = "aver.member"
# 2: each fold holds a list of states (a seed ensemble) and their seeds, where version 1 held
# one state; version 1 files are still read. A version-1 reader refuses a version-2 file by its
# version instead of predicting with one seed of an ensemble.
VERSION = 2
READABLE_VERSIONS = (1, 2)


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file."""


def plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays as Python numbers and lists (JSON-able)."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def _tensors(state: dict[str, Any]) -> dict[str, Any]:
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else plain(v) for k, v in state.items()}


def _arrays(state: dict[str, Any]) -> dict[str, Any]:
    import torch

    return {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in state.items()}


def member_checkpoint(member: dict[str, Any], spec: ModelSpec, result) -> dict[str, Any]:
    """The checkpoint of a cross-validated member. ``member``: name, kind, task (described),
    stores, train params (JSON-able); ``result``: its CrossValidationResult."""
    import torch

    by_fold: dict[int, dict[str, list]] = {}
    seeds = result.seeds or [None] * len(result.folds)
    for fold, seed, state in zip(result.folds, seeds, result.fold_states):
        if spec.pooled:
            state = {"head": _tensors(state["head"]), "chosen": plain(state.get("chosen", {}))}
        entry = by_fold.setdefault(int(fold), {"seeds": [], "states": []})
        entry["seeds"].append(-1 if seed is None else int(seed))
        entry["states"].append(state)
    folds = [{"fold": fold, **entry} for fold, entry in by_fold.items()]

    def tensors(by_key: dict) -> dict:
        return {str(key): {"mean": torch.from_numpy(mean.astype(np.float32)), "std": torch.from_numpy(std.astype(np.float32))}
                for key, (mean, std) in by_key.items()}

    ensemble = max((len(entry["states"]) for entry in folds), default=1)
    description = plain({**member, "model": spec.describe(), "pooled_statistics": list(result.pooled_statistics), "seeds": ensemble})
    return {"format": FORMAT, "version": VERSION, "member": description,
            "speaker_statistics": {branch: tensors(s) for branch, s in result.speaker_statistics.items()},
            "fold_statistics": {branch: tensors(s) for branch, s in getattr(result, "fold_statistics", {}).items()},
            "folds": folds}


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    torch.save(checkpoint, temporary)
    temporary.replace(path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    import torch

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no checkpoint (run the member's train or fusion stage)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"{path}: holds pickled code, not only weights and plain values; it will not be loaded ({error})") from None
    except Exception as error:  # a truncated or foreign file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a member checkpoint (format {checkpoint.get('format') if isinstance(checkpoint, dict) else type(checkpoint).__name__!r})")
    if checkpoint.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(f"{path}: checkpoint version {checkpoint.get('version')}, this code reads versions {list(READABLE_VERSIONS)}")
    return checkpoint


def fold_states(checkpoint: dict[str, Any]) -> list[list[dict]]:
    """Per fold of the checkpoint, its models' states (one per seed; version 1: one)."""
    return [entry["states"] if "states" in entry else [entry["state"]] for entry in checkpoint["folds"]]


def _last_time(clip_id: str, branch_sequences: dict[str, Sequences]) -> float:
    times = [s[clip_id][2] for s in branch_sequences.values() if clip_id in s and len(s[clip_id]) > 2 and len(s[clip_id][2])]
    return max(float(t[-1]) for t in times) if times else 0.0


@dataclass
class TrainedMember:
    """A trained member rebuilt from its checkpoint: every fold's model, ready to predict."""

    path: Path
    name: str
    kind: str                      # "branch" or "fusion"
    task: Task
    spec: ModelSpec
    stores: dict[str, dict]        # branch -> {"features": store name, "identities": [...]}
    folds: list[int]
    speaker_statistics: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]
    speaker_standardization: str   # the protocol (pipeline/normalization.py)
    description: dict[str, Any]
    fold_models: Any = None        # how the fold models predict (pipeline.training.NeuralFolds / PooledFolds)
    models: list[list] | None = None  # per fold, in the order of ``folds``: its models (one per seed)
    feature_normalization: str = "none"
    fold_statistics: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] | None = None  # train-speakers

    @property
    def seeds(self) -> int:
        """Models per fold: > 1 for a seed ensemble, whose fold output is their mean."""
        return max((len(ensemble) for ensemble in self.models or []), default=1)

    @property
    def standardize_speakers(self) -> bool:
        """Whether ``predict`` needs the clips' speakers (the transductive protocol)."""
        return self.speaker_standardization == "transductive"

    @property
    def features(self) -> list[str]:
        """The feature stores (extract@<name> outputs) this member reads."""
        return sorted({store["features"] for store in self.stores.values()})

    def read_features(self, root: str | Path = "features", clip_ids: list[str] | None = None) -> dict[str, Sequences]:
        """Sequences of every store this member reads, from the store folders under ``root``."""
        from pipeline.training import load_sequences

        return {name: load_sequences(FeatureStore(Path(root) / name), clip_ids) for name in self.features}

    def _branch_sequences(self, features: dict[str, Sequences], speakers: dict[str, str] | None,
                          statistics: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] | None = None) -> dict[str, Sequences]:
        from pipeline.normalization import apply_speaker_statistics, normalize_features, speaker_statistics

        missing = [self.stores[b.name]["features"] for b in self.spec.branches if self.stores[b.name]["features"] not in features]
        if missing:
            raise KeyError(f"{self.path}: member {self.name!r} needs the features of store(s) {sorted(set(missing))}; given {sorted(features)}")
        branch_sequences = {b.name: normalize_features(features[self.stores[b.name]["features"]], self.feature_normalization)
                            for b in self.spec.branches}
        if not self.standardize_speakers:
            return branch_sequences
        if speakers is None:
            raise ValueError(f"{self.path}: member {self.name!r} standardises features per speaker: pass speakers={{clip_id: speaker}} "
                             "(a speaker not seen in training is standardised with the statistics of its clips given here)")
        unknown = sorted(set().union(*(set(s) for s in branch_sequences.values())) - set(speakers))
        if unknown:
            raise ValueError(f"{self.path}: member {self.name!r} standardises features per speaker; no speaker given for {unknown[:5]}"
                             + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""))
        standardized = {}
        for branch, sequences in branch_sequences.items():
            known = self.speaker_statistics.get(branch, {})
            new = {c: s for c, s in sequences.items() if speakers[c] not in known}
            chosen = {**speaker_statistics(new, speakers), **known, **(statistics or {}).get(branch, {})}
            standardized[branch] = apply_speaker_statistics(sequences, speakers, chosen)
        return standardized

    def _clips(self, branch_sequences: dict[str, Sequences], speakers, durations) -> pd.DataFrame:
        clip_ids = sorted(set().union(*(set(s) for s in branch_sequences.values())))
        clips = pd.DataFrame({"clip_id": clip_ids, "fold": 0})
        if speakers is not None:
            clips["speaker"] = [speakers[c] for c in clip_ids]
        # The continuous task's grid spans the clip: without its duration, up to its last frame.
        clips["duration_s"] = [float(durations[c]) if durations is not None else _last_time(c, branch_sequences) for c in clip_ids]
        return clips

    def predict(self, features: dict[str, Sequences], speakers: dict[str, str] | None = None,
                durations: dict[str, float] | None = None, fold: int | None = None,
                statistics: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] | None = None) -> pd.DataFrame:
        """Scores of the clips in ``features`` ({store name: {clip_id: (frames, mask,
        timestamps)}}; a clip may miss some stores). ``fold`` None: every fold model,
        combined as for the held-out test split; a fold number: that fold's model alone.
        ``speakers``: clip -> speaker, needed when the member standardises per speaker.
        ``durations``: clip -> seconds, the continuous task's grid (default: to the last frame).
        ``statistics``: branch -> speaker -> (mean, std) used before the stored ones (e.g. a
        speaker's statistics from more clips than those predicted here).
        Returns clip_id (time_s for the continuous task) and the task's score columns."""
        if not self.folds:
            raise ValueError(f"{self.path}: member {self.name!r} was trained on no clip (it had no features) and predicts nothing")
        branch_sequences = self._branch_sequences(features, speakers, statistics)
        clips = self._clips(branch_sequences, speakers, durations)
        dims = {b.name: b.input_dim for b in self.spec.branches}
        data = self.task.prepare(branch_sequences, clips, None, with_targets=False, dims=dims)

        def fold_data(number: int):
            """What fold ``number``'s model reads: under train-speakers, the clips standardised with
            that fold's training speakers' statistics."""
            if self.speaker_standardization != "train-speakers":
                return data
            from pipeline.normalization import apply_statistics

            by_branch = self.fold_statistics or {}
            standardized = {b: apply_statistics(s, by_branch.get(b, {}).get(number)) for b, s in branch_sequences.items()}
            return self.task.prepare(standardized, clips, None, with_targets=False, dims=dims)

        rows = np.arange(len(clips))

        def fold_outputs(number: int, ensemble: list) -> list[np.ndarray]:
            """Fold ``number``'s output per row: its seed models' outputs merged as in training."""
            given = fold_data(number)
            outputs = [self.fold_models.predict(model, given, rows) for model in ensemble]
            return [self.task.merge_seeds([o[r] for o in outputs]) for r in rows]

        if fold is not None:
            if fold not in self.folds:
                raise KeyError(f"{self.path}: no fold {fold}; folds: {self.folds}")
            frame = self.task.score_frame(data, rows, fold, fold_outputs(fold, self.models[self.folds.index(fold)]))
        else:
            outputs = [fold_outputs(number, ensemble) for number, ensemble in zip(self.folds, self.models)]
            frame = self.task.score_frame(data, rows, -1, [self.task.merge_folds([o[r] for o in outputs]) for r in rows])
        keys = [c for c in ("clip_id", "time_s") if c in frame]
        return self.task.finish(frame[keys + self.task.score_columns()])


def load_member(path: str | Path) -> TrainedMember:
    """Rebuild a trained member from its checkpoint alone."""
    from pipeline.training import fold_models

    path = Path(path)
    checkpoint = read_checkpoint(path)
    member = checkpoint["member"]
    try:
        task = task_from_description(member["task"])
        spec = ModelSpec.from_description(member["model"])
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{path}: cannot rebuild the member: {error}") from None
    from pipeline.config import speaker_standardization_name

    statistics = {
        branch: {speaker: (s["mean"].numpy(), s["std"].numpy()) for speaker, s in by_speaker.items()}
        for branch, by_speaker in checkpoint["speaker_statistics"].items()
    }
    fold_statistics = {
        branch: {int(number): (s["mean"].numpy(), s["std"].numpy()) for number, s in by_fold.items()}
        for branch, by_fold in checkpoint.get("fold_statistics", {}).items()
    }
    train = member["train"]
    try:  # a checkpoint written before the protocols had names holds true / false
        protocol = speaker_standardization_name(train.get("speaker_standardization", "none"))
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None
    folds = [int(f["fold"]) for f in checkpoint["folds"]]
    models = fold_models(spec, None, task, member.get("pooled_statistics") or None)
    states = [[s if not spec.pooled else {"head": _arrays(s["head"])} for s in ensemble] for ensemble in fold_states(checkpoint)]
    return TrainedMember(
        path, member["name"], member["kind"], task, spec, member["stores"], folds, statistics,
        protocol, member, models, [[models.restore(s) for s in ensemble] for ensemble in states],
        feature_normalization=train.get("feature_normalization", "none"), fold_statistics=fold_statistics,
    )
