"""EmoDB speech benchmark (issue 4): the `emodb` setup on a fresh copy of the project, leave
one speaker out (10 folds), every choice made inside the training folds.

    python bench/emodb.py [--root ../shared/data/emodb] [--keep DIR]

Prints the extraction time of the 535 files on this machine's cores (audio decoding and
every audio extractor), each stage's wall time, and the unweighted average recall of every
branch, the cross-modal fusion and the late fusion. Target: late fusion UAR >= 0.880.
Reference (Eyben et al. 2016, linear SVM, C picked on the test folds): eGeMAPS 0.811,
ComParE 0.860.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.devtools import copy_project, run_timed  # noqa: E402

EXTRACTION_STAGES = ("audio", "extract@")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = os.environ.get("AVER_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    parser.add_argument("--root", type=Path, default=Path(shared) / "emodb", help="the EmoDB folder (wav/*.wav)")
    parser.add_argument("--keep", type=Path, help="run in this (new) folder and keep it")
    args = parser.parse_args()
    if not args.root.exists():
        raise SystemExit(f"{args.root}: EmoDB not found (pass --root or set AVER_SHARED_DATA)")
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="aver-emodb-"))
    workdir.mkdir(parents=True, exist_ok=True)
    root = copy_project(REPO, workdir)
    print(f"project copy: {root}  (cores: {os.cpu_count()})", flush=True)
    run_timed([sys.executable, "-m", "pipeline.setups", "emodb", "--root", str(args.root.resolve()), "--no-run"], root)

    start = time.perf_counter()
    _, stage_times = run_timed(["dvc", "repro", "evaluate"], root)
    total = time.perf_counter() - start
    print(f"\n{'stage':<26}{'seconds':>9}")
    for stage, seconds in stage_times.items():
        print(f"{stage:<26}{seconds:>9.1f}")
    extraction = sum(s for stage, s in stage_times.items() if stage.startswith(EXTRACTION_STAGES))
    manifest = json.loads((root / "reports" / "metrics.json").read_text())
    clips = max(report["clips"] for report in manifest["models"].values())
    print(f"{'dvc repro evaluate':<26}{total:>9.1f}")
    print(f"\nextraction of {clips} files (audio + every audio extractor): {extraction:.1f} s on {os.cpu_count()} cores")
    print(f"\n{'model':<24}{'UAR':>7}{'accuracy':>10}{'macro-F1':>10}")
    for name, report in manifest["models"].items():
        print(f"{name:<24}{report['uar']:>7.3f}{report['accuracy']:>10.3f}{report['macro_f1']:>10.3f}")
    weights = json.loads((root / "models" / "late_fusion" / "weights.json").read_text())
    print(f"\nlate fusion ({weights['method']}) weights on all folds: {weights['weights']}")
    final = manifest["models"]["late_fusion"]["uar"]
    print(f"late fusion UAR {final:.3f}  (target >= 0.880: {'met' if final >= 0.88 else 'NOT met'})")


if __name__ == "__main__":
    main()
