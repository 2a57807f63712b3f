"""Linking per-frame face detections into tracks, and choosing the clip's main subject.

Frames are sampled sparsely (a few per second), so a face moves little between two
sampled frames relative to its own size, but faces may cross, leave, or be missed for a
frame or two. Detections of consecutive sampled frames are matched by the Hungarian
algorithm on a cost that combines box overlap (1 - IoU) and the mean distance between the
five alignment points normalised by the face size; a pair is only allowed when the IoU is
at least ``min_iou`` *or* the normalised landmark distance is at most
``max_landmark_distance`` (two crossing faces overlap in box but not in landmarks, a fast
head turn moves the box but not the whole layout). Each track's last detection is moved by
its constant-velocity prediction before comparing. A track that finds no match stays open
for ``max_gap`` sampled frames.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

SubjectRule = Literal["longest_largest"]


@dataclass(frozen=True)
class TrackingParams:
    min_iou: float = 0.3
    max_landmark_distance: float = 0.5  # mean 5-point distance / sqrt(box area)
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


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between every box of a [N, 4] and every box of b [M, 4] (x0, y0, x1, y1) -> [N, M]."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def landmark_distance(points_a: np.ndarray, boxes_a: np.ndarray, points_b: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Mean distance of corresponding 5-point landmarks [N,5,2] vs [M,5,2], divided by the
    geometric mean of the two faces' sizes (sqrt of box area) -> [N, M]."""
    points_a = np.asarray(points_a, np.float64).reshape(-1, 5, 2)
    points_b = np.asarray(points_b, np.float64).reshape(-1, 5, 2)
    distance = np.linalg.norm(points_a[:, None] - points_b[None], axis=-1).mean(-1)
    size_a = np.sqrt(np.maximum(_areas(boxes_a), 1e-9))
    size_b = np.sqrt(np.maximum(_areas(boxes_b), 1e-9))
    return distance / np.sqrt(size_a[:, None] * size_b[None, :])


def _centre(box: np.ndarray) -> np.ndarray:
    return (box[:2] + box[2:]) / 2


def _areas(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one matching of rows to columns."""
    if cost.shape == (1, 1):  # one open track, one face: the common single-person frame
        return np.zeros(1, np.intp), np.zeros(1, np.intp)
    # Imported here: scipy.optimize takes ~0.4 s to import, paid by every faces worker.
    from scipy.optimize import linear_sum_assignment

    return linear_sum_assignment(cost)


def link_tracks(
    boxes: Sequence[np.ndarray],
    points: Sequence[np.ndarray],
    params: TrackingParams = TrackingParams(),
) -> list[Track]:
    """Tracks over sampled frames; ``boxes[t]`` is [N_t, 4] and ``points[t]`` [N_t, 5, 2]
    (the five alignment points) for frame t. Returns the tracks in order of creation;
    every detection belongs to exactly one track."""
    tracks: list[Track] = []
    # Open tracks: id -> (last frame, box, points, centre velocity per sampled frame)
    open_tracks: dict[int, tuple[int, np.ndarray, np.ndarray, np.ndarray]] = {}
    for t, (frame_boxes, frame_points) in enumerate(zip(boxes, points)):
        frame_boxes = np.asarray(frame_boxes, np.float64).reshape(-1, 4)
        frame_points = np.asarray(frame_points, np.float64).reshape(-1, 5, 2)
        open_tracks = {k: v for k, v in open_tracks.items() if t - v[0] <= params.max_gap + 1}
        ids = list(open_tracks)
        matched: dict[int, int] = {}  # detection -> track id
        if ids and len(frame_boxes):
            shift = np.stack([open_tracks[k][3] * (t - open_tracks[k][0]) for k in ids])
            previous_boxes = np.stack([open_tracks[k][1] for k in ids]) + np.tile(shift, 2)
            previous_points = np.stack([open_tracks[k][2] for k in ids]) + shift[:, None]
            iou = box_iou(previous_boxes, frame_boxes)
            distance = landmark_distance(previous_points, previous_boxes, frame_points, frame_boxes)
            allowed = (iou >= params.min_iou) | (distance <= params.max_landmark_distance)
            # Landmark distance counts fully up to its threshold; a recent track wins over an old one.
            age = np.array([t - open_tracks[k][0] - 1 for k in ids], np.float64)[:, None]
            cost = (1.0 - iou) + distance / params.max_landmark_distance + 0.1 * age
            cost = np.where(allowed, cost, 1e6)
            rows, cols = _assignment(cost)
            for row, col in zip(rows, cols):
                if allowed[row, col]:
                    matched[int(col)] = ids[row]
        for detection in range(len(frame_boxes)):
            track_id = matched.get(detection)
            if track_id is None:
                track_id = len(tracks)
                tracks.append(Track(track_id))
            track = tracks[track_id]
            box = frame_boxes[detection]
            velocity = np.zeros(2)
            if track_id in open_tracks:
                last_t, last_box = open_tracks[track_id][:2]
                velocity = (_centre(box) - _centre(last_box)) / (t - last_t)
            track.frames.append(t)
            track.detections.append(detection)
            track.areas.append(float(_areas(box)[0]))
            open_tracks[track_id] = (t, box, frame_points[detection], velocity)
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
