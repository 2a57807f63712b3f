"""Linking per-frame face detections into tracks, and choosing the clip's main subject.

Frames are sampled sparsely (a few per second), so a face moves little between two
sampled frames relative to its own size, but faces may cross, leave, or be missed for a
frame or two. Detections of consecutive sampled frames are matched by the Hungarian
algorithm on a cost that combines box overlap (1 - IoU) and the mean distance between the
points the faces were aligned from (the five mesh points, or the detector's four alignment
keypoints) normalised by the face size; a pair is only allowed when the IoU is
at least ``min_iou`` *or* the normalised landmark distance is at most
``max_landmark_distance`` (two crossing faces overlap in box but not in landmarks, a fast
head turn moves the box but not the whole layout). Each track's last detection is moved by
its constant-velocity prediction before comparing. A track that finds no match stays open
for ``max_gap`` sampled frames.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

SubjectRule = Literal["longest_largest"]


@dataclass(frozen=True)
class TrackingParams:
    min_iou: float = 0.3
    max_landmark_distance: float = 0.5  # mean alignment-point distance / sqrt(box area)
    max_gap: int = 2                    # sampled frames a track may miss and still continue


@dataclass
class Track:
    track_id: int
    frames: list[int] = field(default_factory=list)        # sampled-frame indices, increasing
    detections: list[int] = field(default_factory=list)    # index of the detection within its frame
    areas: list[float] = field(default_factory=list)

    @property
    def length(self) -> int:
        return len(self.frames)

    @property
    def mean_area(self) -> float:
        return float(np.mean(self.areas)) if self.areas else 0.0


Box = tuple[float, float, float, float]
Points = list[list[float]]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two boxes (x0, y0, x1, y1)."""
    inter = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    union = _area(a) + _area(b) - inter
    return inter / max(union, 1e-9) if union > 0 else 0.0


def landmark_distance(points_a: Points, box_a: Sequence[float], points_b: Points, box_b: Sequence[float]) -> float:
    """Mean distance of corresponding alignment points ([K, 2] each), divided by the geometric
    mean of the two faces' sizes (sqrt of box area)."""
    distance = sum(math.hypot(xa - xb, ya - yb) for (xa, ya), (xb, yb) in zip(points_a, points_b)) / len(points_a)
    return distance / math.sqrt(math.sqrt(max(_area(box_a), 1e-9) * max(_area(box_b), 1e-9)))


def _area(box: Sequence[float]) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def _assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one matching of rows to columns."""
    if cost.shape == (1, 1):  # one open track, one face: the common single-person frame
        return np.zeros(1, np.intp), np.zeros(1, np.intp)
    # Imported here: scipy.optimize takes ~0.4 s to import, paid by every faces worker.
    from scipy.optimize import linear_sum_assignment

    return linear_sum_assignment(cost)


@dataclass
class _OpenTrack:
    last_frame: int
    box: Box
    points: Points
    velocity: tuple[float, float]  # box-centre motion per sampled frame

    def predicted(self, t: int) -> tuple[Box, Points]:
        """Box and points moved by the constant-velocity prediction to frame t."""
        steps = t - self.last_frame
        dx, dy = self.velocity[0] * steps, self.velocity[1] * steps
        x0, y0, x1, y1 = self.box
        return (x0 + dx, y0 + dy, x1 + dx, y1 + dy), [[x + dx, y + dy] for x, y in self.points]


def link_tracks(
    boxes: Sequence[Sequence[Sequence[float]]],
    points: Sequence[Sequence[np.ndarray]],
    params: TrackingParams = TrackingParams(),
) -> list[Track]:
    """Tracks over sampled frames; ``boxes[t]`` holds frame t's N_t boxes ([N_t, 4]) and
    ``points[t]`` their alignment points ([N_t, K, 2], the same K throughout). Returns the
    tracks in order of creation; every detection belongs to exactly one track.

    A frame holds a handful of faces at most, so costs are computed pair by pair in plain
    Python: numpy's per-call overhead on such tiny arrays cost more than the arithmetic
    (~0.3 ms per frame, several percent of a keypoints-aligned frame)."""
    tracks: list[Track] = []
    open_tracks: dict[int, _OpenTrack] = {}
    for t, (frame_boxes, frame_points) in enumerate(zip(boxes, points)):
        frame_boxes = [tuple(float(v) for v in np.asarray(box).reshape(4)) for box in frame_boxes]
        frame_points = [np.asarray(p, np.float64).reshape(-1, 2).tolist() for p in frame_points]
        open_tracks = {k: v for k, v in open_tracks.items() if t - v.last_frame <= params.max_gap + 1}
        ids = list(open_tracks)
        matched: dict[int, int] = {}  # detection -> track id
        if ids and frame_boxes:
            cost = np.empty((len(ids), len(frame_boxes)))
            allowed = np.empty(cost.shape, bool)
            for row, track_id in enumerate(ids):
                track = open_tracks[track_id]
                previous_box, previous_points = track.predicted(t)
                # A recent track wins over an old one.
                age = t - track.last_frame - 1
                for col, (box, face_points) in enumerate(zip(frame_boxes, frame_points)):
                    iou = box_iou(previous_box, box)
                    distance = landmark_distance(previous_points, previous_box, face_points, box)
                    allowed[row, col] = iou >= params.min_iou or distance <= params.max_landmark_distance
                    # Landmark distance counts fully up to its threshold.
                    cost[row, col] = (1.0 - iou) + distance / params.max_landmark_distance + 0.1 * age if allowed[row, col] else 1e6
            rows, cols = _assignment(cost)
            for row, col in zip(rows, cols):
                if allowed[row, col]:
                    matched[int(col)] = ids[row]
        for detection, (box, face_points) in enumerate(zip(frame_boxes, frame_points)):
            track_id = matched.get(detection)
            if track_id is None:
                track_id = len(tracks)
                tracks.append(Track(track_id))
            velocity = (0.0, 0.0)
            if track_id in open_tracks:
                last = open_tracks[track_id]
                steps = t - last.last_frame
                velocity = (
                    ((box[0] + box[2]) - (last.box[0] + last.box[2])) / 2 / steps,
                    ((box[1] + box[3]) - (last.box[1] + last.box[3])) / 2 / steps,
                )
            track = tracks[track_id]
            track.frames.append(t)
            track.detections.append(detection)
            track.areas.append(_area(box))
            open_tracks[track_id] = _OpenTrack(t, box, face_points, velocity)
    return tracks


def rank_tracks(tracks: list[Track], rule: SubjectRule = "longest_largest") -> list[Track]:
    """Tracks best first. ``longest_largest``: the track seen in the most sampled frames,
    ties broken by the larger mean box area (the subject of a single-person clip is on screen
    throughout and is the biggest face; a background face or a false positive is brief or small)."""
    if rule != "longest_largest":
        raise ValueError(f"unknown subject rule {rule!r}; available: ['longest_largest']")
    return sorted(tracks, key=lambda track: (-track.length, -track.mean_area, track.track_id))


def assign_slots(tracks: list[Track], slots: int) -> list[tuple[int, Track]]:
    """Put ranked tracks into ``slots`` per-frame slots: each track goes to the first slot free
    on all its frames (so tracks that never overlap in time may share a slot); tracks that fit
    nowhere are dropped. Slot 0 holds the best track. Returns (slot, track) pairs."""
    occupied: list[set[int]] = [set() for _ in range(slots)]
    placed = []
    for track in tracks:
        frames = set(track.frames)
        for slot in range(slots):
            if not occupied[slot] & frames:
                occupied[slot] |= frames
                placed.append((slot, track))
                break
    return placed
