"""Figures, tables, images and the markdown report of an experiment; the task
(:mod:`pipeline.tasks`) supplies its metrics, its chance levels and its confusion matrix.

Written under ``reports/``:

- ``metrics.json``: the protocol every figure was obtained under, and per model its clips,
  headline figures (accuracy, UAR, macro-F1; continuous: CCC per dimension) and their spread
  across folds; ``test`` when there is a held-out test set;
- ``metrics/<model>.json`` (and ``metrics/test/``): the same figures one file per model,
  what dvc.yaml declares as metrics, so ``dvc metrics show`` prints one row per model
  instead of one row of every model's columns;
- ``per_class_recall.csv``, ``confusion.csv`` (class order), ``failures.csv``;
- ``plots/*.png`` (:mod:`pipeline.plots`): confusion matrices, per-class recall, training
  curves, declared as DVC image plots and embedded in ``report.md`` by relative path.
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.results import BRANCHES_DIR, FUSION_DIR, LATE_FUSION_DIR, read_missing, read_scores
from pipeline.store.files import read_parquet
from pipeline.tasks import Task, task_from_params

MANIFEST_FAILURES = Path("data/manifest_failures.csv")
FINAL = "late_fusion"
PLOTS = "plots"              # under reports/, so report.md links them as plots/<name>.png
EXAMPLES_PER_REASON = 3
MANIFEST = Path("data/manifest.parquet")


def _part(scores: pd.DataFrame, test: bool) -> pd.DataFrame:
    if not len(scores):
        return scores
    return scores[scores["fold"] < 0] if test else scores[scores["fold"] >= 0]


# -- protocol -------------------------------------------------------------------------------
def report_protocol(params, task: Task, folds: int) -> dict:
    """How the figures were obtained: cross-validation folds and their grouping, the held-out
    test set, the speaker-standardisation protocol and feature normalisation (named as in
    pipeline.protocol), and the chance level of each figure. ``folds``: the number of folds
    found in the score matrices."""
    from pipeline.protocol import NORMALIZATION_DESCRIPTIONS, STANDARDIZATION_DESCRIPTIONS

    data = params.data
    requested = getattr(params.train, "folds", data.folds)
    grouping = data.group_by
    held_out = ([f"official split {data.test_split!r}"] if data.test_split else []) + \
        ([f"{grouping}s {', '.join(map(str, data.test_groups))}"] if data.test_groups else [])
    chance = task.chance_levels()
    return {
        "cross_validation": f"leave one {grouping} out" if not requested else f"{requested} {grouping}-independent folds",
        "folds": int(folds),
        "grouping": grouping,
        "test_set": "; ".join(held_out) or "none",
        "speaker_standardization": STANDARDIZATION_DESCRIPTIONS[params.train.speaker_standardization],
        "feature_normalization": NORMALIZATION_DESCRIPTIONS[params.train.feature_normalization],
        "transductive": params.train.speaker_standardization == "transductive",
        "chance": {key: round(chance[key], 6) for key, _ in task.figure_columns() if key in chance},
    }


def protocol_lines(protocol: dict, task: Task) -> list[str]:
    grouping, titles = protocol["grouping"], dict(task.figure_columns())
    scheme, count = protocol["cross_validation"], protocol["folds"]
    folds = scheme if scheme.startswith(f"{count} ") else f"{scheme} ({count} folds in the scores)"
    independent = (f"no {grouping} is in both the training and the test part of a fold" if grouping != "clip"
                   else "clips of the same speaker can be on both sides of a fold")
    return [
        f"- Cross-validation: {folds}, grouped by {grouping} ({independent}). Figures are out of fold unless "
        "marked held-out test.",
        f"- Held-out test set: {protocol['test_set']}.",
        f"- Speaker standardisation (`train.speaker_standardization`): {protocol['speaker_standardization']}.",
        f"- Feature normalisation (`train.feature_normalization`): {protocol['feature_normalization']}.",
        "- Chance level: " + ", ".join(f"{titles.get(key, key)} {value:.3f}" for key, value in protocol["chance"].items())
        + " (predictions that carry no information).",
    ]


# -- figures --------------------------------------------------------------------------------
def fold_spread(scores: pd.DataFrame, task: Task) -> tuple[int, float | None, float | None]:
    """(folds scored, mean, sample standard deviation) of the task's headline figure computed
    on each out-of-fold fold on its own."""
    labelled = _part(scores, False)
    values = [task.report(rows)[task.headline] for _, rows in labelled.groupby("fold")] if len(labelled) else []
    if not values:
        return 0, None, None
    return len(values), float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else None


def model_figures(scores: pd.DataFrame, task: Task, spread: bool) -> dict:
    """The task's report of ``scores`` with every figure None when no clip was scored (a
    model that scored nothing has no accuracy, not an accuracy of 0)."""
    report = task.report(scores)
    if not report["clips"]:
        report = {key: (value if key in ("clips", "steps") else None) for key, value in report.items()}
    if spread:
        folds, mean, std = fold_spread(scores, task)
        report.update({"folds": folds, f"{task.headline}_fold_mean": mean, f"{task.headline}_fold_std": std})
    return report


def experiment_metrics(models: dict[str, pd.DataFrame], task: Task, protocol: dict, seeds: dict[str, int] | None = None) -> dict:
    """Out-of-fold figures of every model under ``models``; figures on the held-out test set
    (fold -1: an official split or data.test_groups) under ``test`` when there is one.
    ``seeds``: models per fold of a seed-ensemble member (recorded as ``seeds`` beside its
    figures when more than one)."""
    ensembles = {name: n for name, n in (seeds or {}).items() if n > 1}

    def figures(name: str, scores: pd.DataFrame, spread: bool) -> dict:
        return {**model_figures(scores, task, spread), **({"seeds": ensembles[name]} if name in ensembles else {})}

    metrics = {"final": FINAL, "task": task.registry_name, "protocol": protocol,
               "models": {name: figures(name, _part(scores, False), spread=True) for name, scores in models.items()}}
    tested = {name: _part(scores, True) for name, scores in models.items() if len(_part(scores, True))}
    if tested:
        metrics["test"] = {name: figures(name, scores, spread=False) for name, scores in tested.items()}
    return metrics


def recall_table(confusions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per model and class: the class's clips and its recall (empty where it has none)."""
    rows = []
    for model, matrix in confusions.items():
        support = matrix.sum(1)
        for label in matrix.index:
            recall = matrix.loc[label, label] / support[label] if support[label] else None
            rows.append({"model": model, "class": label, "clips": int(support[label]), "recall": recall})
    return pd.DataFrame(rows, columns=["model", "class", "clips", "recall"])


def confusion_long(confusions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """model, actual, predicted, clips; classes in the experiment's order."""
    rows = [{"model": model, "actual": actual, "predicted": predicted, "clips": int(matrix.loc[actual, predicted])}
            for model, matrix in confusions.items() for actual in matrix.index for predicted in matrix.columns]
    return pd.DataFrame(rows, columns=["model", "actual", "predicted", "clips"])


# -- failures -------------------------------------------------------------------------------
_LEADING_FILE = re.compile(r"^(?P<path>[^\s:][^:]*\.[A-Za-z0-9]{1,5}): ")
_NUMBER = re.compile(r"\d+(\.\d+)?")


def _without_file(reason: str) -> str:
    """The reason without the file it names (a clip's own path leads most reasons)."""
    match = _LEADING_FILE.match(reason)
    return reason[match.end():].replace(match["path"], "<file>") if match else reason


def failure_summary(failures: pd.DataFrame) -> pd.DataFrame:
    """One row per stage and reason: how many clips, and a few of them. Reasons that differ
    only in the clip's file or in a number (frames sampled, an error code) are one reason,
    shown with N for the number; reports/failures.csv keeps every clip's own text."""
    columns = ["stage", "reason", "clips", "examples"]
    if not len(failures):
        return pd.DataFrame(columns=columns)
    table = failures.assign(text=failures["reason"].map(_without_file))
    table["key"] = table["text"].map(lambda text: _NUMBER.sub("N", text))
    rows = []
    for (stage, key), group in table.groupby(["stage", "key"], sort=False):
        texts = group["text"].unique()
        clips = list(dict.fromkeys(group["clip_id"]))
        rows.append({"stage": stage, "reason": texts[0] if len(texts) == 1 else key, "clips": len(clips),
                     "examples": ", ".join(clips[:EXAMPLES_PER_REASON]) + (", ..." if len(clips) > EXAMPLES_PER_REASON else "")})
    return pd.DataFrame(rows, columns=columns).sort_values("clips", ascending=False, kind="stable").reset_index(drop=True)


# -- the report -----------------------------------------------------------------------------
def _value(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"


def _spread(report: dict, headline: str) -> str:
    mean, std = report.get(f"{headline}_fold_mean"), report.get(f"{headline}_fold_std")
    if mean is None:
        return "n/a"
    return f"{mean:.3f} ± {std:.3f} ({report['folds']})" if std is not None else f"{mean:.3f} (1 fold)"


def figures_table(section: dict[str, dict], task: Task, spread: bool) -> list[str]:
    columns = task.figure_columns()
    titles = ["model", "n", *(title for _, title in columns)]
    titles += [f"{dict(columns)[task.headline]} per fold (mean ± sd, folds)"] if spread else []
    lines = ["| " + " | ".join(titles) + " |", "|---" * len(titles) + "|"]
    for name, report in section.items():
        label = f"{name} (mean of {report['seeds']} seeds)" if report.get("seeds", 1) > 1 else name
        cells = [label, str(report["clips"]), *(_value(report.get(key)) for key, _ in columns)]
        cells += [_spread(report, task.headline)] if spread else []
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def matrix_lines(matrix: pd.DataFrame) -> list[str]:
    return (["| actual \\ predicted | " + " | ".join(map(str, matrix.columns)) + " |", "|---" * (len(matrix.columns) + 1) + "|"]
            + [f"| {label} | " + " | ".join(str(v) for v in row) + " |" for label, row in zip(matrix.index, matrix.to_numpy())])


def _image(title: str, path: str) -> str:
    return f"![{title}]({path})"


@dataclass
class ExperimentReport:
    task: Task
    metrics: dict
    confusions: dict[str, pd.DataFrame]   # out of fold, per model that scored clips
    curves: dict[str, pd.DataFrame]       # per neural member, its curves.csv
    failures: pd.DataFrame
    weights: dict                         # models/late_fusion/weights.json
    member_models: dict[str, str] = field(default_factory=dict)  # late-fusion member -> model name

    # -- what is written ----------------------------------------------------------------------
    def confusion_images(self) -> dict[str, str]:
        return {model: f"{PLOTS}/confusion_{model}.png" for model in self.confusions}

    def curve_images(self) -> dict[str, str]:
        return {member: f"{PLOTS}/curves_{member}.png" for member in self.curves}

    def recall_image(self) -> str | None:
        return f"{PLOTS}/recall.png" if self.confusions else None

    def scored_weights(self) -> tuple[dict[str, float], list[str]]:
        """(weights of the members that scored clips, members that scored none)."""
        models = self.metrics["models"]
        scored = {m: w for m, w in self.weights["weights"].items() if models.get(self.member_models.get(m, m), {}).get("clips")}
        return scored, [m for m in self.weights["weights"] if m not in scored]

    def markdown(self) -> str:
        task, metrics = self.task, self.metrics
        lines = ["# Evaluation report", "", task.description_line(), "", "## Protocol", "", *protocol_lines(metrics["protocol"], task), ""]
        lines += ["## Out of fold", "", *figures_table(metrics["models"], task, spread=True), ""]
        if "test" in metrics:
            lines += ["## Held-out test set (fold models merged)", "", *figures_table(metrics["test"], task, spread=False), ""]
        scored, unscored = self.scored_weights()
        line = (f"Late fusion ({self.weights['method']}) weights fit on all folds: "
                + (", ".join(f"{k} {v:.2f}" for k, v in scored.items()) or "none")
                + " (each fold's reported scores use weights fit without that fold).")
        lines += [line + (f" Scored no clips: {', '.join(unscored)}." if unscored else ""), ""]
        if metrics.get("unlabeled"):
            lines += [f"Unlabeled clips: {metrics['unlabeled']}, in no fold and no figure above; the final models' "
                      "predictions of them are in reports/predictions.csv (stage predict_unlabeled).", ""]
        if FINAL in self.confusions:
            lines += [f"## Confusion of the final model ({FINAL}), out of fold", "", *matrix_lines(self.confusions[FINAL]), "",
                      _image(f"confusion {FINAL}", self.confusion_images()[FINAL]), ""]
        if self.recall_image():
            lines += ["## Per-class recall", "", "Every model's recall per class: reports/per_class_recall.csv.", "",
                      _image("per-class recall", self.recall_image()), ""]
            others = {m: p for m, p in self.confusion_images().items() if m != FINAL}
            if others:
                lines += ["## Confusion of each member", "", *(_image(f"confusion {m}", p) for m, p in others.items()), ""]
        if self.curves:
            lines += ["## Training curves", "", *(_image(f"curves {m}", p) for m, p in self.curve_images().items()), ""]
        summary = failure_summary(self.failures)
        lines += [f"## Clips left out or missing a modality ({self.failures['clip_id'].nunique()} clips, {len(summary)} reasons)", ""]
        if len(summary):
            lines += ["One line per reason; every clip with its own reason: reports/failures.csv.", "",
                      "| stage | reason | clips | examples |", "|---|---|---|---|"]
            lines += [f"| {r.stage} | {r.reason.replace('|', '/')} | {r.clips} | {r.examples} |" for r in summary.itertuples()]
        else:
            lines.append("None.")
        return "\n".join(lines) + "\n"

    def save(self, reports: Path) -> None:
        from pipeline.plots import confusion_figure, curves_figure, recall_figure

        reports.mkdir(parents=True, exist_ok=True)
        for stale in (reports / PLOTS, reports / "metrics"):
            shutil.rmtree(stale, ignore_errors=True)
        write_json(reports / "metrics.json", self.metrics)
        for section, directory in (("models", reports / "metrics"), ("test", reports / "metrics" / "test")):
            for name, report in self.metrics.get(section, {}).items():
                write_json(directory / f"{name}.json", self.dvc_metrics(report))
        recall = recall_table(self.confusions)
        recall.to_csv(reports / "per_class_recall.csv", index=False)
        confusion_long(self.confusions).to_csv(reports / "confusion.csv", index=False)
        self.failures.to_csv(reports / "failures.csv", index=False)
        for model, path in self.confusion_images().items():
            confusion_figure(self.confusions[model], f"{model}, out of fold", reports / path)
        if self.recall_image():
            recall_figure(recall, list(next(iter(self.confusions.values())).index),
                          self.metrics["protocol"]["chance"].get("uar", 0.0), reports / self.recall_image())
        for member, path in self.curve_images().items():
            curves_figure(self.curves[member], member, reports / path)
        (reports / "report.md").write_text(self.markdown())

    def dvc_metrics(self, report: dict) -> dict:
        """What ``dvc metrics show`` prints for one model: clips, the headline figures and
        the headline's spread across folds."""
        keys = ["clips", *(key for key, _ in self.task.figure_columns()), f"{self.task.headline}_fold_std"]
        return {key: report[key] for key in keys if key in report}

    def lines(self) -> list[str]:
        columns = self.task.figure_columns()
        return [f"evaluate: {name:>20}  n {report['clips']:>5}  " + "  ".join(f"{key} {_value(report.get(key))}" for key, _ in columns)
                for name, report in self.metrics["models"].items()]


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def read_seeds(directory: Path) -> int:
    """Models per fold of the member in ``directory`` (its meta.json; 1 before seed ensembles)."""
    path = directory / "meta.json"
    return int(json.loads(path.read_text()).get("seeds", 1)) if path.exists() else 1


def read_curves(directory: Path) -> pd.DataFrame:
    path = directory / "curves.csv"
    return pd.read_csv(path) if path.exists() and path.stat().st_size else pd.DataFrame()


def evaluate_experiment(params) -> ExperimentReport:
    """Figures of every branch, the cross-modal fusion and late fusion, from their folders."""
    task = task_from_params(params)
    fusion_model = f"fusion_{params.fusion}"
    models = {name: read_scores(name) for name in params.branches}
    models[fusion_model] = read_scores("fusion")
    models[FINAL] = read_parquet(LATE_FUSION_DIR / "scores.parquet")
    folds = max((_part(scores, False)["fold"].nunique() for scores in models.values() if len(scores)), default=0)
    seeds = {name: read_seeds(BRANCHES_DIR / name) for name in params.branches} | {fusion_model: read_seeds(FUSION_DIR)}
    metrics = experiment_metrics(models, task, report_protocol(params, task, folds), seeds)
    confusions = {}
    for name, scores in models.items():
        labelled = _part(scores, False)
        matrix = task.confusion(labelled) if len(labelled) else None
        if matrix is not None:
            confusions[name] = matrix
    if MANIFEST.exists():
        metrics["unlabeled"] = int(task.unlabeled(read_parquet(MANIFEST)).sum())
    failures = pd.concat(
        [pd.read_csv(MANIFEST_FAILURES, dtype=str, keep_default_na=False)]
        + [read_missing(BRANCHES_DIR / name) for name in params.branches]
        + [read_missing(FUSION_DIR)],
        ignore_index=True,
    ).drop_duplicates()  # a clip without audio is missing from every audio branch alike
    member_dirs = {name: BRANCHES_DIR / name for name in params.branches} | {"fusion": FUSION_DIR}
    curves = {name: frame for name, frame in ((n, read_curves(d)) for n, d in member_dirs.items()) if not frame.empty}
    weights = json.loads((LATE_FUSION_DIR / "weights.json").read_text())
    return ExperimentReport(task, metrics, confusions, curves, failures, weights,
                            {"fusion": fusion_model})
