"""The evaluation report on small score tables: class order, n/a for a model without clips,
spread across folds, late-fusion weights of scoring members only, failures by reason, the
protocol, and files that name no network address."""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluation import ExperimentReport, confusion_long, report_protocol, experiment_metrics, failure_summary
from pipeline.tasks.classification import ClassificationTask

CLASSES = ["neutral", "happy", "angry"]  # not alphabetical
URL = re.compile(rb"https?://")


def scores(rows: list[tuple[int, str, str]]) -> pd.DataFrame:
    """(fold, actual, predicted) rows -> a score matrix with one-hot probabilities."""
    frame = pd.DataFrame({"clip_id": [f"c{i}" for i in range(len(rows))], "fold": [r[0] for r in rows], "label": [r[1] for r in rows]})
    for c in CLASSES:
        frame[f"p_{c}"] = [float(r[2] == c) for r in rows]
    return frame


# Fold 0: 3 of 3 right (UAR 1); fold 1: neutral and happy right, angry called happy (UAR 2/3).
FINAL = scores([(0, "neutral", "neutral"), (0, "happy", "happy"), (0, "angry", "angry"),
                (1, "neutral", "neutral"), (1, "happy", "happy"), (1, "angry", "happy")])


def params(**data):
    data = {"folds": 0, "group_by": "speaker", "test_split": "", "test_groups": [], **data}
    return SimpleNamespace(data=SimpleNamespace(**data), train=SimpleNamespace(speaker_standardization="none", feature_normalization="none"))


@pytest.fixture
def report() -> ExperimentReport:
    task = ClassificationTask(ClassificationTask.Config(CLASSES))
    models = {"face": FINAL.iloc[:3], "voice": task.empty_scores(), "late_fusion": FINAL}
    metrics = experiment_metrics(models, task, report_protocol(params(), task, folds=2))
    confusions = {name: task.confusion(s) for name, s in models.items() if len(s)}
    curves = {"face": pd.DataFrame({"fold": [0, 0, 1, 1], "epoch": [0, 1, 0, 1], "train_loss": [1.0, 0.5, 1.1, 0.6],
                                    "val_loss": [1.2, 0.9, 1.3, np.nan]})}
    failures = pd.DataFrame({
        "clip_id": ["a1", "a2", "a3", "a4", "v9"],
        "stage": ["faces"] * 4 + ["manifest"],
        "reason": [f"/corpus/Actor_0{i}/a{i}.wav: no video stream" for i in range(1, 5)] + ["/corpus/v9.mp4: file is empty (0 bytes)"],
    })
    weights = {"method": "weighted", "weights": {"face": 0.7, "voice": 0.3}}
    return ExperimentReport(task, metrics, confusions, curves, failures, weights)


def test_a_model_without_clips_shows_n_a_and_no_late_fusion_weight(report):
    assert report.metrics["models"]["voice"] == {"clips": 0, "accuracy": None, "uar": None, "macro_f1": None,
                                                  "folds": 0, "uar_fold_mean": None, "uar_fold_std": None}
    markdown = report.markdown()
    assert "| voice | 0 | n/a | n/a | n/a | n/a |" in markdown
    [weights] = [line for line in markdown.splitlines() if line.startswith("Late fusion")]
    assert "face 0.70" in weights and "voice 0.30" not in weights and weights.endswith("Scored no clips: voice.")


def test_spread_across_folds_is_the_mean_and_sd_of_per_fold_scores(report):
    final = report.metrics["models"]["late_fusion"]
    assert final["clips"] == 6 and final["uar"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert final["folds"] == 2 and final["uar_fold_mean"] == pytest.approx((1 + 2 / 3) / 2)
    assert final["uar_fold_std"] == pytest.approx(np.std([1, 2 / 3], ddof=1))
    assert f"| late_fusion | 6 | 0.833 | 0.833 | 0.822 | 0.833 ± {np.std([1, 2 / 3], ddof=1):.3f} (2) |" in report.markdown()
    assert "face" in report.metrics["models"] and report.metrics["models"]["face"]["uar_fold_std"] is None  # one fold


def test_confusion_rows_and_columns_follow_the_class_order(report):
    matrix = report.confusions["late_fusion"]
    assert list(matrix.index) == list(matrix.columns) == CLASSES
    assert matrix.loc["angry", "happy"] == 1 and matrix.loc["angry", "angry"] == 1 and int(matrix.to_numpy().sum()) == 6
    table = confusion_long(report.confusions)
    assert list(dict.fromkeys(table.loc[table["model"] == "late_fusion", "actual"])) == CLASSES
    assert "| actual \\ predicted | neutral | happy | angry |" in report.markdown()
    assert "| angry | 0 | 1 | 1 |" in report.markdown()


def test_protocol_and_chance_level_are_stated(report):
    protocol = report.metrics["protocol"]
    assert protocol["cross_validation"] == "leave one speaker out" and protocol["folds"] == 2
    assert protocol["speaker_standardization"].startswith("none (") and not protocol["transductive"] and protocol["chance"] == {"accuracy": 0.333333, "uar": 0.333333}
    markdown = report.markdown()
    assert "Cross-validation: leave one speaker out (2 folds in the scores), grouped by speaker (no speaker" in markdown
    assert "Chance level: accuracy 0.333, UAR 0.333" in markdown and "`train.speaker_standardization`): none (" in markdown
    task = report.task
    held_out = report_protocol(params(folds=5, test_groups=["spk05"]), task, folds=5)
    assert held_out["cross_validation"] == "5 speaker-independent folds" and held_out["test_set"] == "speakers spk05"


def test_failures_are_one_line_per_reason_with_a_count_and_examples(report):
    summary = failure_summary(report.failures)
    assert summary.to_dict("records") == [
        {"stage": "faces", "reason": "no video stream", "clips": 4, "examples": "a1, a2, a3, ..."},
        {"stage": "manifest", "reason": "file is empty (0 bytes)", "clips": 1, "examples": "v9"},
    ]
    frames = pd.DataFrame({"clip_id": ["x", "y"], "stage": ["faces"] * 2,
                           "reason": ["x.mp4: no face detected in any of 17 sampled frames", "y.mp4: no face detected in any of 9 sampled frames"]})
    assert failure_summary(frames)["reason"].tolist() == ["no face detected in any of N sampled frames"]
    assert "| faces | no video stream | 4 | a1, a2, a3, ... |" in report.markdown()


def test_saved_report_embeds_its_images_by_relative_path_and_names_no_url(report, tmp_path):
    report.save(tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    embedded = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert sorted(embedded) == sorted(["plots/confusion_late_fusion.png", "plots/recall.png", "plots/confusion_face.png",
                                       "plots/curves_face.png"])
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(Path(p).name for p in embedded)
    for path in [tmp_path / "report.md", *(tmp_path / "plots").iterdir()]:
        content = path.read_bytes()
        assert not URL.search(content), path
    assert all((tmp_path / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in embedded)
    recall = pd.read_csv(tmp_path / "per_class_recall.csv")
    final = recall[recall["model"] == "late_fusion"]
    assert final["class"].tolist() == CLASSES and final["recall"].tolist() == [1.0, 1.0, 0.5]
    # dvc metrics show reads one small file per model; the per-class recall is not in them.
    assert sorted(p.name for p in (tmp_path / "metrics").iterdir()) == ["face.json", "late_fusion.json", "voice.json"]
    assert "recall" not in (tmp_path / "metrics.json").read_text()
