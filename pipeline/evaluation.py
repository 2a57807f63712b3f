"""Metrics, confusion matrix, failures table and the markdown report of an experiment."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.metrics import classification_report, confusion_matrix, probability_columns


def score_report(scores: pd.DataFrame, classes: list[str]) -> dict:
    truth = scores["label"].map(classes.index).to_numpy()
    predicted = scores[probability_columns(classes)].to_numpy().argmax(1)
    return classification_report(truth, predicted, classes)


def confusion_table(scores: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """One row per clip (actual, predicted): the layout DVC's confusion template reads."""
    predicted = np.array(classes)[scores[probability_columns(classes)].to_numpy().argmax(1)]
    return pd.DataFrame({"actual": scores["label"].to_numpy(), "predicted": predicted})


def markdown_report(metrics: dict, weights: dict, failures: pd.DataFrame, scores: pd.DataFrame, classes: list[str]) -> str:
    lines = ["# Evaluation report", "", f"Classes: {', '.join(classes)}. Out-of-fold, speaker-independent.", ""]
    lines += ["| model | clips | accuracy | UAR | macro-F1 |", "|---|---|---|---|---|"]
    for name, report in metrics["models"].items():
        lines.append(f"| {name} | {report['clips']} | {report['accuracy']:.3f} | {report['uar']:.3f} | {report['macro_f1']:.3f} |")
    lines += ["", f"Late fusion ({weights['method']}) weights fit on all folds: "
              + ", ".join(f"{k} {v:.2f}" for k, v in weights["weights"].items())
              + " (each fold's reported scores use weights fit without that fold).", ""]
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
