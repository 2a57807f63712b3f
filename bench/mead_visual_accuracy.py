"""MEAD figures of the visual branches, through the DVC pipeline in a fresh project copy.

    python bench/mead_visual_accuracy.py [--fps 10] [--keep DIR] [--landmarks mesh keypoints]

On the 24 MEAD clips (3 actors x 8 emotions, ``$AVER_SHARED_DATA/mead-mini``) it runs
``dvc repro manifest --downstream`` with the MEAD adapter and two visual branches:

* ``face``: frozen FER2013 mini-Xception embeddings (extract@fer) + attention head (the default),
* ``face_ft``: the same CNN fine-tuned end to end with its attention head from the cached
  gray crops (extract@crops, head ``finetune_mini_xception``),

and prints the leave-one-actor-out UAR / accuracy of each (train.folds 0 = one fold per
actor), plus the zero-shot accuracy of the frozen FER2013 classifier on the 7 classes MEAD
shares with FER2013 (contempt left out): the clip's prediction is the argmax of its frames'
mean FER probabilities. Nothing is tuned on this data.

With several ``--landmarks`` values the same project is run once per ``faces.landmarks``
setting, in that order (each run re-makes the faces store and everything after it), and the
figures are printed side by side at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.devtools import commit, copy_project, run_timed  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from landmarks_quality import forget_face_features  # noqa: E402

LABELS = ["angry", "contempt", "disgusted", "fear", "happy", "neutral", "sad", "surprised"]
MEAD_TO_FER = {"angry": "angry", "disgusted": "disgust", "fear": "fear", "happy": "happy", "neutral": "neutral",
               "sad": "sad", "surprised": "surprise"}
FINETUNE = {"backbone_lr_scale": 0.1, "trainable_blocks": 2, "unfreeze_from_epoch": 3, "unfreeze_every": 3,
            "hidden": 64, "dropout": 0.3}


def configure(root: Path, mead: Path, fps: float, landmarks: str) -> None:
    params_path = root / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["data"].update({"dataset": "mead", "root": str(mead), "labels": LABELS, "folds": 0})
    params["faces"].update({"fps": fps, "landmarks": landmarks})
    params["extractors"]["crops"] = {"type": "gray_crops", "input": "faces", "options": {}}
    params["branches"]["face_ft"] = {"features": "crops", "head": {"type": "finetune_mini_xception", "options": FINETUNE}}
    params["late_fusion"]["members"] = [m for m in params["late_fusion"]["members"] if m != "fusion"] + ["face_ft"]
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))


def zero_shot(root: Path) -> tuple[int, int, list[tuple[str, str, str]]]:
    import pandas as pd

    from pipeline.extractors.mini_xception import FER_CLASSES
    from pipeline.store import FeatureStore

    manifest = pd.read_parquet(root / "data/manifest.parquet")
    store = FeatureStore(root / "features/fer")
    correct, total, rows = 0, 0, []
    for clip in manifest.itertuples():
        if clip.label not in MEAD_TO_FER or clip.clip_id not in set(store.clip_ids()):
            continue
        entry = store.read(clip.clip_id, ["data", "mask"])
        logits = entry.arrays["data"][entry.arrays["mask"].astype(bool), 128:]
        probabilities = np.exp(logits - logits.max(1, keepdims=True))
        probabilities /= probabilities.sum(1, keepdims=True)
        predicted = FER_CLASSES[int(probabilities.mean(0).argmax())]
        truth = MEAD_TO_FER[clip.label]
        correct += predicted == truth
        total += 1
        rows.append((clip.clip_id, truth, predicted))
    return correct, total, rows


def run_one(root: Path, mead: Path, fps: float, landmarks: str) -> dict:
    """Configure, commit and repro the project with ``faces.landmarks`` = landmarks; print and
    return its figures."""
    configure(root, mead, fps, landmarks)
    commit(root, f"MEAD visual branches, faces.landmarks {landmarks}")
    forget_face_features(root, yaml.safe_load((root / "params.yaml").read_text()))
    start = time.perf_counter()
    output, stage_times = run_timed(["dvc", "repro", "manifest", "--downstream"], root)
    print(f"\n== faces.landmarks: {landmarks}; project copy: {root}; dvc repro manifest --downstream: "
          f"{time.perf_counter() - start:.0f} s (load average {os.getloadavg()[0]:.2f})")
    for stage, seconds in stage_times.items():
        if stage.startswith(("faces", "extract@fer", "extract@crops", "train@face")):
            print(f"  {stage:<18}{seconds:>7.1f} s")
    for line in output.splitlines():
        if line.startswith(("faces report", "train@face")):
            print(" ", line)
    metrics = json.loads((root / "reports/metrics.json").read_text())["models"]
    print(f"leave-one-actor-out, 8 classes (chance 0.125), faces.fps {fps:g}")
    for model in ("face", "face_ft"):
        m = metrics[model]
        print(f"  {model:<8} ({'frozen FER + attention' if model == 'face' else 'fine-tuned FER + attention'}): "
              f"UAR {m['uar']:.3f}  accuracy {m['accuracy']:.3f}  ({m['clips']} clips)")
    correct, total, rows = zero_shot(root)
    print(f"zero-shot FER2013 mini-Xception on the 7 shared classes: {correct}/{total} = {correct / max(total, 1):.3f}")
    for clip_id, truth, predicted in rows:
        if truth != predicted:
            print(f"  {clip_id}: {truth} -> {predicted}")
    return {"face": metrics["face"]["uar"], "face_ft": metrics["face_ft"]["uar"], "zero_shot": (correct, total)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--keep", type=Path, help="run in this (new) folder and keep it")
    parser.add_argument("--landmarks", nargs="+", choices=["mesh", "keypoints"], default=["mesh"],
                        help="faces.landmarks settings to run, in order")
    args = parser.parse_args()
    shared = os.environ.get("AVER_SHARED_DATA")
    mead = (Path(shared) if shared else REPO.parent / "shared" / "data") / "mead-mini"
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="aver-mead-"))
    workdir.mkdir(parents=True, exist_ok=True)
    root = copy_project(REPO, workdir)
    figures = {landmarks: run_one(root, mead.resolve(), args.fps, landmarks) for landmarks in args.landmarks}
    if len(figures) > 1:
        print(f"\n{'faces.landmarks':<18}{'zero-shot (7 classes)':>22}{'LOAO UAR frozen':>17}{'LOAO UAR fine-tuned':>21}")
        for landmarks, f in figures.items():
            correct, total = f["zero_shot"]
            print(f"{landmarks:<18}{f'{correct}/{total} = {correct / max(total, 1):.3f}':>22}{f['face']:>17.3f}{f['face_ft']:>21.3f}")


if __name__ == "__main__":
    main()
