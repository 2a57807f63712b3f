"""Predict new videos with a trained experiment (see pipeline.inference)::

    python -m pipeline.predict clip.mp4 folder/ table.csv [--out predictions] [--window 2 --hop 0.5]

Writes, under --out: predictions.csv (one row per clip or bad input, with its reason),
timelines.parquet, plots/<clip>.png and, for the continuous task, predictions/<clip>.txt
(a valence,arousal line per video frame). Extraction logs go to <out>/extraction.log.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(prog="python -m pipeline.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="video or audio files, folders (one sub-folder per speaker), CSV tables")
    parser.add_argument("--out", type=Path, default=Path("predictions"), help="output folder (default: predictions)")
    parser.add_argument("--experiment", type=Path, default=Path("."), help="the trained project (default: the current folder)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="feature cache (default: $AVER_PREDICT_CACHE or ~/.cache/aver/predict/<experiment fingerprint>)")
    parser.add_argument("--window", type=float, default=2.0, help="timeline window, seconds (classification)")
    parser.add_argument("--hop", type=float, default=0.5, help="timeline hop, seconds (classification)")
    parser.add_argument("--no-plots", action="store_true", help="skip the per-clip PNGs")
    args = parser.parse_args(argv)
    if args.window <= 0 or args.hop <= 0:
        parser.error("--window and --hop must be positive")

    from pipeline.checkpoint import CheckpointError
    from pipeline.config import ParamsError
    from pipeline.inference import PredictError, Predictor

    try:
        predictor = Predictor.from_experiment(args.experiment, args.cache)
    except (PredictError, CheckpointError, ParamsError, FileNotFoundError, ValueError) as error:
        print(f"predict: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "extraction.log", "w") as log:
        result = predictor.predict(args.paths, args.window, args.hop, show_progress=True, log=log)
    dimensions = None if predictor.task.class_scores else predictor.task.dimensions
    result.save(args.out, dimensions, plots=not args.no_plots)
    rows = result.rows
    failed = rows[rows["reason"] != ""]
    print(f"predict: {len(rows) - len(failed)} of {len(rows)} inputs predicted in {time.perf_counter() - started:.1f} s -> {args.out / 'predictions.csv'}")
    for row in failed.itertuples():
        print(f"  not scored: {row.clip}: {row.reason}")
    partial = rows[(rows["reason"] == "") & (rows["missing"] != "")]
    for row in partial.itertuples():
        print(f"  {row.clip}: scored without {row.missing}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
