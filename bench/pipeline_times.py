"""Wall time of every stage of the demo pipeline, from a fresh copy of the project, and of
the fusion experiment after it.

    python bench/pipeline_times.py [--keep DIR]

Targets (issue 2): the whole `dvc repro` under 300 s on 2 cores; `dvc exp run -S fusion=fbp`
under 10 % of it, because it must reuse every cached feature.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.devtools import commit, copy_project, run_timed, stages_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="run in this (new) folder and keep it")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="aver-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    root = copy_project(REPO, workdir)
    print(f"project copy: {root}  (cores: {os.cpu_count()})")

    start = time.perf_counter()
    _, stage_times = run_timed(["dvc", "repro"], root)
    full = time.perf_counter() - start
    commit(root, "repro")
    print(f"\n{'stage':<22}{'seconds':>10}")
    for stage, seconds in stage_times.items():
        print(f"{stage:<22}{seconds:>10.1f}")
    print(f"{'dvc repro (total)':<22}{full:>10.1f}   target < 300")

    start = time.perf_counter()
    output, _ = run_timed(["dvc", "exp", "run", "-S", "fusion=fbp"], root)
    experiment = time.perf_counter() - start
    print(f"\ndvc exp run -S fusion=fbp: {experiment:.1f} s = {100 * experiment / full:.1f} % of the full repro (target < 10 %)")
    print(f"stages re-run: {sorted(stages_run(output))}")
    metrics, _ = run_timed(["dvc", "metrics", "show"], root)
    print(metrics)


if __name__ == "__main__":
    main()
