"""What faces.landmarks: keypoints costs the demo: every model's UAR with each setting.

    python bench/landmarks_quality.py [--keep DIR] [--landmarks mesh keypoints]

Runs ``dvc repro`` on a fresh copy of the project (the generated demo dataset, params.yaml as
it is) once per ``faces.landmarks`` setting, in order: the first run does everything, each
later one re-makes the faces store and what depends on it (the audio features are reused).
Prints the faces stage's time and detection summary and every model's leave-one-speaker-out
UAR (reports/metrics.json), side by side. Nothing is tuned between the runs.
For MEAD, ``bench/mead_visual_accuracy.py --landmarks mesh keypoints`` does the same.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.devtools import commit, copy_project, run_timed  # noqa: E402


def forget_face_features(root: Path, params: dict) -> None:
    """Delete the stores of the extractors that read the faces store. An extractor's entry
    records only the extractor's own config, so a re-made faces store would leave every entry
    "up to date" and the features of the old crops in place (issue 13, feature lineage)."""
    for name, spec in params["extractors"].items():
        if spec["input"] == "faces":
            shutil.rmtree(root / "features" / name, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="run in this (new) folder and keep it")
    parser.add_argument("--landmarks", nargs="+", choices=["mesh", "keypoints"], default=["mesh", "keypoints"])
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="aver-landmarks-"))
    workdir.mkdir(parents=True, exist_ok=True)
    root = copy_project(REPO, workdir)
    print(f"project copy: {root}")
    results = {}
    for landmarks in args.landmarks:
        params_path = root / "params.yaml"
        params = yaml.safe_load(params_path.read_text())
        params["faces"]["landmarks"] = landmarks
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        commit(root, f"faces.landmarks {landmarks}")
        forget_face_features(root, params)
        start = time.perf_counter()
        output, stage_times = run_timed(["dvc", "repro"], root)
        print(f"\n== faces.landmarks: {landmarks}: dvc repro {time.perf_counter() - start:.0f} s "
              f"(load average {os.getloadavg()[0]:.2f}); faces stage {stage_times.get('faces', float('nan')):.1f} s")
        for line in output.splitlines():
            if line.startswith("faces report"):
                print(" ", line)
        results[landmarks] = json.loads((root / "reports/metrics.json").read_text())["models"]
    models = list(next(iter(results.values())))
    print(f"\n{'model (UAR)':<22}" + "".join(f"{landmarks:>12}" for landmarks in results))
    for model in models:
        print(f"{model:<22}" + "".join(f"{results[landmarks][model]['uar']:>12.3f}" for landmarks in results))


if __name__ == "__main__":
    main()
