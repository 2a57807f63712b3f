"""One clip's faces-store arrays from the faces found on its sampled frames.

The keys every extractor reads (``timestamps``, ``mask``, ``box``, ``score``, ``landmarks``,
``crop_rgb``, ``crop_gray`` and, when enabled, ``crop_rgb_224``) describe the clip's *main
subject*: the best track under ``subject`` (see :func:`pipeline.faces.track.rank_tracks`);
frames where that track has no detection are masked. With ``max_faces > 1`` the same arrays
also exist per track slot with a ``tracks_`` prefix and a slot axis after time
(``tracks_mask [T, F]``, ``tracks_crop_gray [T, F, 64, 64]``, ...), plus ``tracks_id [T, F]``
(the track in each slot, -1 where empty); slot 0 holds the main subject's track.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pipeline.faces.detect import FaceObservation
from pipeline.faces.template import five_points
from pipeline.faces.track import SubjectRule, TrackingParams, assign_slots, link_tracks, rank_tracks

LARGE_CROP_SIZE = 224
LARGE_CROP_KEY = "crop_rgb_224"


@dataclass(frozen=True)
class ClipFaceStats:
    frames: int             # sampled frames
    detected: int           # frames with at least one face
    subject_frames: int     # frames where the main subject's track has a face
    tracks: int             # tracks linked over the clip
    full_range_frames: int  # frames whose faces came from the full-range fallback

    @property
    def detection_rate(self) -> float:
        return self.detected / self.frames if self.frames else 0.0


def _empty(count: int, lead: tuple[int, ...], crop_size: int, gray_size: int, large: bool) -> dict[str, np.ndarray]:
    arrays = {
        "mask": np.zeros((count, *lead), np.uint8),
        "box": np.zeros((count, *lead, 4), np.float32),
        "score": np.zeros((count, *lead), np.float32),
        "landmarks": np.zeros((count, *lead, 478, 3), np.float32),
        "crop_rgb": np.zeros((count, *lead, crop_size, crop_size, 3), np.uint8),
        "crop_gray": np.zeros((count, *lead, gray_size, gray_size), np.uint8),
    }
    if large:
        arrays[LARGE_CROP_KEY] = np.zeros((count, *lead, LARGE_CROP_SIZE, LARGE_CROP_SIZE, 3), np.uint8)
    return arrays


def _put(arrays: dict[str, np.ndarray], index: tuple[int, ...], face: FaceObservation, large: bool) -> None:
    arrays["mask"][index] = 1
    arrays["box"][index] = face.box
    arrays["score"][index] = face.score
    arrays["landmarks"][index] = face.landmarks
    arrays["crop_rgb"][index] = face.crop_rgb
    arrays["crop_gray"][index] = face.crop_gray
    if large:
        arrays[LARGE_CROP_KEY][index] = face.crop_rgb_large


def clip_arrays(
    timestamps: Sequence[float],
    faces: Sequence[Sequence[FaceObservation]],
    crop_size: int,
    gray_size: int,
    large_crop: bool = False,
    max_faces: int = 1,
    subject: SubjectRule = "longest_largest",
    tracking: TrackingParams = TrackingParams(),
) -> tuple[dict[str, np.ndarray], ClipFaceStats]:
    """``faces[t]``: the faces found on sampled frame t (any order, at most ``max_faces`` kept,
    largest first)."""
    count = len(timestamps)
    faces = [list(frame_faces)[:max_faces] for frame_faces in faces]
    boxes = [np.array([f.box for f in frame_faces], np.float32).reshape(-1, 4) for frame_faces in faces]
    points = [np.array([five_points(f.landmarks) for f in frame_faces], np.float32).reshape(-1, 5, 2) for frame_faces in faces]
    ranked = rank_tracks(link_tracks(boxes, points, tracking), subject)

    arrays = {"timestamps": np.asarray(timestamps, np.float64), **_empty(count, (), crop_size, gray_size, large_crop)}
    if ranked:
        main = ranked[0]
        for t, detection in zip(main.frames, main.detections):
            _put(arrays, (t,), faces[t][detection], large_crop)
    if max_faces > 1:
        per_track = _empty(count, (max_faces,), crop_size, gray_size, large_crop)
        track_ids = np.full((count, max_faces), -1, np.int32)
        for slot, track in assign_slots(ranked, max_faces):
            for t, detection in zip(track.frames, track.detections):
                _put(per_track, (t, slot), faces[t][detection], large_crop)
                track_ids[t, slot] = track.track_id
        arrays.update({f"tracks_{key}": value for key, value in per_track.items()})
        arrays["tracks_id"] = track_ids
    stats = ClipFaceStats(
        frames=count,
        detected=sum(bool(frame_faces) for frame_faces in faces),
        subject_frames=int(arrays["mask"].sum()),
        tracks=len(ranked),
        full_range_frames=sum(any(f.detector == "full" for f in frame_faces) for frame_faces in faces),
    )
    return arrays, stats
