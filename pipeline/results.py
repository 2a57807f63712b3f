"""Where trained heads and their score matrices live, and how they are read back.

``models/branches/<branch>/``, ``models/fusion/`` and ``models/late_fusion/`` each hold
``scores.parquet`` (clip_id, fold, label, p_<class>: out-of-fold probabilities) beside the
model, plus ``missing.csv`` for clips the member could not score and why.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

import pandas as pd

from pipeline.store import FAILURE_COLUMNS, FeatureStore

if TYPE_CHECKING:  # late fusion and evaluation read results without importing torch
    from pipeline.training import CrossValidationResult

BRANCHES_DIR = Path("models/branches")
FUSION_DIR = Path("models/fusion")
LATE_FUSION_DIR = Path("models/late_fusion")


def member_dir(name: str) -> Path:
    """``fusion`` is the cross-modal model; any other member name is a branch."""
    return FUSION_DIR if name == "fusion" else BRANCHES_DIR / name


def save_cross_validation(out_dir: Path, result: CrossValidationResult, meta: dict[str, Any], missing: pd.DataFrame) -> None:
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save({**meta, "fold_states": result.fold_states}, out_dir / "model.pt")
    result.scores.to_parquet(out_dir / "scores.parquet", index=False)
    result.curves.to_csv(out_dir / "curves.csv", index=False)
    missing.to_csv(out_dir / "missing.csv", index=False)
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2, default=str))


def read_scores(name: str) -> pd.DataFrame:
    path = member_dir(name) / "scores.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path}: score matrix of {name!r} missing (run its train/fusion stage)")
    return pd.read_parquet(path)


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
