"""One clip's faces-store arrays from the faces found on its sampled frames.

The keys every extractor reads (``timestamps``, ``mask``, ``box``, ``score``, ``keypoints``,
``crop_gray`` and, as configured, ``landmarks``, ``crop_rgb`` and ``crop_rgb_224``) describe
the clip's *main subject*: the best track under ``subject`` (see
:func:`pipeline.faces.track.rank_tracks`); frames where that track has no detection are
masked. With ``max_faces > 1`` the same arrays also exist per track slot with a ``tracks_``
prefix and a slot axis after time (``tracks_mask [T, F]``, ``tracks_crop_gray [T, F, 64, 64]``,
...), plus ``tracks_id [T, F]`` (the track in each slot, -1 where empty); slot 0 holds the main
subject's track.

Which optional keys a store holds follows from the faces settings alone
(:func:`unavailable_keys`), so params validation can reject an extractor that reads a key the
faces stage will not write before any work starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from pipeline.faces.template import NUM_KEYPOINTS, NUM_MESH_LANDMARKS, five_points
from pipeline.faces.track import SubjectRule, TrackingParams, assign_slots, link_tracks, rank_tracks

if TYPE_CHECKING:  # the detector (and mediapipe) load only where faces are detected
    from pipeline.faces.detect import FaceObservation

LARGE_CROP_SIZE = 224
LARGE_CROP_KEY = "crop_rgb_224"
_ALWAYS_STORED = ("timestamps", "mask", "box", "score", "keypoints", "crop_gray")


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


def unavailable_keys(
    keys: Iterable[str], landmarks: str = "mesh", crop_rgb: bool = True, crop_rgb_224: bool = False, max_faces: int = 1
) -> dict[str, str]:
    """Each of ``keys`` that a faces store made with these settings does not hold -> the
    setting that would make it hold it (or why none does)."""
    optional = {
        "landmarks": (landmarks == "mesh", "faces.landmarks: mesh (keypoints alignment stores no face mesh)"),
        "crop_rgb": (crop_rgb, "faces.crop_rgb: true"),
        LARGE_CROP_KEY: (crop_rgb_224, f"faces.{LARGE_CROP_KEY}: true"),
    }
    missing = {}
    for key in keys:
        base = key.removeprefix("tracks_")
        if key != base and max_faces < 2:
            missing[key] = "faces.max_faces > 1 (per-track arrays)"
        elif key == "tracks_id" or base in _ALWAYS_STORED:
            continue
        elif base in optional:
            stored, fix = optional[base]
            if not stored:
                missing[key] = fix
        else:
            missing[key] = "no faces setting (the faces stage never writes it)"
    return missing


@dataclass(frozen=True)
class _Layout:
    """The per-face arrays of a store: key -> (shape after the time/slot axes, dtype, FaceObservation field)."""

    fields: dict[str, tuple[tuple[int, ...], type, str]]

    @classmethod
    def of(cls, crop_size: int, gray_size: int, large_crop: bool, landmarks: str) -> _Layout:
        fields = {
            "box": ((4,), np.float32, "box"),
            "score": ((), np.float32, "score"),
            "keypoints": ((NUM_KEYPOINTS, 2), np.float32, "keypoints"),
        }
        if landmarks == "mesh":
            fields["landmarks"] = ((NUM_MESH_LANDMARKS, 3), np.float32, "landmarks")
        if crop_size:
            fields["crop_rgb"] = ((crop_size, crop_size, 3), np.uint8, "crop_rgb")
        fields["crop_gray"] = ((gray_size, gray_size), np.uint8, "crop_gray")
        if large_crop:
            fields[LARGE_CROP_KEY] = ((LARGE_CROP_SIZE, LARGE_CROP_SIZE, 3), np.uint8, "crop_rgb_large")
        return cls(fields)

    def empty(self, count: int, lead: tuple[int, ...]) -> dict[str, np.ndarray]:
        arrays = {"mask": np.zeros((count, *lead), np.uint8)}
        arrays.update({key: np.zeros((count, *lead, *shape), dtype) for key, (shape, dtype, _) in self.fields.items()})
        return arrays

    def put(self, arrays: dict[str, np.ndarray], index: tuple[int, ...], face: FaceObservation) -> None:
        arrays["mask"][index] = 1
        for key, (_, _, field) in self.fields.items():
            arrays[key][index] = getattr(face, field)


def clip_arrays(
    timestamps: Sequence[float],
    faces: Sequence[Sequence[FaceObservation]],
    crop_size: int,
    gray_size: int,
    large_crop: bool = False,
    max_faces: int = 1,
    subject: SubjectRule = "longest_largest",
    tracking: TrackingParams = TrackingParams(),
    landmarks: str = "mesh",
) -> tuple[dict[str, np.ndarray], ClipFaceStats]:
    """``faces[t]``: the faces found on sampled frame t (any order, at most ``max_faces`` kept,
    largest first). ``crop_size`` 0: no ``crop_rgb``; ``landmarks`` "keypoints": no ``landmarks``.
    Tracks are linked on the points each face was aligned from."""
    count = len(timestamps)
    faces = [list(frame_faces)[:max_faces] for frame_faces in faces]
    boxes = [[f.box for f in frame_faces] for frame_faces in faces]
    points = [[f.points if f.points is not None else five_points(f.landmarks) for f in frame_faces] for frame_faces in faces]
    ranked = rank_tracks(link_tracks(boxes, points, tracking), subject)

    layout = _Layout.of(crop_size, gray_size, large_crop, landmarks)
    arrays = {"timestamps": np.asarray(timestamps, np.float64), **layout.empty(count, ())}
    if ranked:
        main = ranked[0]
        for t, detection in zip(main.frames, main.detections):
            layout.put(arrays, (t,), faces[t][detection])
    if max_faces > 1:
        per_track = layout.empty(count, (max_faces,))
        track_ids = np.full((count, max_faces), -1, np.int32)
        for slot, track in assign_slots(ranked, max_faces):
            for t, detection in zip(track.frames, track.detections):
                layout.put(per_track, (t, slot), faces[t][detection])
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
