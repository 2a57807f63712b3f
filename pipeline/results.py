"""Where trained members and their score matrices live, and how they are read back.

``models/branches/<branch>/`` and ``models/fusion/`` each hold ``scores.parquet`` (the task's
score matrix: clip_id, fold, label, p_<class> out-of-fold probabilities; or per-step
predictions), the ``model.pt`` checkpoint (:mod:`pipeline.checkpoint`), ``curves.csv``,
``meta.json``, and ``missing.csv`` for clips the member could not score and why.
``models/late_fusion/`` holds the fused ``scores.parquet``, ``weights.json`` and the
``checkpoint.json`` of :mod:`pipeline.fusion.late`. Torch-free: late fusion and evaluation
read results without importing it.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.store import FAILURE_COLUMNS, FeatureStore
from pipeline.store.files import read_parquet

BRANCHES_DIR = Path("models/branches")
FUSION_DIR = Path("models/fusion")
LATE_FUSION_DIR = Path("models/late_fusion")


def member_dir(name: str) -> Path:
    """``fusion`` is the cross-modal model; any other member name is a branch."""
    return FUSION_DIR if name == "fusion" else BRANCHES_DIR / name


def read_scores(name: str) -> pd.DataFrame:
    path = member_dir(name) / "scores.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path}: score matrix of {name!r} missing (run its train/fusion stage)")
    return read_parquet(path)


def read_missing(directory: Path) -> pd.DataFrame:
    path = directory / "missing.csv"
    return pd.read_csv(path, dtype=str, keep_default_na=False) if path.exists() else pd.DataFrame(columns=FAILURE_COLUMNS)


def missing_clips(manifest: pd.DataFrame, present: set[str], stores: list[FeatureStore], stage: str) -> pd.DataFrame:
    """Clips of the manifest without features, with the stage and reason of the first store
    (list them upstream first) that recorded a failure for them."""
    known: dict[str, dict[str, str]] = {}
    for store in stores:
        for failure in store.failures().to_dict("records"):
            known.setdefault(failure["clip_id"], failure)
    rows = [
        known.get(clip_id, {"clip_id": clip_id, "stage": stage, "reason": "no features"})
        for clip_id in manifest["clip_id"]
        if clip_id not in present
    ]
    return pd.DataFrame(rows, columns=FAILURE_COLUMNS)
