"""Filling feature stores clip by clip: the faces store (aligned crops and landmarks), the
audio store (decoded waveform) and one store per extractor.

Each store kind has a picklable *processor* (copied once into each worker process by the
executor) that turns one clip into one atomically written entry and returns a
:class:`ClipResult`. :func:`fill_store` skips clips whose entry was made with the same
config, runs the rest through the executor, then writes the index (dropping clips no
longer in the dataset) and the failures table.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from pipeline.executors import JobError, make_executor, read_ahead
from pipeline.media import MediaError, load_audio, sample_frames
from pipeline.store import Entry, FeatureStore, config_hash


@dataclass(frozen=True)
class ClipJob:
    clip_id: str
    path: str


@dataclass(frozen=True)
class ClipResult:
    clip_id: str
    ok: bool
    reason: str = ""
    frames: int = 0
    detected: int = 0


def fill_store(
    store: FeatureStore,
    jobs: list[ClipJob],
    processor: Callable[[ClipJob], ClipResult],
    identity: dict[str, Any],
    stage: str,
    workers: int,
    executor: str = "local",
    known_failures: list[dict[str, str]] | None = None,
    num_gpus: float = 0.0,
) -> tuple[list[ClipResult], list[dict[str, str]]]:
    """Process the jobs whose entry is missing or stale; returns (results, failures)."""
    started = time.perf_counter()
    digest = config_hash(identity)
    current = store.up_to_date([job.clip_id for job in jobs], digest)
    todo = [job for job in jobs if job.clip_id not in current]
    results: list[ClipResult] = []
    if todo:
        runner = make_executor(executor, workers, len(todo), num_gpus)
        results = [_as_result(job, outcome, stage) for job, outcome in runner.map(processor, todo, desc=stage)]
    # Clips skipped as up to date keep their earlier notes (e.g. "no face detected").
    redone, listed = {r.clip_id for r in results}, {job.clip_id for job in jobs}
    kept = [f for f in store.failures().to_dict("records") if f["clip_id"] in listed - redone and f["stage"] == stage]
    failures = list(known_failures or []) + kept
    failures += [{"clip_id": r.clip_id, "stage": stage, "reason": r.reason} for r in results if r.reason]
    # Only entries their worker reported complete are indexed: a clip that failed in this run
    # loses whatever entry it has (written by a worker that died before reporting, or made
    # with an older config), so the next run redoes exactly the failed clips.
    failed = {r.clip_id for r in results if not r.ok}
    store.write_index(job.clip_id for job in jobs if job.clip_id not in failed)
    store.write_failures(failures)
    print(
        f"{stage}: {len(todo)} of {len(jobs)} clips to process ({len(jobs) - len(todo)} up to date), "
        f"{executor} executor; extraction took {time.perf_counter() - started:.1f} s"
    )
    return results, failures


def _as_result(job: ClipJob, outcome: ClipResult | JobError, stage: str) -> ClipResult:
    if isinstance(outcome, JobError):
        return ClipResult(job.clip_id, False, f"{job.path}: {stage} worker failed: {outcome.reason}")
    return outcome


def _attrs(identity: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"config_hash": config_hash(identity), "identity": identity, **extra}


@dataclass
class FaceClipProcessor:
    """Detects, landmarks and aligns faces on frames sampled at ``fps``, links them into tracks
    and stores the main subject's track (plus every track when ``max_faces > 1``); see
    :mod:`pipeline.faces.clip` for the arrays. ``landmarks``: ``mesh`` (478-point face mesh) or
    ``keypoints`` (crops aligned from the detector's keypoints, no mesh, no ``landmarks`` key);
    ``crop_rgb`` false leaves out the 112 RGB crop."""

    store_root: str
    identity: dict[str, Any]
    fps: float
    min_detection_confidence: float
    crop_size: int
    gray_size: int
    detector: str
    crop_rgb_224: bool = False
    max_faces: int = 1
    subject: str = "longest_largest"
    track_min_iou: float = 0.3
    track_max_landmark_distance: float = 0.5
    track_max_gap: int = 2
    image_compression: str = "none"
    landmarks: str = "mesh"
    crop_rgb: bool = True

    def warm_up(self) -> None:
        """Load mediapipe and build its graphs (a second or two), done once per worker."""
        if hasattr(self, "_analyzer"):
            return
        import cv2

        # mediapipe loads only in workers that need it
        from pipeline.faces import FaceAnalyzer
        from pipeline.faces.clip import LARGE_CROP_SIZE

        # Parallelism comes from the workers (one per core); OpenCV's own pool in each would oversubscribe.
        cv2.setNumThreads(1)
        self._analyzer = FaceAnalyzer(
            min_detection_confidence=self.min_detection_confidence,
            crop_size=self.crop_size if self.crop_rgb else 0,
            gray_size=self.gray_size,
            model_selection=self.detector,
            max_faces=self.max_faces,
            large_crop_size=LARGE_CROP_SIZE if self.crop_rgb_224 else 0,
            landmarks=self.landmarks,
        )

    def __call__(self, job: ClipJob) -> ClipResult:
        from pipeline.faces.clip import clip_arrays
        from pipeline.faces.track import TrackingParams

        self.warm_up()
        timestamps, faces = [], []
        try:
            for time_s, frame in read_ahead(sample_frames(job.path, self.fps)):
                timestamps.append(time_s)
                faces.append(self._analyzer.analyze_faces(frame))
        except MediaError as error:
            return ClipResult(job.clip_id, False, str(error))
        if not timestamps:
            return ClipResult(job.clip_id, False, f"{job.path}: video has no decodable frames")
        tracking = TrackingParams(self.track_min_iou, self.track_max_landmark_distance, self.track_max_gap)
        # Frames without a face stay in the arrays, masked: downstream timing stays intact.
        arrays, stats = clip_arrays(
            timestamps, faces, self.crop_size if self.crop_rgb else 0, self.gray_size, self.crop_rgb_224,
            self.max_faces, self.subject, tracking, self.landmarks,
        )
        attrs = _attrs(
            self.identity,
            landmarks=self.landmarks,
            detection_rate=stats.detection_rate,
            frames=stats.frames,
            detected_frames=stats.detected,
            subject_frames=stats.subject_frames,
            tracks=stats.tracks,
            full_range_frames=stats.full_range_frames,
        )
        FeatureStore(self.store_root).write(job.clip_id, arrays, attrs, self.image_compression)
        count, detected = stats.frames, stats.detected
        reason = "" if detected else f"{job.path}: no face detected in any of {count} sampled frames"
        return ClipResult(job.clip_id, True, reason, count, detected)

    def close(self) -> None:
        if hasattr(self, "_analyzer"):
            self._analyzer.close()


@dataclass
class AudioClipProcessor:
    """Decodes the audio track to mono float32 at ``sample_rate``."""

    store_root: str
    identity: dict[str, Any]
    sample_rate: int

    def __call__(self, job: ClipJob) -> ClipResult:
        try:
            samples = load_audio(job.path, self.sample_rate)
        except MediaError as error:
            return ClipResult(job.clip_id, False, str(error))
        times = np.array([0.0, len(samples) / self.sample_rate])
        arrays = {"samples": samples, "timestamps": times, "mask": np.ones(2, np.uint8)}
        FeatureStore(self.store_root).write(job.clip_id, arrays, _attrs(self.identity, sample_rate=self.sample_rate))
        return ClipResult(job.clip_id, True, frames=len(samples))


@dataclass
class ExtractorClipProcessor:
    """Runs a registered extractor on one clip's entry of its input store."""

    input_root: str
    output_root: str
    extractor_type: str
    options: dict[str, Any]
    device: str
    batch_size: int

    def warm_up(self) -> None:
        self.extractor()

    def extractor(self):
        if not hasattr(self, "_built"):
            from pipeline.extractors import EXTRACTORS, resolve_device

            cls = EXTRACTORS.get(self.extractor_type)
            config = EXTRACTORS.config(self.extractor_type, self.options, self.extractor_type)
            self._built = cls(config, resolve_device(self.device), self.batch_size)
        return self._built

    def __getstate__(self) -> dict[str, Any]:
        # Each worker builds its own extractor: on its own device (a GPU where the worker
        # has one), and without shipping the model's weights through pickling.
        return {key: value for key, value in self.__dict__.items() if key != "_built"}

    def __call__(self, job: ClipJob) -> ClipResult:
        return self.process(job, self.load(job))

    def load(self, job: ClipJob) -> Entry:
        """Read the clip's input entry; needs no model, so it can run beside :meth:`process`."""
        from pipeline.extractors import EXTRACTORS

        cls = EXTRACTORS.get(self.extractor_type)
        # An extractor whose inputs depend on its options (e.g. fer_mini_xception faces: mean) says which.
        keys = cls.input_keys_for(self.options) if hasattr(cls, "input_keys_for") else cls.input_keys
        return FeatureStore(self.input_root).read(job.clip_id, keys)

    def process(self, job: ClipJob, entry: Entry) -> ClipResult:
        extractor = self.extractor()
        if "mask" in entry.arrays and not entry.arrays["mask"].any():
            return ClipResult(job.clip_id, False, f"{job.path}: no usable {extractor.input} frame (nothing to extract)")
        features = extractor.extract(entry)
        identity = extractor.identity()
        arrays = {"data": features.data, "timestamps": features.timestamps, "mask": features.mask}
        attrs = _attrs(identity, extractor=extractor.registry_name, weights_sha256=extractor.weights_sha256, weights_origin=extractor.weights_origin)
        FeatureStore(self.output_root).write(job.clip_id, arrays, attrs)
        return ClipResult(job.clip_id, True, frames=len(features.data))


def jobs_from_manifest(manifest: pd.DataFrame, column: str | None = None) -> list[ClipJob]:
    """One job per clip (with ``column`` true); the audio stage's jobs read ``audio_path``
    where the corpus keeps the audio in a separate file."""
    rows = manifest if column is None else manifest[manifest[column]]
    use_audio_file = column == "has_audio"
    return [ClipJob(r.clip_id, r.audio_path if use_audio_file and r.audio_path else r.path) for r in rows.itertuples(index=False)]

