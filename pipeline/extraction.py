"""Filling feature stores clip by clip: the faces store (aligned crops and landmarks), the
audio store (decoded waveform) and one store per extractor.

Each store kind has a picklable *processor* (copied once into each worker process by the
executor) that turns one clip into one atomically written entry and returns a
:class:`ClipResult`. :func:`fill_store` works out each clip's lineage (its key: the
processor's identity and version, and the key of its source, a media file or an input
entry; see :mod:`pipeline.store.lineage`), skips the clips whose entry (or recorded failure)
has that key, runs the rest through the executor, then writes the index (dropping clips no
longer in the dataset) and the failures table, and says how many entries were stale and why.

A processor's source: ``source_kind`` ("media" or "entry") and ``source_keys(jobs)``. Its
entries record their outcome note (e.g. "no face detected"), so any re-run, even one that
redoes nothing, reports the same failures.

The library functions :func:`extract_faces`, :func:`extract_audio` and
:func:`extract_features` run one stage's whole chain into any store root (the stages use
``features/``; a prediction run can use a cache of its own and get the same keys).
"""
from __future__ import annotations

import json
import math
import os
import signal
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator

import numpy as np
import pandas as pd

from pipeline.executors import JobError, is_disk_full, make_executor, read_ahead
from pipeline.store import AUGMENTED_DIR, FAILURE_COLUMNS, Entry, FeatureStore, augmented_id, augmented_store, summarise_failures
from pipeline.store.files import read_parquet, write_text_if_changed
from pipeline.store.lineage import NEW, FileHashes, Lineage, identity_parts, stale_reasons

# The store file caching the sha256 of the files its entries are made from (media, weights).
HASHES_FILE = "file_hashes.json"
# Params that decide what the failures table says, not what the entries hold.
REPORTING_KEYS = ("min_decoded_fraction",)
FAULT_POINT_VARIABLE = "AVER_FAULT_POINT"


class StageFailed(RuntimeError):
    """The stage cannot go on (e.g. the disk is full); the message says what to do."""


def fault_point(stage: str, point: str) -> None:
    """Test hook: SIGKILL this process at ``point`` of ``stage`` when AVER_FAULT_POINT is
    ``<stage>:<point>`` (the fault suite kills stages at exact moments this way)."""
    if os.environ.get(FAULT_POINT_VARIABLE) == f"{stage}:{point}":
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class ClipJob:
    clip_id: str
    path: str
    duration_s: float = 0.0           # declared by the container (the manifest's duration_s); 0: unknown
    lineage: Lineage | None = None    # set by fill_store: what the entry is made from, and why
    stage: str = ""


@dataclass(frozen=True)
class ClipResult:
    clip_id: str
    ok: bool
    reason: str = ""
    frames: int = 0
    detected: int = 0


def entry_attrs(identity: dict[str, Any], job: ClipJob, note: str = "", decoded_s: float | None = None,
                summary: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The attributes every entry carries: its component's identity, its lineage, the stage
    that made it, its outcome note, how long its media decoded to and per-clip figures."""
    lineage = job.lineage or Lineage(*identity_parts(identity), "", "")
    attrs = {"identity": identity, **lineage.attrs(), "stage": job.stage, "note": note, **extra}
    if decoded_s is not None:
        attrs["decoded_s"] = float(decoded_s)
    if summary is not None:
        attrs["summary"] = json.dumps(summary, sort_keys=True)
        attrs.update(summary)
    return attrs


class MediaSource:
    """A processor whose entries are made from the media file at ``job.path``: its source key is
    the file's sha256, cached in the store (HASHES_FILE)."""

    source_kind: ClassVar[str] = "media"
    store_root: str

    def source_keys(self, jobs: list[ClipJob]) -> dict[str, str]:
        hashes = FileHashes(Path(self.store_root) / HASHES_FILE)
        digests = hashes.sha256_many(job.path for job in jobs)
        hashes.save()
        return {job.clip_id: digests[job.path] for job in jobs}


@dataclass
class StalePlan:
    """What fill_store does with each job: which to (re)make and why, which are up to date."""

    todo: list[ClipJob] = field(default_factory=list)
    new: int = 0
    stale: Counter = field(default_factory=Counter)  # reason -> entries
    stale_entries: int = 0
    up_to_date: int = 0
    failed_before: dict[str, dict[str, str]] = field(default_factory=dict)  # clip -> its recorded failure, still current

    def describe(self, total: int) -> str:
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(self.stale.items()))
        stale = f"{self.stale_entries} stale ({reasons})" if self.stale_entries else "0 stale"
        kept = f"{self.up_to_date} up to date" + (f" ({len(self.failed_before)} known failures)" if self.failed_before else "")
        return f"{len(self.todo)} of {total} clips to process: {self.new} new, {stale}; {kept}"


def plan(store: FeatureStore, jobs: list[ClipJob], processor: Any, identity: dict[str, Any], stage: str) -> StalePlan:
    """Each job's expected lineage against its entry's (or its recorded failure's)."""
    digest, version = identity_parts(identity)
    source_kind = getattr(processor, "source_kind", "")
    sources = processor.source_keys(jobs) if hasattr(processor, "source_keys") else {}
    rows = store.entry_rows(job.clip_id for job in jobs)
    recorded = {}
    for failure in store.failures().to_dict("records"):
        if failure.get("outcome") == "failed" and failure.get("lineage"):
            recorded[failure["clip_id"]] = failure
    result = StalePlan()
    for job in jobs:
        expected = Lineage(digest, version, source_kind, sources.get(job.clip_id, ""))
        stored = rows.get(job.clip_id)
        if stored is None and job.clip_id in recorded:
            stored = json.loads(recorded[job.clip_id]["lineage"])
        if stored is None:
            result.new += 1
            result.todo.append(replace(job, lineage=replace(expected, made_because=NEW), stage=stage))
            continue
        reasons = stale_reasons(stored, expected)
        if not reasons:
            result.up_to_date += 1
            if job.clip_id not in rows:
                result.failed_before[job.clip_id] = recorded[job.clip_id]
            continue
        result.stale_entries += 1
        result.stale.update(reasons)
        result.todo.append(replace(job, lineage=replace(expected, made_because=", ".join(reasons)), stage=stage))
    return result


def fill_store(
    store: FeatureStore,
    jobs: list[ClipJob],
    processor: Callable[[ClipJob], ClipResult],
    identity: dict[str, Any] | None = None,
    stage: str = "",
    workers: int = 1,
    executor: str = "local",
    known_failures: list[dict[str, str]] | None = None,
    num_gpus: float = 0.0,
    min_decoded_fraction: float = 0.0,
) -> tuple[list[ClipResult], list[dict[str, str]]]:
    """Process the jobs whose entry is missing or stale; returns (results, failures).

    ``identity`` (default: ``processor.identity()``) is the component's identity, with its
    ``version``; ``known_failures`` are clips the stage knows it cannot process (e.g. no video
    stream). A clip whose media decoded to less than ``min_decoded_fraction`` of its declared
    duration gets a failures row (its entry is kept and used).
    """
    started = time.perf_counter()
    identity = processor.identity() if identity is None else identity
    with stopping_on_a_full_disk(store, stage, 0, len(jobs)):  # the plan saves the media hash cache
        work = plan(store, jobs, processor, identity, stage)
    results, retried = [], set()
    if work.todo:
        runner = make_executor(executor, workers, len(work.todo), num_gpus)
        outcomes = runner.map(processor, work.todo, desc=stage)
        try:
            for job, outcome in outcomes:
                if isinstance(outcome, JobError):
                    if outcome.fatal:
                        raise _disk_full(store, stage, outcome.reason, len(results), len(work.todo))
                    retried.add(job.clip_id)  # raised, or lost its worker: tried again next run
                results.append(_as_result(job, outcome, stage))
                fault_point(stage, f"after-clip-{len(results)}")
        finally:
            outcomes.close()  # stops the workers if the loop ended early
    fault_point(stage, "before-index")
    # Only entries their worker reported complete are indexed: a clip that failed in this run
    # loses whatever entry it has (written by a worker that died before reporting, or made
    # with an older config), so the next run redoes it (or, for a recorded failure, knows it).
    failed = {r.clip_id: r for r in results if not r.ok}
    with stopping_on_a_full_disk(store, stage, len(results), len(work.todo)):
        index = store.write_index(job.clip_id for job in jobs if job.clip_id not in failed)
        fault_point(stage, "between-index-and-failures")
        failures = _failures(jobs, work, failed, retried, index, known_failures or [], stage, min_decoded_fraction)
        store.write_failures(failures)
    fault_point(stage, "after-failures")
    print(f"{stage}: {work.describe(len(jobs))}; {executor} executor; extraction took {time.perf_counter() - started:.1f} s")
    return results, [{column: failure[column] for column in FAILURE_COLUMNS} for failure in failures]


def _disk_full(store: FeatureStore, stage: str, reason: str, done: int, todo: int) -> StageFailed:
    return StageFailed(
        f"{stage}: no space left on the device holding {store.root} ({reason}). {done} of {todo} clips were handled before; "
        f"every complete entry is kept. Free some space and run the stage again: it goes on from where it stopped."
    )


@contextmanager
def stopping_on_a_full_disk(store: FeatureStore, stage: str, done: int, todo: int) -> Iterator[None]:
    """Turn a full disk while writing the store's files into StageFailed (its message says what to do)."""
    try:
        yield
    except OSError as error:
        if is_disk_full(error):
            raise _disk_full(store, stage, str(error), done, todo) from None
        raise


def _failures(jobs, work: StalePlan, failed: dict[str, ClipResult], retried: set[str], index: pd.DataFrame,
              known: list[dict[str, str]], stage: str, min_decoded_fraction: float) -> list[dict[str, str]]:
    """The store's failures table, rebuilt whole every run, in job order: the known failures,
    this run's failed clips (with the lineage they failed with, unless the failure was an
    error worth a retry), failures recorded earlier that still hold, and each indexed entry's
    note and partial decode."""
    rows = [{**failure, "outcome": "known", "lineage": ""} for failure in known]
    indexed = {row["clip_id"]: row for row in index.to_dict("records")}
    lineages = {job.clip_id: job.lineage for job in work.todo}
    for job in jobs:
        if job.clip_id in failed:
            lineage = lineages.get(job.clip_id)
            lineage = "" if job.clip_id in retried or lineage is None else json.dumps(lineage.attrs(), sort_keys=True)
            rows.append({"clip_id": job.clip_id, "stage": stage, "reason": failed[job.clip_id].reason, "outcome": "failed", "lineage": lineage})
        elif job.clip_id in work.failed_before:
            rows.append({column: work.failed_before[job.clip_id][column] for column in ("clip_id", "stage", "reason", "outcome", "lineage")})
        elif job.clip_id in indexed:
            row = indexed[job.clip_id]
            if row["note"]:
                rows.append({"clip_id": job.clip_id, "stage": row["stage"] or stage, "reason": row["note"], "outcome": "note", "lineage": ""})
            decoded = float(row["decoded_s"])
            if min_decoded_fraction > 0 and job.duration_s > 0 and not math.isnan(decoded) and decoded < min_decoded_fraction * job.duration_s:
                rows.append({
                    "clip_id": job.clip_id, "stage": stage, "outcome": "partial", "lineage": "",
                    "reason": f"{job.path}: partial decode: {decoded:.2f} s decoded of the {job.duration_s:.2f} s the file declares "
                              f"(below {min_decoded_fraction:.0%}); the features cover only the decoded part",
                })
    return rows


def _as_result(job: ClipJob, outcome: ClipResult | JobError, stage: str) -> ClipResult:
    if isinstance(outcome, JobError):
        return ClipResult(job.clip_id, False, f"{job.path}: {stage} worker failed: {outcome.reason}")
    return outcome


@dataclass
class FaceClipProcessor(MediaSource):
    """Detects, landmarks and aligns faces on frames sampled at ``fps``, links them into tracks
    and stores the main subject's track (plus every track when ``max_faces > 1``); see
    :mod:`pipeline.faces.clip` for the arrays. ``landmarks``: ``mesh`` (478-point face mesh) or
    ``keypoints`` (crops aligned from the detector's keypoints, no mesh, no ``landmarks`` key);
    ``crop_rgb`` false leaves out the 112 RGB crop."""

    # Bump when the faces store's arrays change for the same params (pipeline/faces, this class).
    # 2: the detector's keypoints stored; crops from one composed similarity fit.
    version: ClassVar[int] = 2

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
    decode_threads: int = 0  # PyAV decoder threads per worker (0: FFmpeg's choice); see decoder_threads

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

    def __getstate__(self) -> dict[str, Any]:
        # A worker builds its own mediapipe graphs (warm_up); they do not pickle.
        return {key: value for key, value in self.__dict__.items() if key != "_analyzer"}

    def __call__(self, job: ClipJob) -> ClipResult:
        from pipeline.faces.clip import clip_arrays
        from pipeline.faces.track import TrackingParams
        from pipeline.media import MediaError, sample_frames  # PyAV loads only where clips are decoded

        self.warm_up()
        timestamps, faces = [], []
        try:
            for time_s, frame in read_ahead(sample_frames(job.path, self.fps, self.decode_threads)):
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
        count, detected = stats.frames, stats.detected
        note = "" if detected else f"{job.path}: no face detected in any of {count} sampled frames"
        summary = {
            "landmarks": self.landmarks, "frames": stats.frames, "detected_frames": stats.detected, "detection_rate": stats.detection_rate,
            "subject_frames": stats.subject_frames, "tracks": stats.tracks, "full_range_frames": stats.full_range_frames,
        }
        attrs = entry_attrs(self.identity, job, note, decoded_video_s(timestamps, self.fps), summary)
        FeatureStore(self.store_root).write(job.clip_id, arrays, attrs, self.image_compression)
        return ClipResult(job.clip_id, True, note, count, detected)

    def close(self) -> None:
        if hasattr(self, "_analyzer"):
            self._analyzer.close()
            del self._analyzer


def decoder_threads(executor: str, workers: int) -> int:
    """Video decoder threads per faces worker: the local executor's share of this machine's
    cores (1 once there is a worker per core); 0 (FFmpeg's choice) on a Ray cluster, whose
    nodes this process cannot see."""
    if executor != "local":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(workers, 1))


def decoded_video_s(timestamps: list[float], fps: float) -> float:
    """How far a video decoded, from its sampled frames' times: the last one plus one sampling
    step, or plus the last gap when frames came further apart than the sampling (a video of
    fewer frames per second than ``fps``)."""
    step = 1.0 / fps
    gap = timestamps[-1] - timestamps[-2] if len(timestamps) > 1 else step
    return float(timestamps[-1] + max(step, gap))


@dataclass
class AudioClipProcessor(MediaSource):
    """Decodes the audio track to mono float32 at ``sample_rate``."""

    # Bump when load_audio's output changes for the same file and sample rate.
    # 2: normalised downmix (stereo is the mean of its channels, 5.1 stays within [-1, 1]).
    version: ClassVar[int] = 2

    store_root: str
    identity: dict[str, Any]
    sample_rate: int

    def __call__(self, job: ClipJob) -> ClipResult:
        from pipeline.media import MediaError, load_audio

        try:
            samples = load_audio(job.path, self.sample_rate)
        except MediaError as error:
            return ClipResult(job.clip_id, False, str(error))
        duration = len(samples) / self.sample_rate
        times = np.array([0.0, duration])
        arrays = {"samples": samples, "timestamps": times, "mask": np.ones(2, np.uint8)}
        attrs = entry_attrs(self.identity, job, decoded_s=duration, sample_rate=self.sample_rate)
        FeatureStore(self.store_root).write(job.clip_id, arrays, attrs)
        return ClipResult(job.clip_id, True, frames=len(samples))


@dataclass
class ExtractorClipProcessor:
    """Runs a registered extractor on one clip's entry of its input store; its source is that
    entry (its key, from the input store's index)."""

    source_kind: ClassVar[str] = "entry"

    input_root: str
    output_root: str
    extractor_type: str
    options: dict[str, Any]
    device: str
    batch_size: int

    def extractor_class(self):
        from pipeline.extractors import EXTRACTORS

        return EXTRACTORS.get(self.extractor_type)

    def config(self):
        from pipeline.extractors import EXTRACTORS

        return EXTRACTORS.config(self.extractor_type, self.options, self.extractor_type)

    def identity(self) -> dict[str, Any]:
        """The extractor's identity (name, version, config, weights sha256), without building it:
        no model is loaded and no deep-learning library imported."""
        if not hasattr(self, "_identity"):
            hashes = FileHashes(Path(self.output_root) / HASHES_FILE)
            self._identity = self.extractor_class().identity_for(self.config(), hashes)
            try:
                hashes.save()
            except OSError:
                pass  # a cache only; a full disk is reported by the store's own writes
        return self._identity

    def weights_origin(self) -> str:
        return self.extractor_class().weights_origin_for(self.config())

    def source_keys(self, jobs: list[ClipJob]) -> dict[str, str]:
        return FeatureStore(self.input_root).keys(job.clip_id for job in jobs)

    def warm_up(self) -> None:
        self.extractor()

    def extractor(self):
        if not hasattr(self, "_built"):
            from pipeline.extractors import resolve_device

            self._built = self.extractor_class()(self.config(), resolve_device(self.device), self.batch_size)
        return self._built

    def __getstate__(self) -> dict[str, Any]:
        # Each worker builds its own extractor: on its own device (a GPU where the worker
        # has one), and without shipping the model's weights through pickling.
        return {key: value for key, value in self.__dict__.items() if key != "_built"}

    def __call__(self, job: ClipJob) -> ClipResult:
        return self.process(job, self.load(job))

    def load(self, job: ClipJob) -> Entry:
        """Read the clip's input entry; needs no model, so it can run beside :meth:`process`."""
        cls = self.extractor_class()
        # An extractor whose inputs depend on its options (e.g. fer_mini_xception faces: mean) says which.
        keys = cls.input_keys_for(self.options) if hasattr(cls, "input_keys_for") else cls.input_keys
        return FeatureStore(self.input_root).read(job.clip_id, keys)

    def process(self, job: ClipJob, entry: Entry) -> ClipResult:
        if "mask" in entry.arrays and not entry.arrays["mask"].any():
            cls = self.extractor_class()
            return ClipResult(job.clip_id, False, f"{job.path}: no usable {cls.input} frame (nothing to extract)")
        extractor = self.extractor()
        features = extractor.extract(entry)
        identity = self.identity()
        arrays = {"data": features.data, "timestamps": features.timestamps, "mask": features.mask}
        attrs = entry_attrs(
            identity, job, extractor=extractor.registry_name, weights_sha256=identity["weights_sha256"], weights_origin=extractor.weights_origin
        )
        FeatureStore(self.output_root).write(job.clip_id, arrays, attrs)
        return ClipResult(job.clip_id, True, frames=len(features.data))


@dataclass
class AugmentedClipProcessor(ExtractorClipProcessor):
    """The extractor on an augmented copy of a clip's audio entry (pipeline/extractors/augment.py):
    the entry's samples are augmented as they are read, and the copy's features are stored
    under the copy's id (``<clip_id>~<augmentation>``) in the augmentation's own store. Its
    identity is the extractor's plus the augmentation's, its source the original clip's input
    entry: a copy is made again only when the extractor, the augmentation or the clip's audio
    changed."""

    augmentation_name: str = ""
    augmentation_type: str = ""
    augmentation_options: dict[str, Any] = field(default_factory=dict)
    originals: dict[str, str] = field(default_factory=dict)  # copy id -> the clip it is a copy of

    def identity(self) -> dict[str, Any]:
        if not hasattr(self, "_augmented_identity"):
            from pipeline.extractors.augment import identity

            augmentation = identity(self.augmentation_name, self.augmentation_type, self.augmentation_options)
            self._augmented_identity = {**super().identity(), "augmentation": augmentation}
        return self._augmented_identity

    def augmentation(self):
        if not hasattr(self, "_augmentation"):
            from pipeline.extractors.augment import build

            self._augmentation = build(self.augmentation_type, self.augmentation_options, self.augmentation_name)
        return self._augmentation

    def source_keys(self, jobs: list[ClipJob]) -> dict[str, str]:
        keys = FeatureStore(self.input_root).keys(self.originals[job.clip_id] for job in jobs)
        return {job.clip_id: keys[self.originals[job.clip_id]] for job in jobs if self.originals[job.clip_id] in keys}

    def load(self, job: ClipJob) -> Entry:
        from pipeline.extractors.augment import copy_rng

        original = self.originals[job.clip_id]
        entry = super().load(replace(job, clip_id=original))
        sample_rate = int(entry.attrs["sample_rate"])
        samples = self.augmentation().apply(entry.arrays["samples"], sample_rate, copy_rng(original, self.augmentation_name))
        arrays = {**entry.arrays, "samples": samples}
        if "timestamps" in arrays:
            arrays["timestamps"] = np.array([0.0, len(samples) / sample_rate])
        return Entry(job.clip_id, arrays, entry.attrs)


def jobs_from_manifest(manifest: pd.DataFrame, column: str | None = None) -> list[ClipJob]:
    """One job per clip (with ``column`` true); the audio stage's jobs read ``audio_path``
    where the corpus keeps the audio in a separate file."""
    rows = manifest if column is None else manifest[manifest[column]]
    use_audio_file = column == "has_audio"
    has_duration = "duration_s" in rows.columns
    return [
        ClipJob(r.clip_id, r.audio_path if use_audio_file and r.audio_path else r.path, float(r.duration_s) if has_duration else 0.0)
        for r in rows.itertuples(index=False)
    ]


# -- the stages' chains, as library calls ------------------------------------------------


def faces_identity(faces: Any) -> dict[str, Any]:
    """The faces processor's identity: every faces param except where and how the work runs,
    how entries are stored and what the report flags, plus the processor's version."""
    from pipeline.config import EXECUTION_KEYS

    skipped = set(EXECUTION_KEYS) | set(REPORTING_KEYS)
    return {"stage": "faces", "version": FaceClipProcessor.version, **{k: v for k, v in asdict(faces).items() if k not in skipped}}


def audio_identity(audio: Any) -> dict[str, Any]:
    return {"stage": "audio", "version": AudioClipProcessor.version, "sample_rate": audio.sample_rate}


@dataclass
class StageOutcome:
    results: list[ClipResult]
    failures: list[dict[str, str]]


def extract_faces(faces: Any, manifest: pd.DataFrame, store_root: str | Path) -> StageOutcome:
    """The faces stage's work (``faces``: FacesParams) on the manifest's clips into ``store_root``,
    with its detection report (report.csv)."""
    store = FeatureStore(store_root)
    identity = faces_identity(faces)
    processor = FaceClipProcessor(
        str(store.root), identity, faces.fps, faces.min_detection_confidence, faces.crop_size, faces.gray_size, faces.detector,
        faces.crop_rgb_224, faces.max_faces, faces.subject,
        faces.track_min_iou, faces.track_max_landmark_distance, faces.track_max_gap, faces.image_compression,
        faces.landmarks, faces.crop_rgb, decoder_threads(faces.executor, faces.workers),
    )
    no_video = [
        {"clip_id": r.clip_id, "stage": "faces", "reason": f"{r.path}: no video stream"}
        for r in manifest[~manifest["has_video"]].itertuples()
    ]
    results, failures = fill_store(
        store, jobs_from_manifest(manifest, "has_video"), processor, identity, "faces", faces.workers,
        executor=faces.executor, known_failures=no_video, num_gpus=faces.num_gpus, min_decoded_fraction=faces.min_decoded_fraction,
    )
    frames = sum(r.frames for r in results)
    detected = sum(r.detected for r in results)
    print(f"faces: {len(results)} clips processed, {frames} frames sampled, detection rate {detected / max(frames, 1):.3f}")
    print_failures(failures)
    with stopping_on_a_full_disk(store, "faces", len(results), len(results)):
        report = write_faces_report(store)
    print(describe_faces_report(report, store.root / FACES_REPORT))
    return StageOutcome(results, failures)


def extract_audio(audio: Any, manifest: pd.DataFrame, store_root: str | Path) -> StageOutcome:
    """The audio stage's work (``audio``: AudioParams) into ``store_root``."""
    store = FeatureStore(store_root)
    identity = audio_identity(audio)
    processor = AudioClipProcessor(str(store.root), identity, audio.sample_rate)
    no_audio = [
        {"clip_id": r.clip_id, "stage": "audio", "reason": f"{r.path}: no audio stream"}
        for r in manifest[~manifest["has_audio"]].itertuples()
    ]
    results, failures = fill_store(
        store, jobs_from_manifest(manifest, "has_audio"), processor, identity, "audio", audio.workers,
        executor=audio.executor, known_failures=no_audio, min_decoded_fraction=audio.min_decoded_fraction,
    )
    print(f"audio: {len(results)} clips decoded, {len(failures)} failures rows")
    print_failures(failures)
    return StageOutcome(results, failures)


def extract_features(name: str, spec: Any, manifest: pd.DataFrame, features_root: str | Path, augment: bool = True) -> StageOutcome:
    """The extract@<name> stage's work (``spec``: ExtractorParams): the extractor over
    ``features_root/<spec.input>`` into ``features_root/<name>``, and with ``augment`` the
    augmented copies of ``spec.augmentations`` (training's only; a prediction run makes none)."""
    stage = f"extract@{name}"
    input_store = FeatureStore(Path(features_root) / spec.input)
    available = set(input_store.clip_ids())
    jobs = [job for job in jobs_from_manifest(manifest) if job.clip_id in available]
    output = FeatureStore(Path(features_root) / name)
    processor = ExtractorClipProcessor(str(input_store.root), str(output.root), spec.type, spec.options, spec.device, spec.batch_size)
    print(f"{stage}: {spec.type}; weights {processor.weights_origin() or 'none'}")
    results, failures = fill_store(
        output, jobs, processor, processor.identity(), stage, spec.workers, executor=spec.executor, num_gpus=spec.num_gpus
    )
    if hasattr(processor, "_built"):
        print(f"{stage}: ran on {processor.extractor().device}")
    print(f"{stage}: {len(results)} clips processed, {len(jobs) - len(results)} up to date, {len(failures)} failures rows")
    print_failures(failures)
    if augment:
        extract_augmented_copies(stage, spec, jobs, input_store, output)
    return StageOutcome(results, failures)


def extract_augmented_copies(stage: str, spec: Any, jobs: list[ClipJob], input_store: FeatureStore, output: FeatureStore) -> None:
    """One copy of every clip per augmentation of ``spec``, each augmentation into its store
    under ``output`` (pipeline.store.augmented_store); the stores of augmentations no longer
    declared are deleted. Their failures stay in their own stores' failures.csv: a copy is no
    clip of the experiment."""
    import shutil

    declared = {augmentation.name for augmentation in spec.augmentations}
    folder = output.root / AUGMENTED_DIR
    for old in sorted(folder.iterdir()) if folder.is_dir() else []:
        if old.name not in declared:
            shutil.rmtree(old)
            print(f"{stage}: removed the copies of augmentation {old.name!r}, no longer declared")
    for augmentation in spec.augmentations:
        store = augmented_store(output.root, augmentation.name)
        copies = [replace(job, clip_id=augmented_id(job.clip_id, augmentation.name)) for job in jobs]
        processor = AugmentedClipProcessor(
            str(input_store.root), str(store.root), spec.type, spec.options, spec.device, spec.batch_size,
            augmentation.name, augmentation.type, augmentation.options, {copy.clip_id: job.clip_id for copy, job in zip(copies, jobs)},
        )
        copy_stage = f"{stage}:{augmentation.name}"
        results, failures = fill_store(store, copies, processor, processor.identity(), copy_stage, spec.workers,
                                       executor=spec.executor, num_gpus=spec.num_gpus)
        print(f"{copy_stage}: {len(results)} copies extracted, {len(copies) - len(results)} up to date, {len(failures)} failures rows "
              f"(in {store.failures_path})")


# The manifest stage's clips (pipeline.datasets.manifest.CLIPS, named here too so that a stage
# with nothing to extract does not import the manifest's media probing, i.e. PyAV).
CLIPS = Path("data/clips.parquet")


def read_clips(path: str | Path = CLIPS) -> pd.DataFrame:
    """The clips the extraction stages read, read by path: a stage that read it through pandas
    could abort at exit (see pipeline.store.files.read_parquet)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: manifest missing (run `dvc repro manifest`)")
    return read_parquet(path)


def print_failures(failures: Iterable[dict[str, str]]) -> None:
    """The failures rows summarised by cause (the full list is in the store's failures.csv)."""
    for line in summarise_failures(failures):
        print(line)


# -- the faces detection report ------------------------------------------------------------

FACES_REPORT = "report.csv"
REPORT_COLUMNS = ["clip_id", "frames", "detected_frames", "detection_rate", "subject_frames", "tracks", "full_range_frames"]


def faces_report(store: FeatureStore) -> pd.DataFrame:
    """Per indexed clip: sampled frames, frames with a face, detection rate, frames of the main
    subject's track, number of tracks and frames found only by the full-range fallback, from
    the per-clip figures the index keeps."""
    index = store.index()
    rows = []
    for clip_id, summary in zip(index["clip_id"], index["summary"] if "summary" in index.columns else [""] * len(index)):
        figures = json.loads(summary) if summary else {}
        rows.append({"clip_id": clip_id, **{column: figures.get(column) for column in REPORT_COLUMNS[1:]}})
    return pd.DataFrame(rows, columns=REPORT_COLUMNS)


def write_faces_report(store: FeatureStore) -> pd.DataFrame:
    """Write report.csv (atomically, and only when it changed); returns the report."""
    report = faces_report(store)
    write_text_if_changed(store.root / FACES_REPORT, report.to_csv(index=False))
    return report


def describe_faces_report(report: pd.DataFrame, path: Path) -> str:
    if report.empty:
        return "faces report: no clips"
    frames, detected = report["frames"].sum(), report["detected_frames"].sum()
    rates = report["detection_rate"].astype(float)
    return (
        f"faces report ({path}): {len(report)} clips, detection rate {detected / max(frames, 1):.3f} overall, "
        f"per clip min {rates.min():.3f} / median {rates.median():.3f}; {(rates < 0.5).sum()} clips below 0.5; "
        f"{int(report['full_range_frames'].sum())} frames from the full-range fallback; "
        f"tracks per clip max {int(report['tracks'].max())}"
    )
