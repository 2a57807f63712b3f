"""Metrics, confusion table, failures table and the markdown report of an experiment; the
task (:mod:`pipeline.tasks`) supplies its metrics and its part of the report."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.store.files import read_parquet
from pipeline.results import BRANCHES_DIR, FUSION_DIR, LATE_FUSION_DIR, read_missing, read_scores
from pipeline.tasks import Task, task_from_params

MANIFEST_FAILURES = Path("data/manifest_failures.csv")
MANIFEST = Path("data/manifest.parquet")


def _part(scores: pd.DataFrame, test: bool) -> pd.DataFrame:
    if not len(scores):
        return scores
    return scores[scores["fold"] < 0] if test else scores[scores["fold"] >= 0]


def experiment_metrics(models: dict[str, pd.DataFrame], task: Task) -> dict:
    """Out-of-fold figures of every model under ``models``; figures on the held-out test set
    (fold -1: an official split or data.test_groups) under ``test`` when there is one."""
    metrics = {"final": "late_fusion", "task": task.registry_name,
               "models": {name: task.report(_part(scores, False)) for name, scores in models.items()}}
    if any(len(_part(scores, True)) for scores in models.values()):
        metrics["test"] = {name: task.report(_part(scores, True)) for name, scores in models.items() if len(_part(scores, True))}
    return metrics


def markdown_report(metrics: dict, weights: dict, failures: pd.DataFrame, scores: pd.DataFrame, task: Task) -> str:
    lines = ["# Evaluation report", "", task.description_line("Out-of-fold, speaker-independent"), ""]
    for section, title in (("models", "Out of fold"), ("test", "Held-out test set (fold models merged)")):
        if section in metrics:
            lines += [f"## {title}", "", *task.report_lines(metrics[section]), ""]
    lines += [f"Late fusion ({weights['method']}) weights fit on all folds: "
              + ", ".join(f"{k} {v:.2f}" for k, v in weights["weights"].items())
              + " (each fold's reported scores use weights fit without that fold).", ""]
    lines += task.final_model_lines(scores)
    if metrics.get("unlabeled"):
        lines += ["", f"Unlabeled clips: {metrics['unlabeled']}, in no fold and no figure above; the final models' "
                  "predictions of them are in reports/predictions.csv (stage predict_unlabeled).", ""]
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


@dataclass
class ExperimentReport:
    metrics: dict
    confusion: pd.DataFrame
    failures: pd.DataFrame
    markdown: str
    model_dirs: dict[str, Path]

    def save(self, reports: Path) -> None:
        write_json(reports / "metrics.json", self.metrics)
        self.confusion.to_csv(reports / "confusion.csv", index=False)
        self.failures.to_csv(reports / "failures.csv", index=False)
        write_curves(reports / "curves", self.model_dirs)
        (reports / "report.md").write_text(self.markdown)

    def lines(self) -> list[str]:
        return [f"evaluate: {name:>20}  " + "  ".join(f"{key} {value:.3f}" for key, value in report.items() if isinstance(value, float))
                for name, report in self.metrics["models"].items()]


def evaluate_experiment(params) -> ExperimentReport:
    """Figures of every branch, the cross-modal fusion and late fusion, from their folders."""
    task = task_from_params(params)
    models = {name: read_scores(name) for name in params.branches}
    models[f"fusion_{params.fusion}"] = read_scores("fusion")
    final = read_parquet(LATE_FUSION_DIR / "scores.parquet")
    models["late_fusion"] = final
    metrics = experiment_metrics(models, task)
    if MANIFEST.exists():
        manifest = read_parquet(MANIFEST)
        metrics["unlabeled"] = int(task.unlabeled(manifest).sum())
    labelled = _part(final, False)
    failures = pd.concat(
        [pd.read_csv(MANIFEST_FAILURES, dtype=str, keep_default_na=False)]
        + [read_missing(BRANCHES_DIR / name) for name in params.branches]
        + [read_missing(FUSION_DIR)],
        ignore_index=True,
    ).drop_duplicates()  # a clip without audio is missing from every audio branch alike
    weights = json.loads((LATE_FUSION_DIR / "weights.json").read_text())
    model_dirs = {name: BRANCHES_DIR / name for name in params.branches} | {"fusion": FUSION_DIR}
    return ExperimentReport(metrics, task.confusion_table(labelled), failures,
                            markdown_report(metrics, weights, failures, labelled, task), model_dirs)
