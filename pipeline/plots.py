"""Images of an experiment's results, drawn by the project with matplotlib: confusion
matrices (counts and row-normalised, in the experiment's class order), per-class recall and
training curves. report.md embeds them and dvc.yaml declares them as image plots, which
``dvc plots show`` puts on its page as plain ``<img>`` tags: unlike its vega plots (scripts
loaded from a CDN), they show on a machine without a network.

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas (no
pyplot, no display, no global state). PNGs are written without matplotlib's ``Software``
metadata, whose value carries the project's web address.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

PNG_METADATA = {"Software": None}
CURVE_KEYS = ("fold", "seed", "epoch")  # seed: the model of a fold's seed ensemble


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", metadata=PNG_METADATA)
    return path


def _matrix_panel(axes, values: np.ndarray, classes: list[str], title: str, text: list[list[str]], vmax: float) -> None:
    axes.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax)
    axes.set_title(title)
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    for i, row in enumerate(text):
        for j, label in enumerate(row):
            axes.text(j, i, label, ha="center", va="center", fontsize=8,
                      color="white" if values[i, j] > 0.6 * vmax else "black")


def confusion_figure(matrix: pd.DataFrame, title: str, path: Path) -> Path:
    """Counts and row-normalised recall side by side; rows (actual) and columns (predicted)
    in the frame's order, which is the experiment's class order."""
    classes = [str(c) for c in matrix.index]
    counts = matrix.to_numpy()
    support = counts.sum(1, keepdims=True)
    normalised = np.divide(counts, support, out=np.zeros(counts.shape), where=support > 0)
    size = 2.5 + 0.55 * len(classes)
    figure = _figure(2 * size, size + 0.6)
    figure.suptitle(f"{title} ({int(counts.sum())} clips)")
    left, right = figure.subplots(1, 2)
    _matrix_panel(left, counts, classes, "counts", [[str(v) for v in row] for row in counts], max(float(counts.max()), 1.0))
    _matrix_panel(right, normalised, classes, "row-normalised (recall)", [[f"{v:.2f}" for v in row] for row in normalised], 1.0)
    return _save(figure, path)


def recall_figure(recall: pd.DataFrame, classes: list[str], chance: float, path: Path) -> Path:
    """Grouped bars: per class (experiment order), one bar per model; ``recall`` has columns
    model, class, recall. The chance level is drawn as a line."""
    models = list(dict.fromkeys(recall["model"]))
    table = recall.pivot(index="class", columns="model", values="recall").reindex(index=classes, columns=models)
    figure = _figure(max(6.0, 1.0 + 0.35 * len(classes) * max(len(models), 2)), 4.2)
    axes = figure.subplots()
    width = 0.8 / max(len(models), 1)
    positions = np.arange(len(classes))
    for m, model in enumerate(models):
        axes.bar(positions + (m - (len(models) - 1) / 2) * width, table[model].to_numpy(dtype=float), width, label=model)
    axes.axhline(chance, color="gray", linestyle="--", linewidth=1, label=f"chance {chance:.3f}")
    axes.set_xticks(positions, classes, rotation=30, ha="right")
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("recall")
    axes.set_title("Per-class recall, out of fold")
    axes.legend(fontsize=8, ncols=min(len(models) + 1, 6), loc="upper center", bbox_to_anchor=(0.5, -0.25))
    return _save(figure, path)


def curve_columns(curves: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(loss columns, score columns) of a member's curves.csv: every numeric column other
    than the fold, the seed and the epoch; those named ``*loss`` are losses."""
    values = [c for c in curves.columns if c not in CURVE_KEYS and pd.api.types.is_numeric_dtype(curves[c])]
    losses = [c for c in values if c.endswith("loss")]
    return losses, [c for c in values if c not in losses]


def curves_figure(curves: pd.DataFrame, title: str, path: Path) -> Path:
    """Every fold model's curve (thin; one per fold and seed of a seed ensemble) and their mean
    over the models still training at that epoch (thick), losses in one panel and any
    validation score in a second."""
    losses, scores = curve_columns(curves)
    panels = [("loss", losses)] + ([("score", scores)] if scores else [])
    models = ["fold", "seed"] if "seed" in curves else ["fold"]
    seeds = curves["seed"].nunique() if "seed" in curves else 1
    figure = _figure(6.0 * len(panels), 4.0)
    figure.suptitle(f"{title}: training curves ({curves['fold'].nunique()} folds"
                    + (f" x {seeds} seeds" if seeds > 1 else "") + ")")
    colours = dict(zip(losses + scores, [f"C{i}" for i in range(len(losses) + len(scores))]))
    for axes, (label, columns) in zip(np.atleast_1d(figure.subplots(1, len(panels))), panels):
        for column in columns:
            for _, model in curves.groupby(models):
                axes.plot(model["epoch"], model[column], color=colours[column], alpha=0.25, linewidth=0.8)
            mean = curves.groupby("epoch")[column].mean()
            axes.plot(mean.index, mean.to_numpy(), color=colours[column], linewidth=2.0,
                      label=f"{column} (mean over {'fold models' if seeds > 1 else 'folds'})")
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.legend(fontsize=8)
    return _save(figure, path)
