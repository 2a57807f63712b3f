"""Prediction speed (issue 16): a trained experiment applied to new 4 s demo clips.

    python bench/predict.py [--experiment DIR] [--clips 100] [--keep DIR]

Without --experiment, the tiny demo experiment of tests/test_predict.py (face geometry,
coarse log-Mel, stats heads) is trained first on a small demo set. The new clips are a demo
set of another seed, every clip 4 s. Prints:

- cold latency: `python -m pipeline.predict clip.mp4` from process start to predictions.csv
  (a fresh cache: every import, every model and the extraction of the clip). Target <= 5 s;
- warm API latency per 4 s clip: Predictor.from_experiment loaded once, each call on a new,
  uncached clip. Target <= 0.5 s;
- clips per second for --clips clips in one call (fresh cache), against the faces, audio and
  extract stages' library chains on the same clips into a fresh store root (what the
  pipeline's extraction costs for them);
- the load average before and after.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.devtools import commit, copy_project, run, tiny_experiment_params  # noqa: E402


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def train_tiny(workdir: Path) -> Path:
    import yaml

    from pipeline.datasets.demo.generator import generate
    from pipeline.datasets.demo.spec import DemoSpec

    corpus = workdir / "corpus"
    generate(corpus, DemoSpec(identities=4, emotions=["happy", "sad"], takes=2, min_duration_s=2.0, max_duration_s=4.0, bad_clips=False))
    root = copy_project(REPO, workdir / "project")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_experiment_params(REPO, corpus, test_groups=["spk03"], speaker_standardization=True), sort_keys=False))
    commit(root, "tiny experiment")
    run(["dvc", "repro", "late_fusion"], root)
    return root


def new_clips(folder: Path, count: int) -> list[Path]:
    from pipeline.datasets.demo.generator import generate
    from pipeline.datasets.demo.spec import DemoSpec

    existing = sorted((folder / "clips").glob("*.mp4"))
    if len(existing) >= count:  # a kept folder from an earlier run
        return existing[:count]
    emotions = ["neutral", "happy", "sad", "angry", "fear"]
    identities = max(1, -(-count // (len(emotions) * 2)))
    generate(folder, DemoSpec(seed=7, identities=max(identities, 4), emotions=emotions, takes=2, min_duration_s=4.0,
                              max_duration_s=4.0, bad_clips=False))
    return sorted((folder / "clips").glob("*.mp4"))[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", type=Path, help="a trained project (default: train the tiny demo experiment)")
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--warm-clips", type=int, default=8)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="aver-predict-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {load()}  (cores: {os.cpu_count()})")
    experiment = args.experiment or train_tiny(workdir / "experiment")
    clips = new_clips(workdir / "new", args.clips + 2 * args.warm_clips + 2)
    print(f"experiment: {experiment}; {len(clips)} new 4 s clips")

    # Cold: a new process, a fresh cache.
    out, cache = workdir / "cold", workdir / "cold_cache"
    started = time.time()
    subprocess.run([sys.executable, "-m", "pipeline.predict", str(clips[0]), "--experiment", str(experiment), "--out", str(out),
                    "--cache", str(cache)], cwd=REPO, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    cold = (out / "predictions.csv").stat().st_mtime - started
    print(f"cold latency, one 4 s clip, process start to predictions.csv: {cold:.2f} s (target <= 5 s)")

    from pipeline.inference import Predictor

    started = time.perf_counter()
    predictor = Predictor.from_experiment(experiment, workdir / "warm_cache")
    print(f"Predictor.from_experiment: {time.perf_counter() - started:.2f} s (in a process that imported nothing before)")
    with open(os.devnull, "w") as log:
        predictor.predict(clips[1], log=log)  # the first call builds mediapipe's graphs and the extractors
        for timelines in (False, True):
            times = []
            for clip in clips[2 : 2 + args.warm_clips] if not timelines else clips[-args.warm_clips:]:
                started = time.perf_counter()
                predictor.predict(clip, log=log, timelines=timelines)
                times.append(time.perf_counter() - started)
            what = "predictor(clip): rows only" if not timelines else "predictor.predict(clip): rows and 2 s / 0.5 s timelines"
            print(f"warm API latency per new 4 s clip, {what}: mean {sum(times) / len(times):.3f} s, max {max(times):.3f} s "
                  f"over {len(times)} clips (target <= 0.5 s)")

    batch = clips[2 + args.warm_clips : 2 + args.warm_clips + args.clips]
    folder = workdir / "batch"
    folder.mkdir(exist_ok=True)
    for clip in batch:
        target = folder / clip.name
        if not target.exists():
            target.symlink_to(clip)
    batch_predictor = Predictor(predictor.root, predictor.params, predictor.members, predictor.late, workdir / "batch_cache")
    started = time.perf_counter()
    with open(workdir / "batch.log", "w") as log:
        result = batch_predictor.predict(folder, log=log)
    seconds = time.perf_counter() - started
    scored = int((result.rows["reason"] == "").sum())
    print(f"predict {len(batch)} clips in one call: {seconds:.1f} s, {len(batch) / seconds:.2f} clips/s ({scored} scored)")

    from pipeline.datasets.manifest import clip_media
    from pipeline.extraction import extract_audio, extract_faces, extract_features
    import pandas as pd

    params = predictor.params
    manifest = pd.DataFrame([{"clip_id": c.stem, "path": str(c), "audio_path": "", **clip_media(str(c), "")[0]} for c in batch])
    root = workdir / "stages_features"
    started = time.perf_counter()
    with open(workdir / "stages.log", "w") as log, contextlib.redirect_stdout(log):
        if "faces" in predictor.inputs:
            extract_faces(params.faces, manifest, root / "faces")
        if "audio" in predictor.inputs:
            extract_audio(params.audio, manifest, root / "audio")
        for name in predictor.stores:
            extract_features(name, params.extractors[name], manifest, root)
    stages = time.perf_counter() - started
    print(f"faces + audio + extract stages' chains on the same {len(batch)} clips (params' workers): {stages:.1f} s, "
          f"{len(batch) / stages:.2f} clips/s; prediction costs {seconds / stages:.2f}x the extraction")
    print(f"load average at end: {load()}")


if __name__ == "__main__":
    main()
