"""Seed ensembles (``branches.<name>.seeds``, ``cross_modal.seeds``): each fold trains N models
whose outputs are averaged. An ensemble must be exactly the mean of the single models its seeds
give, one seed must be today's model, and params must refuse a count or a head that makes no
ensemble. (The checkpoint round trip of ensembles is in tests/test_checkpoints.py.)"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.config import ParamsError, load_params
from pipeline.heads import HEADS
from pipeline.models import BranchSpec, ModelSpec, branch_spec
from pipeline.tasks.classification import ClassificationTask
from pipeline.tasks.continuous import ContinuousTask
from pipeline.training import ENSEMBLE_SEED_STRIDE, cross_validate

from tests.test_training import CLASSES, PARAMS, TASK, toy_data

REPO = Path(__file__).resolve().parents[1]
PROBABILITIES = [f"p_{c}" for c in CLASSES]
FAST = replace(PARAMS, epochs=6, patience=6)


def toy_with_test_split():
    """4 speakers x 12 clips; speaker s3 is the held-out test split (fold -1)."""
    sequences, clips = toy_data()
    clips.loc[clips["fold"] == 3, "fold"] = -1
    return sequences, clips


def stats_spec(dropout: float = 0.2) -> ModelSpec:
    return ModelSpec([BranchSpec("x", 3, "stats", HEADS.get("stats").Config(hidden=8, dropout=dropout))], 2)


def lightgbm_spec() -> ModelSpec:
    config = HEADS.get("lightgbm").Config(max_rounds=20, early_stopping_rounds=5, min_child_samples=2, feature_fraction=0.5)
    return ModelSpec([BranchSpec("x", 3, "lightgbm", config)], 2)


def ensemble_and_singles(spec: ModelSpec, params, seeds: int = 2):
    sequences, clips = toy_with_test_split()
    ensemble = cross_validate(spec, {"x": sequences}, clips, TASK, params, seeds=seeds)
    # One process each (the workers change no score): the ensemble's jobs are spread over params.workers.
    singles = [cross_validate(spec, {"x": sequences}, clips, TASK, replace(params, seed=params.seed + k * ENSEMBLE_SEED_STRIDE, workers=1))
               for k in range(seeds)]
    return ensemble, singles


@pytest.mark.parametrize("head, protocol, workers", [("stats", "none", 2), ("stats", "train-speakers", 1), ("lightgbm", "none", 1)])
def test_an_ensemble_is_the_mean_of_the_single_models_of_its_seeds(head, protocol, workers):
    params = replace(FAST, seed=3, speaker_standardization=protocol, workers=workers)
    ensemble, singles = ensemble_and_singles(stats_spec() if head == "stats" else lightgbm_spec(), params)
    scores = ensemble.scores
    for single in singles:
        assert list(single.scores["clip_id"]) == list(scores["clip_id"]) and list(single.scores["fold"]) == list(scores["fold"])
    # Out of fold and on the test split (itself the mean over the folds): the mean of the two runs.
    mean = np.mean([single.scores[PROBABILITIES].to_numpy() for single in singles], axis=0)
    np.testing.assert_allclose(scores[PROBABILITIES].to_numpy(), mean, rtol=0, atol=1e-6)
    assert (scores["fold"] == -1).sum() == 12 and set(scores["fold"]) == {-1, 0, 1, 2}
    # Two different models per fold: the seeds differ and so do the single runs' scores.
    assert not np.allclose(singles[0].scores[PROBABILITIES], singles[1].scores[PROBABILITIES], atol=1e-4)
    assert ensemble.folds == [0, 0, 1, 1, 2, 2] and len(ensemble.fold_states) == 6
    assert ensemble.seeds == [single.seeds[f] for f in range(3) for single in singles]
    assert len(set(ensemble.seeds)) == 6


def test_one_seed_is_the_single_model_seeded_as_before():
    sequences, clips = toy_with_test_split()
    default = cross_validate(stats_spec(), {"x": sequences}, clips, TASK, replace(FAST, seed=2))
    one = cross_validate(stats_spec(), {"x": sequences}, clips, TASK, replace(FAST, seed=2), seeds=1)
    pd.testing.assert_frame_equal(default.scores, one.scores, check_exact=True)
    assert default.seeds == one.seeds == [2 * 1000 + fold for fold in range(3)]  # train.seed * 1000 + fold, as before ensembles
    assert default.folds == [0, 1, 2] and set(default.curves["seed"]) == {0}


def test_continuous_ensemble_averages_each_step_of_the_fold_models(tmp_path):
    from tests.continuous.test_continuous import synthetic_clips

    clips, sequences = synthetic_clips(tmp_path)
    spec = ModelSpec([branch_spec("face", "tcn", {"channels": 8, "levels": 2, "pool": 1, "dropout": 0.2}, 3)], 2)
    params = replace(FAST, epochs=4, validation_fraction=0.2)
    task = ContinuousTask(ContinuousTask.Config(["valence", "arousal"], rate=5.0, window=10, hop=5))
    ensemble = cross_validate(spec, {"face": sequences}, clips, task, params, seeds=2)
    singles = [cross_validate(spec, {"face": sequences}, clips, task, replace(params, seed=k * ENSEMBLE_SEED_STRIDE)) for k in range(2)]
    columns = ["pred_valence", "pred_arousal"]
    held_out = ensemble.scores["fold"] >= 0
    assert held_out.sum() == 9 * 30 and (~held_out).sum() == 3 * 30
    mean = np.mean([single.scores.loc[held_out, columns].to_numpy() for single in singles], axis=0)
    np.testing.assert_allclose(ensemble.scores.loc[held_out, columns].to_numpy(), mean, rtol=0, atol=1e-6)


def test_curves_progress_and_plot_show_every_fold_model(capsys, monkeypatch, tmp_path):
    import pipeline.training as training
    from pipeline.plots import curve_columns, curves_figure

    monkeypatch.setattr(training, "PROGRESS_INTERVAL_S", 0.0)
    sequences, clips = toy_data()
    result = cross_validate(stats_spec(), {"x": sequences}, clips, TASK, replace(FAST, epochs=2, patience=2), label="train@x", seeds=3)
    curves = result.curves
    assert list(curves.columns) == ["fold", "seed", "epoch", "train_loss", "val_loss"]
    assert set(map(tuple, curves[["fold", "seed"]].drop_duplicates().to_numpy())) == {(f, s) for f in range(4) for s in range(3)}
    assert curve_columns(curves) == (["train_loss", "val_loss"], [])  # the seed is a key, not a curve
    lines = capsys.readouterr().out.splitlines()
    epochs = [l for l in lines if re.fullmatch(r"train@x: fold [1-4]/4 seed [1-3]/3 epoch [12]/2, best val_loss \d+\.\d{4} .*", l)]
    done = [l for l in lines if re.fullmatch(r"train@x: fold [1-4]/4 seed [1-3]/3 done \(2 epochs, best val_loss \d+\.\d{4}\); "
                                              r"\d+/12 fold models in \d+m\d\ds, about \d+m\d\ds left", l)]
    assert len(epochs) == 24 and len(done) == 12, lines
    assert "12/12 fold models" in done[-1] and done[-1].endswith("about 0m00s left")
    path = curves_figure(curves, "x", tmp_path / "curves.png")
    assert path.stat().st_size > 1000


def write_params(tmp_path, mutate) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    mutate(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_params_take_seeds_per_branch_and_for_the_fusion(tmp_path):
    assert load_params(REPO / "params.yaml").branches["face"].seeds == 1
    params = load_params(write_params(tmp_path, lambda p: (p["branches"]["face"].update(seeds=3), p["cross_modal"].update(seeds=2))))
    assert params.branches["face"].seeds == 3 and params.cross_modal.seeds == 2 and params.branches["voice"].seeds == 1
    lightgbm = {"features": "egemaps", "head": {"type": "lightgbm"}, "seeds": 2}  # a seed draws its trees' features
    assert load_params(write_params(tmp_path, lambda p: p["branches"].update(trees=lightgbm))).branches["trees"].seeds == 2


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p["branches"]["face"].update(seeds=0), r"branches\.face\.seeds: 0 models per fold; a member trains at least one"),
    (lambda p: p["branches"]["face"].update(seeds=-2), r"branches\.face\.seeds: -2 models per fold"),
    (lambda p: p["branches"]["face"].update(seeds=2.5), r"branches\.face\.seeds: expected int, got 2\.5"),
    (lambda p: p["branches"]["face"].update(seeds="3"), r"branches\.face\.seeds: expected int, got '3'"),
    (lambda p: p["branches"]["face"].update(seeds=True), r"branches\.face\.seeds: expected int, got True"),
    (lambda p: p["cross_modal"].update(seeds=0), r"cross_modal\.seeds: 0 models per fold"),
    (lambda p: p["branches"].update(lin={"features": "egemaps", "head": {"type": "svm"}, "seeds": 3}),
     r"branches\.lin\.seeds: 'svm' fits the same model whatever the seed, so 3 seeds would train one model 3 times; "
     r"use seeds: 1 \(heads a seed changes: \[.*'lightgbm'"),
    (lambda p: p["branches"].update(lin={"features": "egemaps", "head": {"type": "logreg"}, "seeds": 2}),
     r"branches\.lin\.seeds: 'logreg' fits the same model whatever the seed"),
])
def test_bad_seed_counts_are_refused_naming_the_key(tmp_path, mutate, message):
    with pytest.raises(ParamsError, match=message):
        load_params(write_params(tmp_path, mutate))


def test_the_report_names_the_seeds_of_an_ensemble():
    from pipeline.evaluation import ExperimentReport, experiment_metrics, report_protocol
    from tests.test_evaluation import FINAL, params

    task = ClassificationTask(ClassificationTask.Config(["neutral", "happy", "angry"]))
    models = {"face": FINAL, "voice": FINAL, "late_fusion": FINAL}
    metrics = experiment_metrics(models, task, report_protocol(params(), task, folds=2), {"face": 3, "voice": 1})
    assert metrics["models"]["face"]["seeds"] == 3 and "seeds" not in metrics["models"]["voice"]
    report = ExperimentReport(task, metrics, {}, {}, pd.DataFrame(columns=["clip_id", "stage", "reason"]),
                              {"method": "weighted", "weights": {"face": 0.5, "voice": 0.5}})
    markdown = report.markdown()
    assert "| face (mean of 3 seeds) | 6 |" in markdown and "| voice | 6 |" in markdown
    assert report.dvc_metrics(metrics["models"]["face"]) == report.dvc_metrics(metrics["models"]["voice"])
