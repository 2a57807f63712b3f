"""Peak memory of cross-validating a branch when one clip is much longer than the others
(issue 14: one 3-minute clip lifted train@voice to 1.9 GB).

    python bench/training_memory.py [--clips 127] [--long-s 180] [--epochs 3] [--max-clip-s 30]

Generates log-Mel-sized features (64 per frame, 100 frames per second) for ``--clips`` clips
of 2-4 s from 6 speakers plus one clip of ``--long-s`` seconds, and cross-validates the
demo's voice branch on them (TCN, 48 channels, 4 levels, pool 4; batch 32; 2 fold workers,
leave one speaker out). Prints the peak resident memory of this process and of the largest
fold worker, and the wall time. ``--max-clip-s 0`` trains on whole clips.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import TrainParams  # noqa: E402
from pipeline.models import ModelSpec, branch_spec  # noqa: E402
from pipeline.tasks.classification import ClassificationTask  # noqa: E402
from pipeline.training import cross_validate  # noqa: E402

CLASSES = ["neutral", "happy", "sad", "angry", "fear", "disgust", "surprise"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=127)
    parser.add_argument("--long-s", type=float, default=180.0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-clip-s", type=float, default=30.0)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    lengths = {f"clip{i:03d}": int(rng.integers(200, 400)) for i in range(args.clips)} | {"long": int(args.long_s * 100)}
    sequences = {c: (rng.normal(size=(n, 64)).astype(np.float32), np.ones(n, bool), np.arange(n) / 100.0) for c, n in lengths.items()}
    clips = pd.DataFrame({"clip_id": list(lengths), "label": [CLASSES[i % 7] for i in range(len(lengths))],
                          "speaker": [f"spk{i % 6}" for i in range(len(lengths))], "fold": [i % 6 for i in range(len(lengths))]})
    spec = ModelSpec([branch_spec("voice", "tcn", {"channels": 48, "levels": 4, "kernel_size": 3, "pool": 4}, 64)], len(CLASSES))
    params = replace(TrainParams(), epochs=args.epochs, patience=args.epochs, batch_size=32, workers=2, max_clip_s=args.max_clip_s)
    features_mb = sum(s[0].nbytes for s in sequences.values()) / 2**20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    cross_validate(spec, {"voice": sequences}, clips, ClassificationTask(ClassificationTask.Config(CLASSES)), params)
    seconds = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"{len(lengths)} clips ({args.long_s:.0f} s longest), features {features_mb:.0f} MB, max_clip_s {args.max_clip_s:g}, "
          f"{args.epochs} epochs x 6 folds")
    print(f"peak RSS: main process {own:.0f} MB (before training {before:.0f} MB), largest fold worker {worker:.0f} MB; {seconds:.0f} s")


if __name__ == "__main__":
    main()
