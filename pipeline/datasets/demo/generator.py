"""Deterministic audio-visual emotion demo dataset.

``generate(out_dir, spec)`` writes, under ``out_dir``:

* ``clips/<clip_id>.mp4`` -- H.264 (yuv420p) video plus mono AAC audio;
* ``labels.csv`` -- clip_id, file (relative to out_dir), label, speaker, take,
  duration_s;
* ``va/<clip_id>.csv`` -- frame, time_s, valence, arousal per video frame;

plus, with ``spec.bad_clips``, four deliberately broken clips that the rest of
the pipeline must cope with (see ``BAD_CLIPS``).  Every random draw comes from a
generator seeded by (spec.seed, what is being drawn), so the output depends on
the spec only, not on worker count or scheduling.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from .emotions import EMOTIONS
from .encode import write_clip
from .expressions import ACTIONS, ActionBasis, action_basis, combine, intensity_envelope
from .identities import SEED_DOMAIN_IDENTITY, Identity, build_identities, scene_without_face
from .render import FaceAnimation, render_frames, smooth_curve
from .spec import DemoSpec
from .voice import synthesize

LABEL_COLUMNS = ["clip_id", "file", "label", "speaker", "take", "duration_s"]
VA_COLUMNS = ["frame", "time_s", "valence", "arousal"]
BAD_CLIPS = ("bad_zero_bytes", "bad_corrupt", "bad_no_audio", "bad_no_face")
_CORRUPT_KEEP_BYTES = 300  # keep the real MP4 header so the file looks plausible
_SEED_DOMAIN_CLIP = SEED_DOMAIN_IDENTITY + 1
_MIN_JOBS_FOR_POOL = 40
_VA_NOISE = 0.05  # amplitude of the smooth annotation wobble around the target curve


@dataclass(frozen=True)
class _Job:
    clip_id: str
    identity: int
    emotion: str
    take: int
    kind: str  # "good" or one of BAD_CLIPS


def generate(out_dir: Path, spec: DemoSpec, workers: int | None = None) -> pd.DataFrame:
    """Write the dataset and return its labels table (the content of labels.csv).

    ``workers`` only changes speed, never the output; by default the full-size
    spec uses two processes and small specs render in-process.
    """
    _validate(spec)
    out_dir = Path(out_dir)
    # Clear what a previous run with another spec may have left behind.
    for sub in ("clips", "va"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
        (out_dir / sub).mkdir(parents=True)

    identities = build_identities(spec.identities, spec.size, spec.seed)
    jobs = [_Job(f"{identity.speaker}_{emotion}_t{take}", index, emotion, take, "good")
            for index, identity in enumerate(identities)
            for emotion in spec.emotions
            for take in range(spec.takes)]
    if spec.bad_clips:
        jobs += [_Job(kind, index % spec.identities, spec.emotions[index % len(spec.emotions)],
                      0, kind) for index, kind in enumerate(BAD_CLIPS)]

    # A worker process costs about as much to start as rendering a dozen short
    # clips, so small specs are rendered in-process.
    if workers is None:
        workers = 1 if len(jobs) < _MIN_JOBS_FOR_POOL else min(2, os.cpu_count() or 1)
    # One task per identity, so that its expression basis is built once.
    tasks = [(out_dir, spec, identity, [job for job in jobs if job.identity == index])
             for index, identity in enumerate(identities)]
    workers = max(1, min(workers, len(tasks)))
    if workers == 1:
        results = [_render_identity(*task) for task in tasks]
    else:
        # "spawn": the parent holds OpenCV/BLAS thread pools that a fork would
        # copy in a broken state.  (So a calling script needs the usual
        # ``if __name__ == "__main__"`` guard; without it the executor reports
        # BrokenProcessPool, where multiprocessing.Pool would hang.)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=cv2.setNumThreads, initargs=(1,)) as pool:
            results = list(pool.map(_render_identity, *zip(*tasks)))
    rows = {row["clip_id"]: row for result in results for row in result}

    labels = pd.DataFrame([rows[job.clip_id] for job in jobs], columns=LABEL_COLUMNS)
    labels.to_csv(out_dir / "labels.csv", index=False)
    return labels


def _validate(spec: DemoSpec) -> None:
    unknown = sorted(set(spec.emotions) - set(EMOTIONS))
    if unknown:
        raise ValueError(f"unknown emotions {unknown}; supported: {sorted(EMOTIONS)}")
    if not spec.emotions or len(set(spec.emotions)) != len(spec.emotions):
        raise ValueError("emotions must be a non-empty list without duplicates")
    if spec.identities < 4:
        raise ValueError("identities must be >= 4 (speaker-independent splits need them)")
    if spec.takes < 1:
        raise ValueError("takes must be >= 1")
    if not 0.5 <= spec.min_duration_s <= spec.max_duration_s:
        raise ValueError("need 0.5 <= min_duration_s <= max_duration_s")
    if spec.size < 128 or spec.size % 2:
        raise ValueError("size must be even (yuv420p) and >= 128 (face detection)")
    if spec.fps < 1 or spec.sample_rate < 8000:
        raise ValueError("fps must be >= 1 and sample_rate >= 8000")


def _render_identity(out_dir: Path, spec: DemoSpec, identity: Identity,
                     jobs: list[_Job]) -> list[dict]:
    basis = action_basis(identity.canvas.shape[:2], identity.landmarks)
    return [_render_job(out_dir, spec, identity, basis, job) for job in jobs]


def _render_job(out_dir: Path, spec: DemoSpec, identity: Identity,
                basis: dict[str, ActionBasis], job: _Job) -> dict:
    profile = EMOTIONS[job.emotion]
    # Emotions are keyed by their catalogue position, not their position in the
    # spec, so a clip does not change when the spec lists emotions differently.
    entropy = [spec.seed, _SEED_DOMAIN_CLIP, job.identity, list(EMOTIONS).index(job.emotion),
               job.take, (("good",) + BAD_CLIPS).index(job.kind)]
    timing_rng, face_rng, voice_rng, camera_rng, va_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(entropy).spawn(5))

    n_frames = int(round(timing_rng.uniform(spec.min_duration_s, spec.max_duration_s) * spec.fps))
    path = out_dir / "clips" / f"{job.clip_id}.mp4"

    weights = _take_weights(face_rng, job.emotion)
    apex = identity.expressivity * _take_strength(face_rng)
    intensity = intensity_envelope(face_rng, n_frames, apex)
    voice_strength = identity.voice.expressivity * _take_strength(voice_rng)
    prosody = EMOTIONS["neutral"].voice.towards(profile.voice, voice_strength)
    n_samples = int(round(n_frames * spec.sample_rate / spec.fps))
    audio = synthesize(voice_rng, n_samples, spec.sample_rate, identity.voice, prosody)

    if job.kind == "bad_zero_bytes":
        path.touch()
    else:
        if job.kind == "bad_no_face":
            frames = render_frames(camera_rng, scene_without_face(spec.size), spec.size, spec.fps,
                                   n_frames, face=None)
        else:
            face = FaceAnimation(identity.landmarks, combine(basis, weights), intensity)
            frames = render_frames(camera_rng, identity.canvas, spec.size, spec.fps, n_frames, face)
        write_clip(path, frames, spec.fps, spec.size,
                   None if job.kind == "bad_no_audio" else audio, spec.sample_rate)
        if job.kind == "bad_corrupt":
            valid = path.read_bytes()
            garbage = timing_rng.integers(0, 256, len(valid) - _CORRUPT_KEEP_BYTES, dtype=np.uint8)
            path.write_bytes(valid[:_CORRUPT_KEEP_BYTES] + garbage.tobytes())

    _va_table(va_rng, profile.valence, profile.arousal, intensity, spec.fps).to_csv(
        out_dir / "va" / f"{job.clip_id}.csv", index=False)
    return {"clip_id": job.clip_id, "file": f"clips/{job.clip_id}.mp4", "label": job.emotion,
            "speaker": identity.speaker, "take": job.take,
            "duration_s": round(n_frames / spec.fps, 6)}


def _take_strength(rng: np.random.Generator) -> float:
    """How strongly a take is acted; about one take in five is weak."""
    return rng.uniform(0.25, 0.5) if rng.random() < 0.2 else rng.uniform(0.55, 1.15)


def _take_weights(rng: np.random.Generator, emotion: str) -> dict[str, float]:
    """The emotion's facial actions with per-take variation in their mix.

    Neutral takes get a couple of faint random actions, as real neutral faces are
    never perfectly still.
    """
    weights = {name: w * rng.uniform(0.75, 1.25) for name, w in EMOTIONS[emotion].face.items()}
    if not weights:
        for name in rng.choice(list(ACTIONS), size=2, replace=False):
            weights[str(name)] = rng.uniform(0.0, 0.15)
    return weights


def _va_table(rng: np.random.Generator, valence: float, arousal: float, intensity: np.ndarray,
              fps: int) -> pd.DataFrame:
    """Per-frame valence/arousal: the emotion's coordinates times the intensity envelope."""
    n_frames = len(intensity)
    values = [np.clip(coordinate * intensity
                      + _VA_NOISE * smooth_curve(rng, n_frames, fps, max_hz=1.0), -1, 1)
              for coordinate in (valence, arousal)]
    return pd.DataFrame({"frame": np.arange(n_frames), "time_s": np.arange(n_frames) / fps,
                         "valence": values[0], "arousal": values[1]})
