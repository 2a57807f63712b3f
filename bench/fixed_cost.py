"""The fixed cost of a stage run with nothing to extract, compared between project copies:

    python bench/fixed_cost.py DIR [DIR ...] [--extractor fer] [--runs 7]

Each DIR is a project copy whose stores are complete (e.g. the folders ``bench/scale.py --keep``
leaves, one made with ``--source`` pointing at an older commit); what each run still processed
is printed too (a version before lineage keys retries a clip that has nothing to extract). The faces stage and
``extract@<extractor>`` run in every copy in turn, ``--runs`` times, so that every copy sees
the same load; the medians of wall time and of CPU time (user + system of the stage process and
what it waited for) are printed per copy, with the load average. Target: at most 1.0 s each.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 1.0


def timed(root: Path, stage: list[str]) -> tuple[float, float, str]:
    """(wall s, CPU s, "N of M" clips it processed) of one ``python -m pipeline.stages.<stage>`` in ``root``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", f"pipeline.stages.{stage[0]}", *stage[1:]], cwd=root,
                            capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{root}: {' '.join(stage)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    processed = re.search(r"(\d+) of (\d+) clips to process", result.stdout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), processed.group(0) if processed else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("copies", nargs="+", type=Path)
    parser.add_argument("--extractor", default="fer")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    stages = {"faces": ["faces"], f"extract@{args.extractor}": ["extract", args.extractor]}
    figures: dict[tuple[Path, str], list[tuple[float, float, str]]] = {}
    loads = []
    for _ in range(args.runs):
        for root in args.copies:
            for name, stage in stages.items():
                figures.setdefault((root, name), []).append(timed(root, stage))
        loads.append(os.getloadavg()[0])
    print(f"no-op stage runs, median of {args.runs} (load average {min(loads):.1f}-{max(loads):.1f}; target <= {TARGET_S:.1f} s):")
    for (root, name), runs in figures.items():
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        print(f"  {str(root):<28} {name:<14} wall {wall:5.2f} s  CPU {cpu:5.2f} s  {'met' if wall <= TARGET_S else 'MISSED'}"
              f"  ({runs[-1][2]})")


if __name__ == "__main__":
    main()
