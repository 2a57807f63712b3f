"""Every cross-modal fusion, the late-fusion methods and the continuous task on the demo
data, as `dvc exp run` experiments on a fresh copy of the project: wall time of each, the
stages it re-ran, and the metrics table.

    python bench/fusions.py [--keep DIR]

Issue 5: each fusion runs through `dvc exp run -S fusion=<name>` reusing every cached
feature (only fusion, late_fusion and evaluate re-run); the continuous task runs end to end
on the demo's per-frame valence/arousal (setup demo_continuous).
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

from pipeline.devtools import commit, copy_project, run_timed, stages_run  # noqa: E402

EXPERIMENTS = [
    ("fusion=fbp", ["-S", "fusion=fbp"]),
    ("fusion=cross_attention", ["-S", "fusion=cross_attention"]),
    ("fusion=leader_follower", ["-S", "fusion=leader_follower"]),
    ("late_fusion.method=stacking", ["-S", "late_fusion.method=stacking"]),
    ("face head blstm", ["-S", "branches.face.head.type=blstm", "-S", "branches.face.head.options={}"]),
    ("prosody head lightgbm", ["-S", "~branches.prosody.head.options", "-S", "branches.prosody.head.type=lightgbm",
                               "-S", "cross_modal.branches=[face,voice]"]),
]


def metrics_line(root: Path) -> str:
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    key = "ccc_mean" if metrics.get("task") == "continuous" else "uar"
    cells = [f"{name} {report[key]:.3f}" for name, report in metrics["models"].items()]
    test = metrics.get("test", {})
    if test:
        cells.append("| test: " + " ".join(f"{name} {report[key]:.3f}" for name, report in test.items()))
    return f"{key}: " + "  ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="run in this (new) folder and keep it")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="aver-fusions-"))
    workdir.mkdir(parents=True, exist_ok=True)
    root = copy_project(REPO, workdir)
    print(f"project copy: {root}  (cores: {os.cpu_count()})", flush=True)

    start = time.perf_counter()
    run_timed(["dvc", "repro"], root)
    print(f"\n{'experiment':<32}{'seconds':>9}  re-ran / metrics")
    print(f"{'dvc repro (concat)':<32}{time.perf_counter() - start:>9.1f}  {metrics_line(root)}", flush=True)
    commit(root, "baseline")
    for label, overrides in EXPERIMENTS:
        start = time.perf_counter()
        output, _ = run_timed(["dvc", "exp", "run", *overrides], root)
        seconds = time.perf_counter() - start
        print(f"{label:<32}{seconds:>9.1f}  re-ran {sorted(stages_run(output))}")
        print(f"{'':<41} {metrics_line(root)}", flush=True)
        run_timed(["git", "checkout", "--", "params.yaml"], root)

    start = time.perf_counter()
    output, _ = run_timed([sys.executable, "-m", "pipeline.setups", "demo_continuous"], root)
    seconds = time.perf_counter() - start
    print(f"{'setup demo_continuous':<32}{seconds:>9.1f}  re-ran {sorted(stages_run(output))}")
    print(f"{'':<41} {metrics_line(root)}", flush=True)


if __name__ == "__main__":
    main()
