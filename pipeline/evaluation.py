"""Metrics, confusion matrix, failures table and the markdown report of an experiment."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.metrics import classification_report, concordance, confusion_matrix, probability_columns


def score_report(scores: pd.DataFrame, classes: list[str]) -> dict:
    truth = scores["label"].map(classes.index).to_numpy()
    predicted = scores[probability_columns(classes)].to_numpy().argmax(1)
    return classification_report(truth, predicted, classes)


def confusion_table(scores: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """One row per clip (actual, predicted): the layout DVC's confusion template reads."""
    predicted = np.array(classes)[scores[probability_columns(classes)].to_numpy().argmax(1)]
    return pd.DataFrame({"actual": scores["label"].to_numpy(), "predicted": predicted})


def model_report(scores: pd.DataFrame, params) -> dict:
    if params.task == "continuous":
        return continuous_report(scores, params.continuous.dimensions)
    return score_report(scores, params.data.labels)


def experiment_metrics(models: dict[str, pd.DataFrame], params) -> dict:
    """Out-of-fold figures of every model under ``models``; figures on the held-out test set
    (fold -1: an official split or data.test_groups) under ``test`` when there is one."""
    def part(scores: pd.DataFrame, test: bool) -> pd.DataFrame:
        if not len(scores):
            return scores
        return scores[scores["fold"] < 0] if test else scores[scores["fold"] >= 0]

    metrics = {"final": "late_fusion", "task": params.task,
               "models": {name: model_report(part(scores, False), params) for name, scores in models.items()}}
    if any(len(part(scores, True)) for scores in models.values()):
        metrics["test"] = {name: model_report(part(scores, True), params) for name, scores in models.items() if len(part(scores, True))}
    return metrics


def markdown_report(metrics: dict, weights: dict, failures: pd.DataFrame, scores: pd.DataFrame, params) -> str:
    classes = params.data.labels
    continuous = params.task == "continuous"
    protocol = "Out-of-fold, speaker-independent"
    lines = ["# Evaluation report", ""]
    lines.append(f"Task: continuous ({', '.join(params.continuous.dimensions)}, CCC). {protocol}." if continuous
                 else f"Classes: {', '.join(classes)}. {protocol}.")
    lines.append("")
    for section, title in (("models", "Out of fold"), ("test", "Held-out test set (fold models merged)")):
        if section not in metrics:
            continue
        lines += [f"## {title}", ""]
        if continuous:
            dims = params.continuous.dimensions
            lines += ["| model | clips | " + " | ".join(f"CCC {d}" for d in dims) + " | mean CCC |", "|---" * (len(dims) + 3) + "|"]
            for name, report in metrics[section].items():
                lines.append(f"| {name} | {report['clips']} | " + " | ".join(f"{report[f'ccc_{d}']:.3f}" for d in dims) + f" | {report['ccc_mean']:.3f} |")
        else:
            lines += ["| model | clips | accuracy | UAR | macro-F1 |", "|---|---|---|---|---|"]
            for name, report in metrics[section].items():
                lines.append(f"| {name} | {report['clips']} | {report['accuracy']:.3f} | {report['uar']:.3f} | {report['macro_f1']:.3f} |")
        lines.append("")
    lines += [f"Late fusion ({weights['method']}) weights fit on all folds: "
              + ", ".join(f"{k} {v:.2f}" for k, v in weights["weights"].items())
              + " (each fold's reported scores use weights fit without that fold).", ""]
    if not continuous and len(scores):
        matrix = confusion_matrix(scores["label"].map(classes.index).to_numpy(),
                                  scores[probability_columns(classes)].to_numpy().argmax(1), len(classes))
        lines += ["## Confusion of the final model (rows actual, columns predicted)", "",
                  "| | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]
        lines += [f"| {c} | " + " | ".join(str(v) for v in row) + " |" for c, row in zip(classes, matrix)]
    lines += ["", f"## Clips left out or missing a modality ({failures['clip_id'].nunique()})", ""]
    if len(failures):
        lines += ["| clip | stage | reason |", "|---|---|---|"]
        lines += [f"| {r.clip_id} | {r.stage} | {r.reason} |" for r in failures.itertuples()]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def write_curves(out_dir: Path, model_dirs: dict[str, Path]) -> None:
    """One training-curve table per neural member (loss per epoch, mean over the folds still
    training at that epoch), for ``dvc plots``. Non-neural members have no curve."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.csv"):
        stale.unlink()
    for name, directory in model_dirs.items():
        path = directory / "curves.csv"
        curves = pd.read_csv(path) if path.exists() and path.stat().st_size else pd.DataFrame()
        if curves.empty:
            continue
        mean = curves.groupby("epoch", as_index=False)[["train_loss", "val_loss"]].mean()
        mean.to_csv(out_dir / f"{name}.csv", index=False)


def continuous_report(scores: pd.DataFrame, dimensions: list[str]) -> dict:
    """CCC per dimension over every valid scored step (and their mean)."""
    valid = scores[scores["valid"].astype(bool)] if len(scores) else scores
    report = {"steps": int(len(valid)), "clips": int(valid["clip_id"].nunique()) if len(valid) else 0}
    values = {d: concordance(valid[f"pred_{d}"], valid[d]) if len(valid) > 1 else 0.0 for d in dimensions}
    report.update({f"ccc_{d}": v for d, v in values.items()})
    report["ccc_mean"] = float(np.mean(list(values.values())))
    return report


def summary(scores: pd.DataFrame, params) -> str:
    """One line of the out-of-fold figures a stage prints."""
    scores = scores[scores["fold"] >= 0] if len(scores) else scores
    if params.task == "continuous":
        report = continuous_report(scores, params.continuous.dimensions)
        return " ".join(f"{k} {v:.3f}" for k, v in report.items() if k.startswith("ccc_"))
    report = score_report(scores, params.data.labels)
    return f"UAR {report['uar']:.3f} accuracy {report['accuracy']:.3f}"
