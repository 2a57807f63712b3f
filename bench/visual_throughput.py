"""Throughput of the visual front end on the CPU: faces.landmarks mesh and keypoints side by side.

    python bench/visual_throughput.py [--fps 10] [--clips DIR] [--repeat 8] [--rounds 2]

On the MEAD clips (``$AVER_SHARED_DATA/mead-mini``, else ``../shared/data/mead-mini``) and on
two generated clips (480x360 and 1920x1080 h264 with a face), it prints

* the faces stage followed by the extract stage of every face extractor in params.yaml, each
  run as ``python -m pipeline.stages.<stage>`` on a MEAD manifest at ``--fps`` (interpreter
  start, imports and worker start-up included), once with ``faces.landmarks: mesh`` and once
  with ``keypoints`` (everything else as params.yaml has it): wall and CPU time, sampled
  frames/s, real-time factor (video seconds / wall seconds), the load average around each run
  (other processes share the cores) and each stage's peak resident memory (its process and
  workers);
* with ``--repeat K``, the same on K copies of the clips (new clip ids, same files), ``--rounds``
  times per mode in the order mesh, keypoints, keypoints, mesh, ... so that a change in the
  machine's speed hits both; each stage process pays its start-up (~2-4 s) once per run
  whatever the clip count, so this shows what a larger corpus gets. The summary takes each
  mode's fastest round;
* PyAV decode-only frames/s per resolution (every frame decoded, none converted; one core);
* mediapipe-only frames/s on the sampled frames (one core): the short-range detector (as
  FaceDetection.process and as the faces stage runs it), the face mesh graph that also yields
  its detections, and FaceAnalyzer end to end in both modes;
* every registered face extractor's faces/s on the clips' aligned crops (one core, one torch
  thread; on CUDA too when there is a GPU; extractors whose weights are not installed are
  listed as skipped);
* the 2-core bound each mode's parts set: decode (every video frame per sampled frame) + the
  mediapipe graph it runs (mesh graph, or short-range detector) + the params extractors' CNNs
  per sampled frame, back to back with no other cost, spread over both cores; the stages'
  throughput as a fraction of it, and keypoints' throughput over mesh's;
* a cProfile per-frame breakdown of the faces stage's per-clip work in both modes (one core);
* crop agreement on these clips: where the mesh's five points land in the keypoint-aligned
  crop versus the mesh-aligned one, over the inter-ocular distance (bench/face_alignment.py);
* peak memory at K copies over the 1-copy run, per stage and mode.

Targets (issue 18, --repeat 8): mesh >= 0.8 of its 2-core bound; keypoints >= 0.8 of its own
bound and >= 1.8x mesh's throughput; peak memory unchanged at 8x the clips.
"""
from __future__ import annotations

import argparse
import os
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

MODES = ("mesh", "keypoints")


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
    from pipeline.faces.detect import _FaceDetector, _MeshWithDetections

    cv2.setNumThreads(1)
    results = {}
    with mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.5) as detector:
        results["detection, FaceDetection.process"] = timed_per_frame(lambda f: detector.process(f), frames)
    for label, graph in [("short-range detector graph", _FaceDetector("short", 0.5)),
                         ("face mesh graph (+ its detections)", _MeshWithDetections(0.5, 3))]:
        results[label] = timed_per_frame(graph.detect, frames)
        graph.close()
    crops = "112/224/64" if large_crop else "64"
    for mode in MODES:
        with FaceAnalyzer(crop_size=112 if large_crop else 0, large_crop_size=224 if large_crop else 0, landmarks=mode) as analyzer:
            results[f"FaceAnalyzer {mode} + {crops} crops"] = timed_per_frame(analyzer.analyze_faces, frames)
    return results


# The graph each faces.landmarks mode runs, as mediapipe_fps names it.
GRAPH_OF_MODE = {"mesh": "face mesh graph (+ its detections)", "keypoints": "short-range detector graph"}


def sampled(paths: list[Path], fps: float) -> list[np.ndarray]:
    return [np.ascontiguousarray(frame) for path in paths for _, frame in sample_frames(path, fps)]


def extractor_rates(faces_root: Path, clip_ids: list[str], names: list[str], device: str = "cpu") -> dict[str, tuple[np.ndarray, str]]:
    """Registered face extractor -> (faces/s, note), one torch thread on the CPU."""
    from pipeline.extractors import EXTRACTORS

    store = FeatureStore(faces_root)
    rates = {}
    for name in names:
        try:
            cls = EXTRACTORS.get(name)
            extractor = cls(EXTRACTORS.config(name, {}, name), device, 64)
        except Exception as error:  # noqa: BLE001 (weights not installed, etc.)
            rates[name] = (np.full(2, np.nan), f"skipped: {type(error).__name__}: {str(error)[:90]}")
            continue
        keys = cls.input_keys_for({}) if hasattr(cls, "input_keys_for") else cls.input_keys
        entries = [store.read(c, keys) for c in clip_ids]
        faces = sum(int(e.arrays["mask"].sum()) for e in entries if "mask" in e.arrays)
        extractor.extract(entries[0])  # warm-up (lazy init, oneDNN kernels, CUDA context)
        start = clock()
        for entry in entries:
            extractor.extract(entry)
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        rates[name] = (faces / (clock() - start), f"{faces} faces")
    return rates


def all_crops_store(mead: list[Path], fps: float, root: Path) -> list[str]:
    """A mesh faces store of the clips with every crop (what any face extractor may read), made
    in this process; its clip ids."""
    from pipeline.extraction import ClipJob, FaceClipProcessor

    processor = FaceClipProcessor(str(root), {"bench": "all crops"}, fps, 0.5, 112, 64, "auto", crop_rgb_224=True)
    clip_ids = [clip.stem for clip in mead]
    for clip_id, clip in zip(clip_ids, mead):
        processor(ClipJob(clip_id, str(clip)))
    processor.close()
    return clip_ids


# Per-frame profile categories: (file name suffix, function) whose cumulative times add up,
# none nested in another.
PROFILE_PARTS = {
    "decode + RGB conversion (PyAV)": [("pipeline/media/__init__.py", "sample_frames")],
    # Before f378307 the graph run (_run) also turned its outputs into Python protos.
    "mediapipe graph run": [("pipeline/faces/detect.py", "_run"), ("solution_base.py", "process")],
    "graph outputs: protos, arrays, face choice": [("pipeline/faces/detect.py", name) for name in (
        "_protos", "_serialized_landmarks", "_detections_px", "_landmarks_px", "_mesh_for", "_centroids", "_by_priority")],
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


# Runs the command given after it and writes the resources of the command's process tree
# (RUSAGE_CHILDREN: every process it and its workers waited for) to the file named first.
# A small launcher in between because a child's peak RSS counts the memory of the process it
# was forked from until it execs: measured straight from the bench, every stage would report
# at least the bench's own size.
_LAUNCHER = """
import json, resource, subprocess, sys
returncode = subprocess.call(sys.argv[2:])
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as out:
    json.dump({"returncode": returncode, "cpu": usage.ru_utime + usage.ru_stime, "peak_mib": usage.ru_maxrss / 1024}, out)
"""


def timed_process(command: list[str], cwd: Path, env: dict[str, str]) -> dict[str, float]:
    """Run ``command``; its wall and CPU seconds (process and every worker it waited for), peak
    resident MiB of the largest process of that tree, and the 1-minute load average before and after."""
    import json

    load_before = os.getloadavg()[0]
    with tempfile.NamedTemporaryFile(suffix=".json") as usage_file:
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", _LAUNCHER, usage_file.name, *command], cwd=cwd, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wall = time.perf_counter() - start
        usage = json.loads(Path(usage_file.name).read_text() or "{}")
    if result.returncode != 0 or usage.get("returncode") != 0:
        raise RuntimeError(f"{' '.join(command)} failed in {cwd}:\n{result.stderr.decode(errors='replace')[-3000:]}")
    return {"wall": wall, "cpu": usage["cpu"], "peak_mib": usage["peak_mib"],
            "load_before": load_before, "load_after": os.getloadavg()[0]}


def run_stages(mead: Path, fps: float, landmarks: str, workdir: Path) -> dict:
    """The faces stage with ``faces.landmarks`` = landmarks, then the extract stage of every face
    extractor in params.yaml, each as its own ``python -m pipeline.stages.<stage>`` process
    (interpreter start, imports and worker start-up included, DVC's own overhead not), on a
    fresh MEAD project with ``faces.fps`` = fps."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update({"dataset": "mead", "root": str(mead), "options": {}, "label_map": {},
                           "labels": ["angry", "contempt", "disgusted", "fear", "happy", "neutral", "sad", "surprised"]})
    params["faces"].update({"fps": fps, "landmarks": landmarks})
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def stage(*args: str) -> dict[str, float]:
        return timed_process([sys.executable, "-m", *args], workdir, env)

    stage("pipeline.stages.manifest")
    faces = stage("pipeline.stages.faces")
    face_extractors = {name: spec for name, spec in params["extractors"].items() if spec["input"] == "faces"}
    extracts = {name: stage("pipeline.stages.extract", name) for name in face_extractors}
    report = pd.read_csv(workdir / "features/faces/report.csv")
    return {
        "landmarks": landmarks,
        "root": workdir,
        "clip_ids": report["clip_id"].tolist(),
        "frames": int(report["frames"].sum()),
        "detected": int(report["detected_frames"].sum()),
        "faces": faces,
        "extract": extracts,
        "faces_workers": params["faces"].get("workers", 1),
        "crop_rgb_224": bool(params["faces"].get("crop_rgb_224", False)),
        "extractor_types": {name: spec["type"] for name, spec in face_extractors.items()},
    }


def stage_total(stages: dict) -> dict[str, float]:
    runs = [stages["faces"], *stages["extract"].values()]
    return {"wall": sum(r["wall"] for r in runs), "cpu": sum(r["cpu"] for r in runs),
            "load": max(max(r["load_before"], r["load_after"]) for r in runs)}


def report_stages(stages: dict, video_seconds: float, bound: float, per_sample_cpu: float) -> float:
    """Print one run of the stages; returns its sampled frames/s. The CPU view compares CPU
    seconds (which other processes on the machine disturb far less than wall time): what the
    parts need for these frames over what the stages used."""
    frames, total = stages["frames"], stage_total(stages)
    throughput = frames / total["wall"]
    print(f"  landmarks: {stages['landmarks']:<10}{len(stages['clip_ids'])} clips, {frames} sampled frames, "
          f"{stages['detected']} with a face")
    for name, run in [("faces stage", stages["faces"]), *((f"extract@{n}", r) for n, r in stages["extract"].items())]:
        print(f"    {name:<16}{run['wall']:>7.2f} s  (CPU {run['cpu']:>6.2f} s, peak {run['peak_mib']:>5.0f} MiB, "
              f"load {run['load_before']:.2f} -> {run['load_after']:.2f})")
    print(f"    together        {total['wall']:>7.2f} s  (CPU {total['cpu']:.2f} s) = {throughput:.0f} sampled frames/s, "
          f"{video_seconds / total['wall']:.1f}x real time, {throughput / bound:.2f} of its 2-core bound")
    print(f"    CPU view        the parts need {frames * per_sample_cpu:.1f} CPU-s, the stages used {total['cpu']:.1f} "
          f"({frames * per_sample_cpu / total['cpu']:.2f}); at full use of 2 cores: {2 * frames / total['cpu']:.0f} sampled frames/s")
    return throughput


def per_sample_seconds(mode: str, frames: int, detected: int, video_frames: int, decode: np.ndarray,
                       mp_rates: dict, rates: dict, extractor_types: dict[str, str]) -> np.ndarray:
    """(wall, CPU) seconds on one core that decode + the mode's graph + the CNNs need per sampled frame."""
    per_sample = (video_frames / frames) / decode + 1 / mp_rates[("256x256 (MEAD)", GRAPH_OF_MODE[mode])]
    for kind in extractor_types.values():
        rate = rates.get(kind, (np.full(2, np.nan), ""))[0]
        if np.isfinite(rate).all():
            per_sample = per_sample + (detected / frames) / rate
    return per_sample


def crop_agreement_of_store(root: Path, clip_ids: list[str]) -> np.ndarray:
    sys.path.insert(0, str(REPO / "bench"))
    from face_alignment import crop_agreement

    store = FeatureStore(root)
    values = []
    for clip_id in clip_ids:
        arrays = store.read(clip_id, ["landmarks", "keypoints", "mask"]).arrays
        visible = arrays["mask"].astype(bool)
        values.append(crop_agreement(arrays["landmarks"][visible], arrays["keypoints"][visible]))
    return np.concatenate(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fps", type=float, default=10.0, help="faces.fps for the sampled frames and the stages")
    parser.add_argument("--clips", type=Path, help="folder of MEAD .mp4 clips")
    parser.add_argument("--repeat", type=int, default=1, help="also run the stages on this many copies of the clips")
    parser.add_argument("--rounds", type=int, default=2, help="runs per mode on the copies (alternating modes)")
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
          f"load average before: {os.getloadavg()[0]:.2f} (other processes share these cores)")
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    except ImportError:
        gpu = ""
    print(f"GPU: {gpu or 'none (torch.cuda.is_available() is false): the extractors run on the CPU, CUDA figures not measured'}")

    # -- the whole stages first (they use every core) ---------------------------------------
    _, video_frames, video_seconds = decode_fps(mead)
    single = {mode: run_stages(mead[0].parent.resolve(), args.fps, mode, workdir / f"project-{mode}") for mode in MODES}
    repeated: dict[str, list[dict]] = {mode: [] for mode in MODES}
    if args.repeat > 1:
        copies = repeated_clips(mead, args.repeat, workdir / "repeated")
        order = [mode for round_ in range(args.rounds) for mode in (MODES if round_ % 2 == 0 else MODES[::-1])]
        for i, mode in enumerate(order):
            repeated[mode].append(run_stages(copies, args.fps, mode, workdir / f"project-repeated-{i}-{mode}"))

    # -- parts, one core ---------------------------------------------------------------------
    one_core()
    print("\ndecode only (PyAV, every frame, no conversion, 1 thread)")
    decode = {}
    for label, paths in [("256x256 (MEAD)", mead), *generated.items()]:
        rate, frames, _ = decode_fps(paths)
        decode[label] = rate
        print(f"  {label:<16}{rate[0]:>9.0f} frames/s  ({rate[1]:.0f} per CPU-second; {frames} frames)")

    print("\nmediapipe only, on the sampled frames (1 core)")
    mp_rates = {}
    for label, paths in [("256x256 (MEAD)", mead), *generated.items()]:
        frames = sampled(paths, args.fps)
        for part, rate in mediapipe_fps(frames, single["mesh"]["crop_rgb_224"]).items():
            mp_rates[(label, part)] = rate
            print(f"  {label:<16}{part:<40}{rate[0]:>8.0f} frames/s  ({rate[1]:.0f} per CPU-second)")

    from pipeline.extractors import EXTRACTORS

    face_extractors = [n for n in EXTRACTORS.names() if EXTRACTORS.get(n).input == "faces"]
    all_crops = workdir / "all-crops"
    clip_ids = all_crops_store(mead, args.fps, all_crops)
    print("\nface extractors (registered now; 1 core, 1 torch thread, batch 64; on a mesh store with every crop)")
    rates = extractor_rates(all_crops, clip_ids, face_extractors)
    for name, (rate, note) in rates.items():
        print(f"  {name:<28}{rate[0]:>9.0f} faces/s  ({rate[1]:.0f} per CPU-second; {note})")
    if gpu:
        print(f"\nface extractors on {gpu} (batch 64, autocast)")
        for name, (rate, note) in extractor_rates(all_crops, clip_ids, face_extractors, "cuda").items():
            print(f"  {name:<28}{rate[0]:>9.0f} faces/s  ({note})")

    print("\nper-frame profile of the faces stage's clip work (cProfile, 1 core, params.yaml's crops)")
    from pipeline.extraction import FaceClipProcessor, decoder_threads

    faces_params = yaml.safe_load((REPO / "params.yaml").read_text())["faces"]
    for mode in MODES:
        processor = FaceClipProcessor(str(workdir / f"profiled-{mode}"), {"bench": mode}, args.fps, 0.5, 112, 64, "auto",
                                      crop_rgb_224=bool(faces_params.get("crop_rgb_224", False)), landmarks=mode,
                                      crop_rgb=bool(faces_params.get("crop_rgb", True)),
                                      decode_threads=decoder_threads("local", int(faces_params.get("workers", 1))))
        frames, parts, _ = profile_faces(processor, mead)
        processor.close()
        print_profile(f"landmarks: {mode} (load {os.getloadavg()[0]:.2f})", frames, parts)

    agreement = crop_agreement_of_store(all_crops, clip_ids)
    print(f"\ncrop agreement, keypoint vs mesh alignment (mean 5-point distance / inter-ocular distance, {len(agreement)} "
          f"faces): mean {agreement.mean():.3f}, median {np.median(agreement):.3f}, 95th percentile {np.percentile(agreement, 95):.3f}")

    # -- bounds and stages -------------------------------------------------------------------
    bounds, cpu_per_sample = {}, {}
    print()
    for mode in MODES:
        stages = single[mode]
        per_sample = per_sample_seconds(mode, stages["frames"], stages["detected"], video_frames, decode["256x256 (MEAD)"],
                                        mp_rates, rates, stages["extractor_types"])
        bounds[mode], cpu_per_sample[mode] = 2 / per_sample[0], per_sample[1]
        print(f"2-core bound, {mode:<9}: decode {video_frames / stages['frames']:.2f} video frames + {GRAPH_OF_MODE[mode]} + "
              f"the CNN(s) per sampled frame = {1000 * per_sample[0]:.2f} ms on one core -> {bounds[mode]:.0f} sampled frames/s")
    print(f"\nfaces + extract stages on the {len(mead)} clips ({video_seconds:.1f} s of video), each stage its own process")
    single_rate = {mode: report_stages(single[mode], video_seconds, bounds[mode], cpu_per_sample[mode]) for mode in MODES}
    print(f"  keypoints / mesh throughput: {single_rate['keypoints'] / single_rate['mesh']:.2f}x")
    if args.repeat > 1:
        print(f"\nthe same on {args.repeat} copies of the clips ({video_seconds * args.repeat:.1f} s of video), "
              f"{args.rounds} round(s) per mode, alternating")
        best = {}
        for mode in MODES:
            rates_of_mode = [report_stages(run, video_seconds * args.repeat, bounds[mode], cpu_per_sample[mode])
                             for run in repeated[mode]]
            best[mode] = max(rates_of_mode)
        print(f"\n  summary at {args.repeat}x (fastest round per mode):")
        for mode in MODES:
            print(f"    {mode:<10}{best[mode]:>6.0f} sampled frames/s = {best[mode] / bounds[mode]:.2f} of its bound (target >= 0.8)")
        per_round = [(k["frames"] / stage_total(k)["wall"]) / (m["frames"] / stage_total(m)["wall"])
                     for m, k in zip(repeated["mesh"], repeated["keypoints"])]
        print(f"    keypoints / mesh throughput: {best['keypoints'] / best['mesh']:.2f}x (target >= 1.8x); "
              f"round by round: {', '.join(f'{ratio:.2f}x' for ratio in per_round)}")
        print(f"\n  peak memory at {args.repeat}x over 1x (largest round), per stage:")
        for mode in MODES:
            for stage_name in ["faces", *single[mode]["extract"]]:
                one = single[mode]["faces"] if stage_name == "faces" else single[mode]["extract"][stage_name]
                many = max((r["faces"] if stage_name == "faces" else r["extract"][stage_name])["peak_mib"] for r in repeated[mode])
                print(f"    {mode:<10}{stage_name:<8}{one['peak_mib']:>6.0f} -> {many:>6.0f} MiB = {many / one['peak_mib']:.2f}x")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
