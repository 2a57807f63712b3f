"""Linking detections into tracks, the main-subject rule, and multi-face clips end to end."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from pipeline.extraction import ClipJob, FaceClipProcessor, fill_store
from pipeline.faces import CANONICAL_TEMPLATE, FaceAnalyzer
from pipeline.faces.track import TrackingParams, assign_slots, box_iou, landmark_distance, link_tracks, rank_tracks
from pipeline.store import FeatureStore


def _face(cx: float, cy: float, side: float) -> tuple[np.ndarray, np.ndarray]:
    box = np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float32)
    points = (CANONICAL_TEMPLATE - 0.5) * side + [cx, cy]
    return box, points.astype(np.float32)


def _sequence():
    """Identity A (large, moving right) and B (small, moving left) cross at frame 4; A is
    missed on frames 6 and 7; a brief false positive C shows on frame 2 only. Detections are
    listed in a shuffled order per frame. Returns boxes, points, identity per detection."""
    rng = np.random.default_rng(0)
    boxes, points, identities = [], [], []
    for t in range(10):
        faces = {"A": _face(40 + 15 * t, 100, 80), "B": _face(160 - 15 * t, 110, 50)}
        if t in (6, 7):
            del faces["A"]
        if t == 2:
            faces["C"] = _face(300, 40, 20)
        names = list(rng.permutation(sorted(faces)))
        boxes.append(np.stack([faces[n][0] for n in names]))
        points.append(np.stack([faces[n][1] for n in names]))
        identities.append(names)
    return boxes, points, identities


def test_tracks_follow_identities_through_crossing_and_missed_frames():
    boxes, points, identities = _sequence()
    assert box_iou(boxes[4][0], boxes[4][1]) > 0.3  # the faces really overlap at the crossing
    tracks = link_tracks(boxes, points, TrackingParams(min_iou=0.3, max_landmark_distance=0.5, max_gap=2))
    names = [{identities[t][d] for t, d in zip(track.frames, track.detections)} for track in tracks]
    assert sorted(map(sorted, names)) == [["A"], ["B"], ["C"]]  # one identity per track, one track per identity
    lengths = {next(iter(n)): track.length for n, track in zip(names, tracks)}
    assert lengths == {"A": 8, "B": 10, "C": 1}


def test_pair_measures_match_their_array_definitions():
    rng = np.random.default_rng(3)
    for _ in range(50):
        centres, sides = rng.uniform(0, 100, (2, 2)), rng.uniform(5, 60, (2, 1))
        a, b = np.hstack([centres - sides / 2, centres + sides / 2])
        points_a, points_b = rng.normal(50, 20, (2, 4, 2))
        inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
        area_a, area_b = np.prod(a[2:] - a[:2]), np.prod(b[2:] - b[:2])
        assert box_iou(a, b) == pytest.approx(inter / (area_a + area_b - inter), abs=1e-12)
        expected = np.linalg.norm(points_a - points_b, axis=1).mean() / np.sqrt(np.sqrt(area_a * area_b))
        assert landmark_distance(points_a.tolist(), a, points_b.tolist(), b) == pytest.approx(expected, rel=1e-12)
    assert box_iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0 and box_iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0


def test_a_gap_longer_than_max_gap_starts_a_new_track():
    boxes, points, _ = _sequence()
    tracks = link_tracks(boxes, points, TrackingParams(max_gap=1))
    assert len(tracks) == 4  # A is split at its two missed frames


def test_main_subject_is_the_longest_track_then_the_largest():
    boxes, points, identities = _sequence()
    ranked = rank_tracks(link_tracks(boxes, points))
    first = {identities[t][d] for t, d in zip(ranked[0].frames, ranked[0].detections)}
    assert first == {"B"}  # B is seen in all 10 frames, A (larger) in 8
    # Equal lengths: the larger face wins.
    two = [np.stack([_face(50, 50, 60)[0], _face(200, 50, 30)[0]]) for _ in range(3)]
    two_points = [np.stack([_face(50, 50, 60)[1], _face(200, 50, 30)[1]]) for _ in range(3)]
    ranked = rank_tracks(link_tracks(two, two_points))
    assert ranked[0].mean_area == pytest.approx(3600)
    with pytest.raises(ValueError):
        rank_tracks(ranked, "loudest")  # type: ignore[arg-type]


def test_slots_share_only_tracks_that_never_overlap_in_time():
    boxes, points, _ = _sequence()
    ranked = rank_tracks(link_tracks(boxes, points, TrackingParams(max_gap=1)))  # A split in two
    placed = assign_slots(ranked, 2)
    for slot in range(2):
        frames = [f for s, track in placed if s == slot for f in track.frames]
        assert len(frames) == len(set(frames))
    assert placed[0][0] == 0 and placed[0][1] is ranked[0]
    # B fills slot 0; A's two pieces share slot 1; C (frame 2, where A and B are both visible) is dropped.
    assert sorted(track.length for s, track in placed if s == 1) == [2, 6]
    assert len(placed) == 3


# --- real faces ---------------------------------------------------------------------


def _two_faces(i: int) -> np.ndarray:
    """448x448: the astronaut's head on the left beside a 0.7x copy on the right, both drifting
    a pixel per frame."""
    head = skimage.data.astronaut()[20:276, 100:356]
    small = cv2.resize(head, (180, 180), interpolation=cv2.INTER_AREA)
    canvas = np.full((448, 448, 3), 110, np.uint8)
    canvas[96:352, 4 + i % 3 : 260 + i % 3] = head
    canvas[136:316, 264 - i % 3 : 444 - i % 3] = small
    return canvas


def test_analyze_faces_returns_both_faces_largest_first():
    with FaceAnalyzer(max_faces=2, large_crop_size=224) as analyzer:
        faces = analyzer.analyze_faces(_two_faces(0))
        main = analyzer.analyze(_two_faces(0))
    assert len(faces) == 2
    assert faces[0].box[2] < 264 <= faces[1].box[0] + 5  # the bigger, left face first
    np.testing.assert_array_equal(main.box, faces[0].box)
    assert faces[0].crop_rgb_large.shape == (224, 224, 3) and faces[0].crop_rgb_large.std() > 10
    assert all(f.detector == "short" for f in faces)


def _processor(root, max_faces: int, landmarks: str = "mesh") -> FaceClipProcessor:
    return FaceClipProcessor(
        str(root), {"max_faces": max_faces}, fps=5, min_detection_confidence=0.5, crop_size=112, gray_size=64,
        detector="auto", crop_rgb_224=True, max_faces=max_faces, landmarks=landmarks,
    )


@pytest.mark.parametrize("landmarks", ["mesh", "keypoints"])
def test_multi_face_clip_stores_one_slot_per_track(tmp_path, clip_factory, landmarks):
    clip = clip_factory("group.mp4", seconds=1.0, size=448, frame=_two_faces)
    jobs = [ClipJob("group", str(clip))]
    store = FeatureStore(tmp_path / "faces")
    fill_store(store, jobs, _processor(store.root, 2, landmarks), {"max_faces": 2}, "faces", workers=1)
    entry = store.read("group")
    arrays = entry.arrays
    assert arrays["tracks_mask"].shape == (5, 2) and arrays["tracks_mask"].all()
    assert arrays["tracks_crop_gray"].shape == (5, 2, 64, 64)
    assert arrays["tracks_crop_rgb"].shape == (5, 2, 112, 112, 3)
    assert arrays["tracks_crop_rgb_224"].shape == (5, 2, 224, 224, 3)
    assert arrays["tracks_keypoints"].shape == (5, 2, 6, 2)
    # Keypoint-aligned stores hold no mesh; tracks are linked on the alignment keypoints.
    assert ("tracks_landmarks" in arrays) == (landmarks == "mesh") and ("landmarks" in arrays) == (landmarks == "mesh")
    if landmarks == "mesh":
        assert arrays["tracks_landmarks"].shape == (5, 2, 478, 3)
    # One track per face, the same in every frame; slot 0 (= the main keys) is the larger face.
    assert (arrays["tracks_id"] == arrays["tracks_id"][0]).all() and len(set(arrays["tracks_id"][0])) == 2
    assert entry.attrs["tracks"] == 2 and entry.attrs["detection_rate"] == 1.0
    np.testing.assert_array_equal(arrays["crop_gray"], arrays["tracks_crop_gray"][:, 0])
    np.testing.assert_array_equal(arrays["box"], arrays["tracks_box"][:, 0])
    assert (arrays["tracks_box"][:, 0, 2] < arrays["tracks_box"][:, 1, 0] + 5).all()
    assert arrays["crop_rgb_224"].shape == (5, 224, 224, 3)

    # With one face per frame the store holds the main keys only, and the same subject.
    single = FeatureStore(tmp_path / "single")
    fill_store(single, jobs, _processor(single.root, 1, landmarks), {"max_faces": 1}, "faces", workers=1)
    one = single.read("group").arrays
    assert not any(key.startswith("tracks_") for key in one)
    np.testing.assert_allclose(one["box"], arrays["box"], atol=1e-3)


def test_faces_report_lists_detection_rate_and_tracks(tmp_path, clip_factory):
    from pipeline.stages.faces import write_report

    face = clip_factory("group.mp4", seconds=1.0, size=448, frame=_two_faces)
    blank = clip_factory("blank.mp4", seconds=1.0, size=64)
    store = FeatureStore(tmp_path / "faces")
    jobs = [ClipJob("group", str(face)), ClipJob("blank", str(blank))]
    fill_store(store, jobs, _processor(store.root, 2), {"max_faces": 2}, "faces", workers=1)
    report = write_report(store).set_index("clip_id")
    assert (store.root / "report.csv").exists()
    assert report.loc["group", "detection_rate"] == 1.0 and report.loc["group", "tracks"] == 2
    assert report.loc["blank", "detection_rate"] == 0.0 and report.loc["blank", "tracks"] == 0
    assert report.loc["group", "frames"] == 5 and report.loc["group", "subject_frames"] == 5
