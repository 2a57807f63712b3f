"""Training the members of an experiment from params: each branch (one head on one feature
store) and the cross-modal fusion. :func:`train_branch` and :func:`train_fusion` load the
clips and features, cross-validate, record the clips left out with their reasons, and
return a :class:`MemberRun` whose ``save`` writes the member's folder
(``scores.parquet``, ``curves.csv``, ``missing.csv``, ``meta.json``, the ``model.pt``
checkpoint of :mod:`pipeline.checkpoint`)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.checkpoint import member_checkpoint, save_checkpoint
from pipeline.config import Params, ParamsError
from pipeline.datasets.manifest import read_manifest
from pipeline.fusion.cross_modal import FUSIONS
from pipeline.models import ModelSpec, branch_spec
from pipeline.results import missing_clips
from pipeline.store import FAILURE_COLUMNS, FeatureStore, augmented_id, augmented_store
from pipeline.tasks import Task, TrainingAugmentation, task_from_params
from pipeline.training import CrossValidationResult, cross_validate, empty_result, feature_dim, load_sequences, read_features


@dataclass
class MemberRun:
    name: str
    kind: str                      # "branch" or "fusion"
    task: Task
    spec: ModelSpec
    result: CrossValidationResult
    missing: pd.DataFrame
    meta: dict[str, Any]
    stores: dict[str, dict] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    message: str = ""

    def checkpoint(self) -> dict[str, Any]:
        member = {"name": self.name, "kind": self.kind, "task": self.task.describe(), "stores": self.stores, "train": self.train}
        return member_checkpoint(member, self.spec, self.result)

    def save(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(out_dir / "model.pt", self.checkpoint())
        self.result.scores.to_parquet(out_dir / "scores.parquet", index=False)
        self.result.curves.to_csv(out_dir / "curves.csv", index=False)
        self.missing.to_csv(out_dir / "missing.csv", index=False)
        (out_dir / "meta.json").write_text(json.dumps(self.meta, indent=2, default=str))


def _cross_validate(spec: ModelSpec, sequences: dict, clips: pd.DataFrame, task: Task, params: Params, label: str,
                    seeds: int = 1, augmentation: TrainingAugmentation | None = None) -> CrossValidationResult:
    return (cross_validate(spec, sequences, clips, task, params.train, label, seeds, augmentation)
            if sequences else empty_result(task))


def training_augmentation(params: Params, branches: list[str], features: Path, clip_ids: list[str]) -> TrainingAugmentation:
    """The augmented copies of ``clip_ids`` the branches train on (``branches.<name>.augment``,
    read from the copies' stores under their features store) and their SpecAugment masks."""
    augmentation = TrainingAugmentation()
    for name in branches:
        branch = params.branches[name]
        if branch.spec_augment.active:
            augmentation.masks[name] = branch.spec_augment
        for augmentation_name in branch.augment:
            store = augmented_store(features / branch.features, augmentation_name)
            if not store.index_path.exists():
                raise FileNotFoundError(f"{store.root}: no copies of augmentation {augmentation_name!r} (branches.{name}.augment); "
                                        f"run `dvc repro extract@{branch.features}`")
            originals = {augmented_id(clip_id, augmentation_name): clip_id for clip_id in clip_ids}
            copies = load_sequences(store, list(originals))
            augmentation.copies.setdefault(augmentation_name, {})[name] = {originals[c]: s for c, s in copies.items()}
    return augmentation


def train_branch(params: Params, name: str, features: Path = Path("features"), manifest: pd.DataFrame | None = None) -> MemberRun:
    """Cross-validate branch ``name``'s head on its feature store."""
    if name not in params.branches:
        raise ParamsError(f"train: no branch {name!r} in params.yaml; defined: {sorted(params.branches)}")
    branch = params.branches[name]
    task = task_from_params(params)
    manifest, unusable = task.usable_clips(read_manifest() if manifest is None else manifest)
    store = FeatureStore(features / branch.features)
    sequences, identities = read_features(store, manifest["clip_id"].tolist())
    clips = manifest[manifest["clip_id"].isin(sequences)]
    spec = branch_spec(name, branch.head.type, branch.head.options, feature_dim(sequences))
    model = ModelSpec([spec], task.output_size())
    note = ""
    if not sequences:
        note = f"train@{name}: no clip has {branch.features} features; the branch scores nothing\n"  # e.g. faces on audio only
    augmentation = training_augmentation(params, [name], features, _trained(clips))
    result = _cross_validate(model, {name: sequences}, clips, task, params, f"train@{name}", branch.seeds, augmentation)
    input_store = FeatureStore(features / params.extractors[branch.features].input)
    missing = pd.concat([missing_clips(manifest, set(sequences), [input_store, store], f"train@{name}"),
                         pd.DataFrame(unusable, columns=FAILURE_COLUMNS)], ignore_index=True)
    meta = {"branch": name, "features": branch.features, "task": task.describe(), "classes": params.data.labels,
            "head": branch.head.type, "head_config": asdict(spec.head_config), "input_dim": spec.input_dim,
            "seeds": branch.seeds, "augment": list(branch.augment), "augmented_copies": augmentation.count(),
            "spec_augment": asdict(branch.spec_augment)}
    copies = f", {augmentation.count()} augmented copies ({', '.join(branch.augment)}) for training" if branch.augment else ""
    message = (f"{note}train@{name}: {len(clips)} clips{copies}, {(~missing['clip_id'].isin(sequences)).sum()} missing, "
               f"out-of-fold {task.summary(_labelled(result.scores))}{_ensemble(branch.seeds)}")
    return MemberRun(name, "branch", task, model, result, missing, meta, {name: {"features": branch.features, "identities": identities}},
                     asdict(params.train), message)


def train_fusion(params: Params, features: Path = Path("features"), manifest: pd.DataFrame | None = None) -> MemberRun:
    """Cross-validate the cross-modal model named by ``fusion`` on the branches of
    ``cross_modal.branches`` that have features; with one left, its head alone is the model."""
    task = task_from_params(params)
    manifest, _ = task.usable_clips(read_manifest() if manifest is None else manifest)
    fusion_config = FUSIONS.config(params.fusion, params.cross_modal.options.get(params.fusion, {}), f"cross_modal.options.{params.fusion}")
    sequences, specs, stores, notes = {}, [], {}, []
    for name in params.cross_modal.branches:
        branch = params.branches[name]
        branch_sequences, identities = read_features(FeatureStore(features / branch.features), manifest["clip_id"].tolist())
        if not branch_sequences:
            notes.append(f"fusion: branch {name!r} has no features in this dataset and is left out\n")
            continue
        sequences[name] = branch_sequences
        specs.append(branch_spec(name, branch.head.type, branch.head.options, feature_dim(branch_sequences)))
        stores[name] = {"features": branch.features, "identities": identities}
    covered = set().union(*(set(s) for s in sequences.values()))
    clips = manifest[manifest["clip_id"].isin(covered)]
    partial = {name: sorted(covered - set(s)) for name, s in sequences.items()}
    fusion = params.fusion if len(specs) > 1 else None
    model = ModelSpec(specs, task.output_size(), fusion, fusion_config if fusion else None)
    augmentation = training_augmentation(params, list(sequences), features, _trained(clips))
    result = _cross_validate(model, sequences, clips, task, params, "fusion", params.cross_modal.seeds, augmentation)
    missing = pd.DataFrame(
        [{"clip_id": c, "stage": "fusion", "reason": "no features in any fused branch"} for c in manifest["clip_id"] if c not in covered],
        columns=FAILURE_COLUMNS,
    )
    meta = {"fusion": fusion, "fusion_config": asdict(fusion_config), "branches": list(sequences), "task": task.describe(),
            "classes": params.data.labels, "clips_missing_a_modality": {name: len(ids) for name, ids in partial.items()},
            "heads": {s.name: {"type": s.head, "config": asdict(s.head_config), "input_dim": s.input_dim} for s in specs},
            "seeds": params.cross_modal.seeds}
    message = (f"{''.join(notes)}fusion ({params.fusion}): {len(clips)} clips ({meta['clips_missing_a_modality']} missing a modality), "
               f"out-of-fold {task.summary(_labelled(result.scores))}{_ensemble(params.cross_modal.seeds)}")
    return MemberRun("fusion", "fusion", task, model, result, missing, meta, stores, asdict(params.train), message)


def _ensemble(seeds: int) -> str:
    return f" (each fold the mean of {seeds} seeds)" if seeds > 1 else ""


def _trained(clips: pd.DataFrame) -> list[str]:
    """The clips some fold trains on (not the test split's): the only ones whose copies are read."""
    return clips.loc[clips["fold"] >= 0, "clip_id"].tolist()


def _labelled(scores: pd.DataFrame) -> pd.DataFrame:
    return scores[scores["fold"] >= 0] if len(scores) else scores
