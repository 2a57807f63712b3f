"""Throughput of the visual front end on the CPU, part by part and as the faces + extract stages.

    python bench/visual_throughput.py [--fps 10] [--clips DIR] [--repeat 8]

On the MEAD clips (``$AVER_SHARED_DATA/mead-mini``, else ``../shared/data/mead-mini``) and on
two generated clips (480x360 and 1920x1080 h264 with a face), it prints

* PyAV decode-only frames/s per resolution (every frame decoded, none converted; one core),
* mediapipe-only frames/s: short-range face detection, the FaceMesh graph that also yields
  its detections (what FaceAnalyzer runs), and FaceAnalyzer end to end (mesh + alignment
  crops), on the sampled frames (one core),
* every registered face extractor's faces/s on the clips' aligned crops (one core, one torch
  thread; extractors whose weights are not installed are listed as skipped),
* the faces stage followed by the extract stage of every face extractor in params.yaml, each
  run as ``python -m pipeline.stages.<stage>`` on a MEAD manifest at ``--fps`` (interpreter
  start, imports and worker start-up included), with wall time, sampled frames/s and
  real-time factor (video seconds / wall seconds),
* the bound the parts set on 2 cores: decode (of every video frame per sampled frame) +
  FaceAnalyzer + the params extractors' CNNs per sampled frame, back to back with no other
  cost, spread over both cores; the stages' throughput as a fraction of it,
* with ``--repeat K``, the stages once more on K copies of the clips (new clip ids, same
  files): each stage process pays its start-up (interpreter, torch / mediapipe imports, model
  and graph building, ~2-4 s) once per run whatever the clip count, so this shows the
  throughput a larger corpus gets,
* peak resident memory of this process and of its worker processes.

Targets (issue 3): stages >= 0.8 of the 2-core bound, and >= 15x real time at fps 10 on MEAD.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.media import sample_frames  # noqa: E402
from pipeline.store import FeatureStore  # noqa: E402


def mead_dir(explicit: Path | None) -> Path:
    if explicit:
        return explicit
    shared = os.environ.get("AVER_SHARED_DATA")
    return Path(shared) / "mead-mini" if shared else REPO.parent / "shared" / "data" / "mead-mini"


def write_face_clip(path: Path, face_clip: Path, width: int, height: int, seconds: float = 2.0, fps: int = 25) -> Path:
    """An h264 clip at width x height: the frames of a MEAD clip scaled to half the frame
    height, drifting over a noisy grey scene."""
    with av.open(str(face_clip)) as source:
        faces = [frame.to_ndarray(format="rgb24") for frame in source.decode(video=0)]
    side = height // 2
    rng = np.random.default_rng(0)
    background = (rng.normal(110, 20, (height, width, 3))).clip(0, 255).astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(int(seconds * fps)):
            frame = background.copy()
            x = width // 3 + (i % 20)
            frame[height // 4 : height // 4 + side, x : x + side] = cv2.resize(faces[i % len(faces)], (side, side))
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def one_core() -> None:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import torch

    torch.set_num_threads(1)


def clock() -> np.ndarray:
    """(wall, CPU of this process) seconds."""
    return np.array([time.perf_counter(), time.process_time()])


def decode_fps(paths: list[Path]) -> tuple[np.ndarray, int, float]:
    """((frames per wall s, per CPU s), frames, video seconds): decode every frame, convert none, one thread."""
    frames, seconds, start = 0, 0.0, clock()
    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "SLICE"
            stream.thread_count = 1
            for frame in container.decode(stream):
                frames += 1
            seconds += float(stream.duration * stream.time_base) if stream.duration else frames / 25
    return frames / (clock() - start), frames, seconds


def timed_per_frame(function, frames: list[np.ndarray], warmup: int = 3) -> np.ndarray:
    for frame in frames[:warmup]:
        function(frame)
    start = clock()
    for frame in frames:
        function(frame)
    return len(frames) / (clock() - start)


def mediapipe_fps(frames: list[np.ndarray], large_crop: bool) -> dict[str, np.ndarray]:
    import mediapipe as mp

    from pipeline.faces import FaceAnalyzer
    from pipeline.faces.detect import _MeshWithDetections

    cv2.setNumThreads(1)
    results = {}
    with mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.5) as detector:
        results["detection (short-range)"] = timed_per_frame(lambda f: detector.process(f), frames)
    mesh = _MeshWithDetections(0.5, 3)
    results["face mesh graph (+ its detections)"] = timed_per_frame(mesh.detect, frames)
    mesh.close()
    with FaceAnalyzer(large_crop_size=224 if large_crop else 0) as analyzer:
        results[f"FaceAnalyzer (mesh + {'112/224/64' if large_crop else '112/64'} crops)"] = timed_per_frame(analyzer.analyze_faces, frames)
    return results


def sampled(paths: list[Path], fps: float) -> list[np.ndarray]:
    return [np.ascontiguousarray(frame) for path in paths for _, frame in sample_frames(path, fps)]


def extractor_rates(faces_root: Path, clip_ids: list[str], names: list[str]) -> dict[str, tuple[np.ndarray, str]]:
    """Registered face extractor -> (faces/s, note), one torch thread."""
    from pipeline.extractors import EXTRACTORS

    store = FeatureStore(faces_root)
    rates = {}
    for name in names:
        try:
            cls = EXTRACTORS.get(name)
            extractor = cls(EXTRACTORS.config(name, {}, name), "cpu", 64)
        except Exception as error:  # noqa: BLE001 (weights not installed, etc.)
            rates[name] = (np.full(2, np.nan), f"skipped: {type(error).__name__}: {str(error)[:90]}")
            continue
        keys = cls.input_keys_for({}) if hasattr(cls, "input_keys_for") else cls.input_keys
        entries = [store.read(c, keys) for c in clip_ids]
        faces = sum(int(e.arrays["mask"].sum()) for e in entries if "mask" in e.arrays)
        extractor.extract(entries[0])  # warm-up (lazy init, oneDNN kernels)
        start = clock()
        for entry in entries:
            extractor.extract(entry)
        rates[name] = (faces / (clock() - start), f"{faces} faces")
    return rates


# Per-frame profile categories: (file name suffix, function) whose cumulative times add up,
# none nested in another.
PROFILE_PARTS = {
    "decode + RGB conversion (PyAV)": [("pipeline/media/__init__.py", "sample_frames")],
    "mediapipe graph (incl. its output protos)": [("pipeline/faces/detect.py", "_run"), ("solution_base.py", "process")],
    "graph outputs to arrays, face choice": [("pipeline/faces/detect.py", "_detections_px"),
                                             ("pipeline/faces/detect.py", "_landmarks_px"),
                                             ("pipeline/faces/detect.py", "_mesh_for")],
    "alignment: fit, warps, gray conversion": [("pipeline/faces/detect.py", "_observation")],
    "tracking": [("pipeline/faces/track.py", "link_tracks"), ("pipeline/faces/track.py", "rank_tracks")],
    "store arrays (clip_arrays less tracking)": [("pipeline/faces/clip.py", "clip_arrays")],
    "HDF5 write": [("pipeline/store/__init__.py", "write")],
}


def profile_faces(processor, clips: list[Path], top: int = 0) -> tuple[int, dict[str, float], str]:
    """cProfile of ``processor`` (a FaceClipProcessor) on ``clips`` in this process, decoding in
    this thread (the stage reads ahead in a second one, which cProfile does not see): (sampled
    frames, CPU seconds per PROFILE_PARTS category plus "other", the ``top`` functions by own
    time). The clock is the process's CPU time, which counts mediapipe's own graph threads
    (the caller waits for them) and not the time other processes on the machine take."""
    import cProfile
    import io
    import pstats

    import pipeline.extraction
    from pipeline.extraction import ClipJob

    processor.warm_up()
    processor(ClipJob("warm-up", str(clips[0])))
    reading_ahead = pipeline.extraction.read_ahead
    pipeline.extraction.read_ahead = iter
    profile, frames = cProfile.Profile(time.process_time), 0
    try:
        profile.enable()
        for i, clip in enumerate(clips):
            frames += processor(ClipJob(f"profiled-{i}", str(clip))).frames
        profile.disable()
    finally:
        pipeline.extraction.read_ahead = reading_ahead
    stats = pstats.Stats(profile)

    def cumulative(file_suffix: str, function: str) -> float:
        return sum(row[3] for (file, _, name), row in stats.stats.items() if file.endswith(file_suffix) and name == function)

    parts = {part: sum(cumulative(*where) for where in places) for part, places in PROFILE_PARTS.items()}
    parts["store arrays (clip_arrays less tracking)"] -= parts["tracking"]
    total = cumulative("pipeline/extraction.py", "__call__")
    parts["other (processor loop, attrs, ...)"] = total - sum(parts.values())
    text = io.StringIO()
    if top:
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(top)
    return frames, parts, text.getvalue()


def print_profile(label: str, frames: int, parts: dict[str, float]) -> None:
    total = sum(parts.values())
    print(f"  {label}: {1000 * total / frames:.2f} CPU-ms per sampled frame ({frames} frames, profiled)")
    for part, seconds in parts.items():
        print(f"    {part:<44}{1000 * seconds / frames:>7.3f} ms  {100 * seconds / total:>5.1f} %")


def repeated_clips(mead: list[Path], copies: int, folder: Path) -> Path:
    """``copies`` links to every MEAD clip under new MEAD names (the take gets an ``r<k>`` suffix)."""
    folder.mkdir(parents=True, exist_ok=True)
    for copy in range(copies):
        for clip in mead:
            (folder / f"{clip.stem}r{copy}{clip.suffix}").symlink_to(clip.resolve())
    return folder


def run_stages(mead: Path, fps: float, workdir: Path) -> dict:
    """The faces stage, then the extract stage of every face extractor in params.yaml, each as
    its own ``python -m pipeline.stages.<stage>`` process (interpreter start, imports and worker
    start-up included, DVC's own overhead not), on a MEAD manifest with ``faces.fps`` = fps."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update({"dataset": "mead", "root": str(mead), "options": {}, "label_map": {},
                           "labels": ["angry", "contempt", "disgusted", "fear", "happy", "neutral", "sad", "surprised"]})
    params["faces"]["fps"] = fps
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def stage(*args: str) -> np.ndarray:
        """(wall, CPU of the stage process and its workers) seconds."""
        start = np.array([time.perf_counter(), children_cpu()])
        subprocess.run([sys.executable, "-m", *args], cwd=workdir, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return np.array([time.perf_counter(), children_cpu()]) - start

    stage("pipeline.stages.manifest")
    faces_seconds = stage("pipeline.stages.faces")
    face_extractors = {name: spec for name, spec in params["extractors"].items() if spec["input"] == "faces"}
    extract_seconds = {name: stage("pipeline.stages.extract", name) for name in face_extractors}
    report = pd.read_csv(workdir / "features/faces/report.csv")
    return {
        "clip_ids": report["clip_id"].tolist(),
        "frames": int(report["frames"].sum()),
        "detected": int(report["detected_frames"].sum()),
        "faces_seconds": faces_seconds,
        "extract_seconds": extract_seconds,
        "faces_workers": params["faces"].get("workers", 1),
        "crop_rgb_224": bool(params["faces"].get("crop_rgb_224", False)),
        "extractor_types": {name: spec["type"] for name, spec in face_extractors.items()},
    }


def report_stages(stages: dict, copies: int, video_seconds: float, per_sample: np.ndarray, bound: np.ndarray) -> None:
    """Wall time, real-time factor and share of the 2-core bound of one run of the stages."""
    frames, clips = stages["frames"], len(stages["clip_ids"])
    stage_seconds = stages["faces_seconds"] + sum(stages["extract_seconds"].values())
    throughput = frames / stage_seconds[0]
    copies_note = f"{copies} copies of the clips, " if copies > 1 else ""
    print(f"\nfaces + extract stages on {clips} clips ({copies_note}{video_seconds:.1f} s of video, {frames} sampled frames, "
          f"{stages['detected']} with a face; faces workers {stages['faces_workers']}), each stage its own process")
    print(f"  faces stage      {stages['faces_seconds'][0]:>7.2f} s  (CPU {stages['faces_seconds'][1]:.2f} s)")
    for name, seconds in stages["extract_seconds"].items():
        print(f"  extract@{name:<8} {seconds[0]:>7.2f} s  (CPU {seconds[1]:.2f} s)")
    print(f"  together         {stage_seconds[0]:>7.2f} s  (CPU {stage_seconds[1]:.2f} s) = {throughput:.0f} sampled frames/s, "
          f"{video_seconds / stage_seconds[0]:.1f}x real time (target >= 15x)")
    print(f"  stages / bound = {throughput / bound[0]:.2f} (target >= 0.8)")
    parts_cpu = frames * per_sample[1]
    print(f"  CPU view: the parts need {parts_cpu:.1f} CPU-s for these frames, the stages used {stage_seconds[1]:.1f} CPU-s "
          f"({parts_cpu / stage_seconds[1]:.2f} of it is decode + mediapipe + CNN; the rest is start-up, imports, "
          f"alignment, storage); at full use of 2 cores that is {frames / (stage_seconds[1] / 2):.0f} sampled frames/s, "
          f"{video_seconds / (stage_seconds[1] / 2):.1f}x real time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fps", type=float, default=10.0, help="faces.fps for the sampled frames and the stages")
    parser.add_argument("--clips", type=Path, help="folder of MEAD .mp4 clips")
    parser.add_argument("--repeat", type=int, default=1, help="also run the stages on this many copies of the clips")
    args = parser.parse_args()
    mead = sorted(mead_dir(args.clips).glob("*.mp4"))
    if not mead:
        raise SystemExit(f"no MEAD clips in {mead_dir(args.clips)} (set AVER_SHARED_DATA)")
    workdir = Path(tempfile.mkdtemp(prefix="aver-visual-"))
    generated = {
        "480x360": [write_face_clip(workdir / "g480.mp4", mead[0], 480, 360)],
        "1920x1080": [write_face_clip(workdir / "g1080.mp4", mead[0], 1920, 1080)],
    }
    cores = len(os.sched_getaffinity(0))
    print(f"cores: {cores}; MEAD clips: {len(mead)} ({mead[0].parent}); sampling at {args.fps:g} fps; "
          f"load average before: {os.getloadavg()[0]:.2f} (other processes share these cores)\n")

    # -- the whole stages first (they use every core) --------------------------------------
    stages = run_stages(mead[0].parent.resolve(), args.fps, workdir / "project")
    _, _, video_seconds = decode_fps(mead)
    repeated = None
    if args.repeat > 1:
        repeated = run_stages(repeated_clips(mead, args.repeat, workdir / "repeated"), args.fps, workdir / "project-repeated")
    children_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    # -- parts, one core ---------------------------------------------------------------------
    one_core()
    print("decode only (PyAV, every frame, no conversion, 1 thread)")
    decode = {}
    for label, paths in [("256x256 (MEAD)", mead), *generated.items()]:
        rate, frames, _ = decode_fps(paths)
        decode[label] = rate
        print(f"  {label:<16}{rate[0]:>9.0f} frames/s  ({rate[1]:.0f} per CPU-second; {frames} frames)")

    print("\nmediapipe only, on the sampled frames (1 core)")
    mp_rates = {}
    for label, paths in [("256x256 (MEAD)", mead), *generated.items()]:
        frames = sampled(paths, args.fps)
        for part, rate in mediapipe_fps(frames, stages["crop_rgb_224"]).items():
            mp_rates[(label, part)] = rate
            print(f"  {label:<16}{part:<40}{rate[0]:>8.0f} frames/s  ({rate[1]:.0f} per CPU-second)")

    from pipeline.extractors import EXTRACTORS

    face_extractors = [n for n in EXTRACTORS.names() if EXTRACTORS.get(n).input == "faces"]
    clip_ids = stages["clip_ids"]
    print("\nface extractors (registered now; 1 core, 1 torch thread, batch 64)")
    rates = extractor_rates(workdir / "project" / "features" / "faces", clip_ids, face_extractors)
    for name, (rate, note) in rates.items():
        print(f"  {name:<28}{rate[0]:>9.0f} faces/s  ({rate[1]:.0f} per CPU-second; {note})")

    # -- bound and stages --------------------------------------------------------------------
    # Index 0: wall-clock figures (what the issue asks for); index 1: CPU-time figures, which
    # other processes on the machine disturb far less.
    frames, detected = stages["frames"], stages["detected"]
    video_frames_per_sample = decode_fps(mead)[1] / frames
    analyzer_rate = mp_rates[("256x256 (MEAD)", "face mesh graph (+ its detections)")]  # mediapipe only
    per_sample = video_frames_per_sample / decode["256x256 (MEAD)"] + 1 / analyzer_rate
    for name, kind in stages["extractor_types"].items():
        rate = rates.get(kind, (np.full(2, np.nan), ""))[0]
        if np.isfinite(rate).all():
            per_sample = per_sample + (detected / frames) / rate
    bound = 2 / per_sample
    print(f"\n2-core bound: decode {video_frames_per_sample:.2f} video frames + mediapipe (detection + mesh) + the CNN(s) "
          f"per sampled frame = {1000 * per_sample[0]:.2f} ms on one core -> {bound[0]:.0f} sampled frames/s on 2 cores")
    report_stages(stages, 1, video_seconds, per_sample, bound)
    if repeated:
        report_stages(repeated, args.repeat, video_seconds * args.repeat, per_sample, bound)
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"\npeak memory: this process {self_peak:.0f} MiB, largest worker process {children_peak:.0f} MiB")


if __name__ == "__main__":
    main()
