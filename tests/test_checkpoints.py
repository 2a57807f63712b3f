"""Checkpoints rebuild every trained member without params.yaml: each head type, each
cross-modal fusion and each late-fusion method is trained on tiny generated features, saved,
loaded in a fresh process from its checkpoint alone, and re-predicts every fold's held-out
clips (and the test split, merged over the folds) to within 1e-6 of the saved scores; seed
ensembles (``seeds: 2``: each fold the mean of two models) too."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import Params, from_dict
from pipeline.fusion.late import LATE_FUSIONS, late_fusion
from pipeline.members import train_branch, train_fusion
from pipeline.store import FeatureStore
from pipeline.tasks import task_from_params

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["calm", "angry"]
SPEAKERS = ["s0", "s1", "s2", "s3"]  # s3 is the held-out test split
FAST = {"epochs": 2, "patience": 2, "batch_size": 4, "workers": 1, "validation_fraction": 0.25}
HEADS = {
    "stats": ("seq", {"type": "stats", "options": {"hidden": 8}}),
    "attention": ("seq", {"type": "attention", "options": {"hidden": 8}}),
    "blstm": ("seq", {"type": "blstm", "options": {"hidden": 4}}),
    "tcn": ("seq", {"type": "tcn", "options": {"channels": 8, "levels": 2, "pool": 2}}),
    "vgg_blstm": ("seq", {"type": "vgg_blstm", "options": {"segment": 8, "hop": 4, "channels": [4], "hidden": 4}}),
    "finetune_mini_xception": ("pixels", {"type": "finetune_mini_xception", "options": {"hidden": 8, "unfreeze_from_epoch": 1, "trainable_blocks": 1}}),
    "svm": ("seq", {"type": "svm", "options": {"C": [0.01, 1.0]}}),
    "logreg": ("seq", {"type": "logreg", "options": {"C": [0.1, 1.0]}}),
    "lightgbm": ("seq", {"type": "lightgbm", "options": {"max_rounds": 20, "early_stopping_rounds": 5, "min_child_samples": 2}}),
}
FUSIONS = ["concat", "fbp", "cross_attention", "leader_follower"]
ENSEMBLES = ["attention", "lightgbm"]  # also trained as seed ensembles (seeds: 2), as <name>_seeds


def write_store(root: Path, name: str, clips: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    store = FeatureStore(root / name)
    identity = {"extractor": f"test_{name}", "config": {"dims": next(iter(clips.values()))[0].shape[1]}, "weights_sha256": ""}
    for clip_id, (data, mask, timestamps) in clips.items():
        store.write(clip_id, {"data": data, "mask": mask.astype(np.uint8), "timestamps": timestamps},
                    {"config_hash": "test", "identity": identity, "extractor": identity["extractor"]})
    store.write_index(list(clips))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """Features, a manifest and per-frame annotations of 4 speakers x 4 clips; every member
    trained and saved; then one fresh process re-predicting everything from the checkpoints."""
    root = tmp_path_factory.mktemp("checkpoints")
    rng = np.random.default_rng(0)
    rows, seq, seq2, pixels = [], {}, {}, {}
    for s, speaker in enumerate(SPEAKERS):
        for i in range(4):
            clip_id, label = f"{speaker}_{i}", i % 2
            length = 12 + 2 * i
            times = np.arange(length) * 0.1
            signal = np.sin(times * (1 + i)) + label
            frames = rng.normal(0, 0.5, (length, 6)).astype(np.float32) + 0.3 * s
            frames[:, 0] += 1.5 * label
            frames[:, 1] = signal
            mask = np.ones(length, bool)
            mask[3] = i != 2  # a frame without information
            seq[clip_id] = (frames, mask, times)
            if i != 3:  # the second modality misses some clips
                seq2[clip_id] = (frames[::2, :3] + rng.normal(0, 0.3, (len(frames[::2]), 3)).astype(np.float32), mask[::2], times[::2])
            crops = np.clip(rng.normal(0.4 * label - 0.2, 0.3, (3, 4096)), -1, 1).astype(np.float32)
            pixels[clip_id] = (crops, np.ones(3, bool), np.arange(3) * 0.5)
            annotation = root / "va" / f"{clip_id}.csv"
            annotation.parent.mkdir(exist_ok=True)
            pd.DataFrame({"time_s": times, "valence": signal, "arousal": -signal}).to_csv(annotation, index=False)
            rows.append({"clip_id": clip_id, "label": CLASSES[label], "speaker": speaker, "fold": s if s < 3 else -1,
                         "duration_s": float(times[-1]), "targets": str(annotation), "fps": 0.0})
    manifest = pd.DataFrame(rows)
    manifest.to_parquet(root / "manifest.parquet", index=False)
    features = root / "features"
    for name, clips in (("seq", seq), ("seq2", seq2), ("pixels", pixels)):
        write_store(features, name, clips)

    extractors = {name: {"type": "test", "input": "audio"} for name in ("seq", "seq2", "pixels")}
    classification = {
        "data": {"labels": CLASSES}, "extractors": extractors, "train": FAST,
        "branches": {name: {"features": store, "head": head} for name, (store, head) in HEADS.items()}
                    | {"other": {"features": "seq2", "head": {"type": "attention", "options": {"hidden": 8}}},
                       "svm_standardised": {"features": "seq", "head": {"type": "svm", "options": {"C": [0.1]}}}}
                    | {f"{name}_seeds": {"features": "seq", "head": HEADS[name][1], "seeds": 2} for name in ENSEMBLES},
        "cross_modal": {"branches": ["attention", "other"]},
    }
    continuous = {
        "task": "continuous", "continuous": {"rate": 5.0, "window": 6, "hop": 3}, "data": {"labels": []}, "extractors": extractors,
        "train": {**FAST, "speaker_standardization": True},
        "branches": {"tcn": {"features": "seq", "head": {"type": "tcn", "options": {"channels": 8, "levels": 2}}},
                     "other": {"features": "seq2", "head": {"type": "blstm", "options": {"hidden": 4}}},
                     "tcn_seeds": {"features": "seq", "head": {"type": "tcn", "options": {"channels": 8, "levels": 2}}, "seeds": 2}},
        "cross_modal": {"branches": ["tcn", "other"]},
    }
    members: dict[str, dict[str, str]] = {"classification": {}, "continuous": {}}

    def save(run, name: str, kind: str) -> None:
        run.save(root / "models" / kind / name)
        members[kind][name] = f"models/{kind}/{name}/model.pt"

    params = from_dict(Params, classification, "")
    for name in params.branches:
        if name != "svm_standardised":
            save(train_branch(params, name, features, manifest), name, "classification")
    standardised = from_dict(Params, {**classification, "train": {**FAST, "speaker_standardization": True}}, "")
    save(train_branch(standardised, "svm_standardised", features, manifest), "svm_standardised", "classification")
    for fusion in FUSIONS:
        save(train_fusion(from_dict(Params, {**classification, "fusion": fusion}, ""), features, manifest), f"fusion_{fusion}", "classification")
    ensemble = {**classification, "fusion": "concat", "cross_modal": {"branches": ["attention", "other"], "seeds": 2}}
    save(train_fusion(from_dict(Params, ensemble, ""), features, manifest), "fusion_concat_seeds", "classification")
    params_continuous = from_dict(Params, continuous, "")
    for name in params_continuous.branches:
        save(train_branch(params_continuous, name, features, manifest), name, "continuous")
    save(train_fusion(from_dict(Params, {**continuous, "fusion": "leader_follower"}, ""), features, manifest), "fusion", "continuous")
    ensemble = {**continuous, "fusion": "leader_follower", "cross_modal": {"branches": ["tcn", "other"], "seeds": 2}}
    save(train_fusion(from_dict(Params, ensemble, ""), features, manifest), "fusion_seeds", "continuous")

    for kind, fused_members, task_params in (("classification", ["attention", "svm", "fusion_concat", "lightgbm"], params),
                                             ("continuous", ["tcn", "other", "fusion"], params_continuous)):
        task = task_from_params(task_params)
        for method in LATE_FUSIONS.names():
            if LATE_FUSIONS.get(method).class_scores and not task.class_scores:
                continue
            scores = {m: pd.read_parquet(root / "models" / kind / m / "scores.parquet") for m in fused_members}
            result = late_fusion(scores, task, method, 0.25, {m: members[kind][m] for m in fused_members})
            result.save(root / "late" / kind / method)
    (root / "members.json").write_text(json.dumps(members))
    assert not (root / "params.yaml").exists()
    subprocess.run([sys.executable, "-c", REPREDICT], cwd=root, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    return root


# Runs in a fresh interpreter with nothing but the checkpoints, the feature stores and the
# clips' speakers, folds and durations.
REPREDICT = """
import json
from pathlib import Path
import pandas as pd
import torch
torch.set_num_threads(1)  # tiny models: threads only add synchronisation (the folds train with one too)
from pipeline.checkpoint import load_member
from pipeline.fusion.late import load_late_fusion

manifest = pd.read_parquet("manifest.parquet")
speakers = dict(zip(manifest.clip_id, manifest.speaker))
durations = dict(zip(manifest.clip_id, manifest.duration_s))
out = Path("repredicted")
predicted = {}
for kind, members in json.loads(Path("members.json").read_text()).items():
    for name, path in members.items():
        member = load_member(path)
        features = member.read_features("features")
        frames = []
        for fold in [*member.folds, -1]:
            clips = set(manifest.clip_id[manifest.fold == fold])
            given = {store: {c: s for c, s in sequences.items() if c in clips} for store, sequences in features.items()}
            frame = member.predict(given, speakers, durations, fold=None if fold < 0 else fold)
            frames.append(frame.assign(fold=fold))
        predicted[(kind, name)] = pd.concat(frames, ignore_index=True)
        (out / kind).mkdir(parents=True, exist_ok=True)
        predicted[(kind, name)].to_parquet(out / kind / f"{name}.parquet", index=False)
for kind_dir in Path("late").iterdir():
    for method_dir in kind_dir.iterdir():
        fusion = load_late_fusion(method_dir / "checkpoint.json")
        names = {path: name for name, path in json.loads(Path("members.json").read_text())[kind_dir.name].items()}
        frames = []
        for fold in sorted(fusion.folds):
            scores = {name: predicted[(kind_dir.name, names[path])] for name, path in fusion.member_checkpoints.items()}
            scores = {name: frame[frame.fold == fold].drop(columns="fold") for name, frame in scores.items()}
            frames.append(fusion.combine(scores, fold=fold).assign(fold=fold))
        pd.concat(frames, ignore_index=True).to_parquet(out / kind_dir.name / f"late_{method_dir.name}.parquet", index=False)
"""


def compare(saved: pd.DataFrame, repredicted: pd.DataFrame, score_columns: list[str]) -> None:
    keys = ["clip_id", "time_s"] if "time_s" in saved else ["clip_id"]
    merged = saved.merge(repredicted, on=keys, suffixes=("", "_again"), how="outer", validate="one_to_one", indicator=True)
    assert (merged["_merge"] == "both").all(), merged.loc[merged["_merge"] != "both", keys]
    assert (merged["fold"] == merged["fold_again"]).all()
    for column in score_columns:
        np.testing.assert_allclose(merged[f"{column}_again"], merged[column], atol=1e-6, rtol=0, err_msg=column)


MEMBERS = [("classification", name) for name in [*HEADS, "other", "svm_standardised", *(f"fusion_{f}" for f in FUSIONS)]]
MEMBERS += [("classification", name) for name in [*(f"{e}_seeds" for e in ENSEMBLES), "fusion_concat_seeds"]]
MEMBERS += [("continuous", name) for name in ("tcn", "other", "fusion", "tcn_seeds", "fusion_seeds")]


@pytest.mark.parametrize("kind, name", MEMBERS)
def test_member_rebuilt_from_its_checkpoint_repredicts_its_scores(project, kind, name):
    saved = pd.read_parquet(project / "models" / kind / name / "scores.parquet")
    columns = [c for c in saved if c.startswith(("p_", "pred_"))]
    assert len(saved) and saved["fold"].min() == -1 and set(saved["fold"]) == {-1, 0, 1, 2}
    compare(saved, pd.read_parquet(project / "repredicted" / kind / f"{name}.parquet"), columns)


@pytest.mark.parametrize("kind, method", [("classification", m) for m in LATE_FUSIONS.names()] + [("continuous", "weighted"), ("continuous", "mean")])
def test_late_fusion_rebuilt_from_its_checkpoint_refuses_the_repredicted_scores(project, kind, method):
    saved = pd.read_parquet(project / "late" / kind / method / "scores.parquet")
    columns = [c for c in saved if c.startswith(("p_", "pred_"))]
    compare(saved, pd.read_parquet(project / "repredicted" / kind / f"late_{method}.parquet"), columns)


def test_checkpoint_describes_the_member_and_holds_plain_values_only(project):
    import torch

    path = project / "models" / "classification" / "fusion_cross_attention" / "model.pt"
    checkpoint = torch.load(path, weights_only=True)
    member = checkpoint["member"]
    assert member["task"] == {"type": "classification", "classes": CLASSES}
    assert [b["head"] for b in member["model"]["branches"]] == ["attention", "attention"]
    assert member["model"]["fusion"] == "cross_attention" and member["model"]["fusion_config"]["heads"] == 4
    assert member["stores"]["other"]["features"] == "seq2"
    assert member["stores"]["other"]["identities"][0]["identity"]["extractor"] == "test_seq2"
    assert [f["fold"] for f in checkpoint["folds"]] == [0, 1, 2]
    json.dumps(member)  # plain values only
    # A classical head is arrays and text: no pickled estimator anywhere in the file.
    svm = torch.load(project / "models" / "classification" / "svm" / "model.pt", weights_only=True)
    assert set(svm["folds"][0]["states"][0]["head"]) >= {"weights", "intercept", "scaler_mean", "calibration_coef"}
    lightgbm = torch.load(project / "models" / "classification" / "lightgbm" / "model.pt", weights_only=True)
    assert lightgbm["folds"][0]["states"][0]["head"]["model"].startswith("tree")
    standardised = torch.load(project / "models" / "classification" / "svm_standardised" / "model.pt", weights_only=True)
    assert set(standardised["speaker_statistics"]["svm_standardised"]) == set(SPEAKERS)


def test_a_checkpoint_holding_code_is_refused(tmp_path):
    import torch

    from pipeline.checkpoint import CheckpointError, load_member

    path = tmp_path / "model.pt"
    torch.save({"format": "aver.member", "version": 1, "member": pd.Timestamp("2024-01-01")}, path)
    with pytest.raises(CheckpointError, match="holds pickled code"):
        load_member(path)


def test_a_clip_is_predicted_alone_as_among_others_even_without_one_modality(project):
    from pipeline.checkpoint import load_member

    member = load_member(project / "models" / "classification" / "fusion_leader_follower" / "model.pt")
    saved = pd.read_parquet(project / "models" / "classification" / "fusion_leader_follower" / "scores.parquet").set_index("clip_id")
    features = member.read_features(project / "features", clip_ids=["s1_3"])  # s1_3 has no seq2 features
    assert features["seq2"] == {} and list(features["seq"]) == ["s1_3"]
    alone = member.predict(features, fold=1).set_index("clip_id")
    np.testing.assert_allclose(alone.loc["s1_3"], saved.loc["s1_3", ["p_calm", "p_angry"]], atol=1e-6)


def test_a_member_without_features_saves_a_checkpoint_that_predicts_nothing(project, tmp_path):
    from pipeline.checkpoint import load_member

    FeatureStore(project / "features" / "none").write_index([])  # e.g. faces of an audio-only corpus
    raw = {"data": {"labels": CLASSES}, "extractors": {"none": {"type": "test", "input": "faces"}}, "train": FAST,
           "branches": {"face": {"features": "none", "head": {"type": "attention"}}}}
    params = from_dict(Params, raw, "")
    run = train_branch(params, "face", project / "features", pd.read_parquet(project / "manifest.parquet"))
    assert run.result.scores.empty and len(run.missing) == 16
    run.save(tmp_path / "face")
    member = load_member(tmp_path / "face" / "model.pt")
    assert member.folds == [] and member.features == ["none"]
    with pytest.raises(ValueError, match="trained on no clip"):
        member.predict({"none": {}})
    other = pd.read_parquet(project / "models" / "classification" / "attention" / "scores.parquet")
    fused = late_fusion({"face": pd.read_parquet(tmp_path / "face" / "scores.parquet"), "attention": other},
                        task_from_params(params), "weighted", 0.25)
    np.testing.assert_allclose(fused.scores[["p_calm", "p_angry"]], other[["p_calm", "p_angry"]], atol=1e-6)


@pytest.mark.parametrize("kind, name", [("classification", "attention_seeds"), ("classification", "lightgbm_seeds"),
                                        ("classification", "fusion_concat_seeds"), ("continuous", "tcn_seeds")])
def test_a_seed_ensemble_keeps_every_seeds_model_and_predicts_with_their_mean(project, kind, name):
    import torch

    from pipeline.checkpoint import load_member

    directory = project / "models" / kind / name
    checkpoint = torch.load(directory / "model.pt", weights_only=True)
    assert checkpoint["member"]["seeds"] == 2 and json.loads((directory / "meta.json").read_text())["seeds"] == 2
    assert [f["fold"] for f in checkpoint["folds"]] == [0, 1, 2] and all(len(f["states"]) == 2 for f in checkpoint["folds"])
    seeds = [seed for f in checkpoint["folds"] for seed in f["seeds"]]
    assert len(set(seeds)) == 6 and checkpoint["folds"][1]["seeds"][0] == 1  # fold 1, seed 0: train.seed * 1000 + 1
    curves = pd.read_csv(directory / "curves.csv")
    assert curves.empty or set(map(tuple, curves[["fold", "seed"]].drop_duplicates().to_numpy())) == {(f, s) for f in range(3) for s in range(2)}
    # Fold 1's scores are the mean of its two models, each of which scores differently alone.
    member = load_member(directory / "model.pt")
    assert member.seeds == 2
    manifest = pd.read_parquet(project / "manifest.parquet")
    speakers, durations = dict(zip(manifest.clip_id, manifest.speaker)), dict(zip(manifest.clip_id, manifest.duration_s))
    fold_clips = manifest.clip_id[manifest.fold == 1].tolist()
    features = member.read_features(project / "features", fold_clips)
    columns = member.task.score_columns()
    together = member.predict(features, speakers, durations, fold=1)[columns].to_numpy()
    ensemble = member.models
    alone = []
    for index in range(2):
        member.models = [[models[index]] for models in ensemble]
        alone.append(member.predict(features, speakers, durations, fold=1)[columns].to_numpy())
    member.models = ensemble
    np.testing.assert_allclose(together, np.mean(alone, axis=0), rtol=0, atol=1e-6)
    assert not np.allclose(alone[0], alone[1], atol=1e-6)
    saved = pd.read_parquet(directory / "scores.parquet")
    saved = saved[saved.fold == 1]
    keys = ["clip_id", "time_s"] if "time_s" in saved else ["clip_id"]
    np.testing.assert_allclose(saved.sort_values(keys)[columns].to_numpy(), together, rtol=0, atol=1e-6)


def test_a_version_1_checkpoint_of_one_model_per_fold_is_still_read(project, tmp_path):
    import torch

    from pipeline.checkpoint import load_member, save_checkpoint

    for name in ("attention", "svm"):
        checkpoint = torch.load(project / "models" / "classification" / name / "model.pt", weights_only=True)
        assert checkpoint["version"] == 2 and checkpoint["member"]["seeds"] == 1
        checkpoint["member"].pop("seeds")
        old = {**checkpoint, "version": 1, "folds": [{"fold": f["fold"], "state": f["states"][0]} for f in checkpoint["folds"]]}
        save_checkpoint(tmp_path / name / "model.pt", old)
        member, again = load_member(tmp_path / name / "model.pt"), load_member(project / "models" / "classification" / name / "model.pt")
        assert member.seeds == 1 and member.folds == again.folds == [0, 1, 2]
        features = member.read_features(project / "features")
        pd.testing.assert_frame_equal(member.predict(features, fold=2), again.predict(features, fold=2))
        pd.testing.assert_frame_equal(member.predict(features), again.predict(features))
