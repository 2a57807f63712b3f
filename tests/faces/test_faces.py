"""Face detection, mesh and alignment: exact geometry on synthetic data, behaviour on real faces."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import cv2
import matplotlib.cbook
import numpy as np
import pytest
import skimage.data
from mediapipe.framework.formats import landmark_pb2
from mediapipe.python.solutions import face_mesh_connections

from pipeline.faces import (
    CANONICAL_TEMPLATE,
    GRAY_TEMPLATE,
    FaceAnalyzer,
    FaceObservation,
    align,
    five_points,
    similarity_transform,
)
from pipeline.faces.detect import _normalized_xyz
from pipeline.faces.template import IMAGE_LEFT_EYE_CONTOUR, IMAGE_RIGHT_EYE_CONTOUR


def _rotation_scale(angle: float, scale: float) -> np.ndarray:
    cos, sin = np.cos(angle), np.sin(angle)
    return scale * np.array([[cos, -sin], [sin, cos]])


def _box_area(box: np.ndarray) -> float:
    return float((box[2] - box[0]) * (box[3] - box[1]))


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    return inter / (_box_area(a) + _box_area(b) - inter)


def _grace_hopper() -> np.ndarray:
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def analyzer() -> FaceAnalyzer:
    with FaceAnalyzer() as face_analyzer:
        yield face_analyzer


# --- geometry ---------------------------------------------------------------


def test_similarity_transform_recovers_known_transform() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, size=(5, 2))
    linear = _rotation_scale(angle=0.4, scale=1.7)
    translation = np.array([12.5, -33.0])
    dst = src @ linear.T + translation

    matrix = similarity_transform(src, dst)

    np.testing.assert_allclose(matrix, np.hstack([linear, translation[:, None]]), atol=1e-9)


def _umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Reference: Umeyama's SVD solution with the reflection fix."""
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    covariance = (dst - dst_mean).T @ (src - src_mean) / len(src)
    u, singular_values, vt = np.linalg.svd(covariance)
    fix = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
    scale = np.trace(np.diag(singular_values) @ fix) / ((src - src_mean) ** 2).sum(1).mean()
    linear = scale * u @ fix @ vt
    return np.hstack([linear, (dst_mean - linear @ src_mean)[:, None]])


@pytest.mark.parametrize("mirror", [False, True])
def test_similarity_transform_matches_umeyama_on_noisy_points(mirror: bool) -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        src = rng.uniform(0, 300, size=(5, 2))
        dst = src @ _rotation_scale(rng.uniform(-3, 3), rng.uniform(0.1, 3)).T + rng.normal(0, 40, (5, 2))
        if mirror:  # the best orthogonal fit is a reflection: both must return the best rotation
            dst = dst * [-1.0, 1.0]
        np.testing.assert_allclose(similarity_transform(src, dst), _umeyama(src, dst), atol=1e-9)


def test_similarity_transform_refuses_coincident_points() -> None:
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), np.zeros((5, 2)))


def test_similarity_transform_never_reflects() -> None:
    src = CANONICAL_TEMPLATE.astype(np.float64)
    mirrored = src * [-1.0, 1.0]
    assert np.linalg.det(similarity_transform(src, mirrored)[:, :2]) > 0


def _frame_with_dots(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A black RGB frame with a smooth bright blob centred on each point (sub-pixel exact)."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    sigma = 0.02 * shape[1]
    image = np.zeros(shape)
    for x, y in points:
        image = np.maximum(image, np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)))
    return np.repeat((image * 255).round().astype(np.uint8)[..., None], 3, axis=2)


def _dot_centres(crop: np.ndarray, expected: np.ndarray, radius: int) -> np.ndarray:
    """Intensity-weighted centroid of the crop around each expected position."""
    gray = crop[..., 0].astype(np.float64) if crop.ndim == 3 else crop.astype(np.float64)
    ys, xs = np.mgrid[0 : gray.shape[0], 0 : gray.shape[1]]
    centres = []
    for x, y in expected:
        window = (np.abs(xs - x) <= radius) & (np.abs(ys - y) <= radius)
        weights = gray * window
        centres.append([(weights * xs).sum() / weights.sum(), (weights * ys).sum() / weights.sum()])
    return np.array(centres)


@pytest.mark.parametrize(
    ("frame_size", "crop_size", "template", "margin"),
    [
        (320, 112, CANONICAL_TEMPLATE, 0.0),  # enlarging warp
        (320, 112, CANONICAL_TEMPLATE, 0.1),
        (1200, 64, GRAY_TEMPLATE, 0.0),  # strongly shrinking warp: the box-filtered path
    ],
)
def test_align_puts_five_points_on_template(
    frame_size: int, crop_size: int, template: np.ndarray, margin: float
) -> None:
    # A face layout rotated by 20 degrees and scaled to a third of the frame.
    linear = _rotation_scale(angle=np.deg2rad(20), scale=frame_size / 3)
    points = (CANONICAL_TEMPLATE - 0.5) @ linear.T + frame_size / 2
    frame = _frame_with_dots(points, (frame_size, frame_size))

    crop = align(frame, points, crop_size, template=template, margin=margin)

    assert crop.shape == (crop_size, crop_size, 3) and crop.dtype == np.uint8
    expected = (margin + template * (1 - 2 * margin)) * crop_size
    found = _dot_centres(crop, expected, radius=max(2, crop_size // 20))
    assert np.abs(found - expected).max() < 1.0


def test_eye_contours_match_mediapipe_connections() -> None:
    # MediaPipe names eyes after the subject: its RIGHT eye is on the image left.
    image_left = {i for edge in face_mesh_connections.FACEMESH_RIGHT_EYE for i in edge}
    image_right = {i for edge in face_mesh_connections.FACEMESH_LEFT_EYE for i in edge}
    assert set(IMAGE_LEFT_EYE_CONTOUR) == image_left
    assert set(IMAGE_RIGHT_EYE_CONTOUR) == image_right


def test_templates_are_upright_faces() -> None:
    for template in (CANONICAL_TEMPLATE, GRAY_TEMPLATE):
        left_eye, right_eye, nose, left_mouth, right_mouth = template
        assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
        assert ((template > 0) & (template < 1)).all()
    # The FER-like crop is looser and shows more forehead than the ArcFace one.
    assert np.linalg.norm(GRAY_TEMPLATE[1] - GRAY_TEMPLATE[0]) < np.linalg.norm(
        CANONICAL_TEMPLATE[1] - CANONICAL_TEMPLATE[0]
    )
    assert GRAY_TEMPLATE[:2, 1].mean() < CANONICAL_TEMPLATE[:2, 1].mean()


@pytest.mark.parametrize("with_visibility", [False, True])
def test_landmark_decoding_matches_protobuf_fields(with_visibility: bool) -> None:
    # Without visibility the fast fixed-record path runs; with it, the attribute path.
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(478, 3)).astype(np.float32)
    xyz[5] = 0.0  # zeros are still serialized for proto2 optional fields
    message = landmark_pb2.NormalizedLandmarkList()
    for x, y, z in xyz:
        point = message.landmark.add(x=x, y=y, z=z)
        if with_visibility:
            point.visibility = 0.9
    decoded = _normalized_xyz(message.SerializeToString())
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, xyz)


# --- real faces ---------------------------------------------------------------


def _check_observation(observation: FaceObservation | None, known_box: tuple[float, float, float, float]) -> None:
    assert observation is not None
    known = np.array(known_box, dtype=np.float64)
    assert _box_iou(observation.box, known) > 0.6
    assert observation.box.shape == (4,) and observation.box.dtype == np.float32
    assert 0.5 <= observation.score <= 1.0

    landmarks = observation.landmarks
    assert landmarks.shape == (478, 3) and landmarks.dtype == np.float32
    # The detector box spans brows to mouth/chin; the mesh also covers the upper
    # forehead and the jaw, which stick out of it by up to ~20% of its size.
    x0, y0, x1, y1 = observation.box
    pad_x, pad_y = 0.25 * (x1 - x0), 0.25 * (y1 - y0)
    assert (landmarks[:, 0] >= x0 - pad_x).all() and (landmarks[:, 0] <= x1 + pad_x).all()
    assert (landmarks[:, 1] >= y0 - pad_y).all() and (landmarks[:, 1] <= y1 + pad_y).all()

    left_eye, right_eye, nose, left_mouth, right_mouth = five_points(landmarks)
    assert left_eye[0] < nose[0] < right_eye[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])

    assert observation.crop_rgb.shape == (112, 112, 3) and observation.crop_rgb.dtype == np.uint8
    assert observation.crop_gray.shape == (64, 64) and observation.crop_gray.dtype == np.uint8
    assert observation.crop_gray.std() > 10  # an actual image, not a black border


# Face locations checked by eye on the images (x0, y0, x1, y1).
ASTRONAUT_FACE = (175.0, 80.0, 275.0, 180.0)
GRACE_HOPPER_FACE = (170.0, 145.0, 365.0, 340.0)


def test_analyze_finds_astronaut_face(analyzer: FaceAnalyzer) -> None:
    _check_observation(analyzer.analyze(skimage.data.astronaut()), ASTRONAUT_FACE)


def test_analyze_finds_grace_hopper_face(analyzer: FaceAnalyzer) -> None:
    _check_observation(analyzer.analyze(_grace_hopper()), GRACE_HOPPER_FACE)


def test_analyze_accepts_non_contiguous_frames(analyzer: FaceAnalyzer) -> None:
    interleaved = np.zeros((512, 1024, 3), dtype=np.uint8)
    interleaved[:, ::2] = skimage.data.astronaut()
    strided_view = interleaved[:, ::2]
    assert not strided_view.flags.c_contiguous
    _check_observation(analyzer.analyze(strided_view), ASTRONAUT_FACE)


def test_analyze_picks_the_largest_face_and_its_own_mesh(analyzer: FaceAnalyzer) -> None:
    # The astronaut's head at full size beside a 0.6x copy; both are detected.
    top, left = 30, 120
    head = skimage.data.astronaut()[top : top + 220, left : left + 210]
    small = cv2.resize(head, (126, 132), interpolation=cv2.INTER_AREA)
    canvas = np.full((220, 356, 3), 120, dtype=np.uint8)
    canvas[:132, :126] = small
    canvas[:, 146:] = head
    big_face = np.array(ASTRONAUT_FACE) + [146 - left, -top, 146 - left, -top]

    observation = analyzer.analyze(canvas)

    _check_observation(observation, tuple(big_face))
    assert observation.landmarks[:, 0].min() > 146


def test_full_range_fallback_finds_small_face() -> None:
    # The astronaut shrunk into a large canvas: a face ~1/16 of the frame width,
    # too small for the short-range model, so only the full-range fallback finds it.
    side, left, top = 500, 700, 400
    small = cv2.resize(skimage.data.astronaut(), (side, side), interpolation=cv2.INTER_AREA)
    canvas = np.full((1200, 1600, 3), 90, dtype=np.uint8)
    canvas[top : top + side, left : left + side] = small
    face_in_canvas = np.array(ASTRONAUT_FACE) * side / 512 + [left, top, left, top]

    with FaceAnalyzer(model_selection="short") as short_only:
        assert short_only.analyze(canvas) is None
    with FaceAnalyzer(model_selection="auto") as auto:
        observation = auto.analyze(canvas)

    assert observation is not None and observation.detector == "full"  # counted in the faces report
    assert _box_iou(observation.box, face_in_canvas) > 0.5
    centroid = observation.landmarks[:, :2].mean(axis=0)
    assert np.abs(centroid - (face_in_canvas[:2] + face_in_canvas[2:]) / 2).max() < 10
    assert observation.crop_gray.std() > 10


def test_forced_full_range_model_finds_face() -> None:
    with FaceAnalyzer(model_selection="full") as full:
        _check_observation(full.analyze(skimage.data.astronaut()), ASTRONAUT_FACE)


@pytest.mark.parametrize("kind", ["blank", "noise"])
def test_analyze_returns_none_without_face(analyzer: FaceAnalyzer, kind: str) -> None:
    if kind == "blank":
        frame = np.full((240, 320, 3), 128, dtype=np.uint8)
    else:
        frame = np.random.default_rng(0).integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
    assert analyzer.analyze(frame) is None


def test_analyze_rejects_non_rgb_input(analyzer: FaceAnalyzer) -> None:
    with pytest.raises(ValueError):
        analyzer.analyze(np.zeros((64, 64), dtype=np.uint8))
    with pytest.raises(ValueError):
        analyzer.analyze(np.zeros((64, 64, 3), dtype=np.float32))


def test_closed_analyzer_refuses_work() -> None:
    face_analyzer = FaceAnalyzer(model_selection="short")
    face_analyzer.close()
    face_analyzer.close()  # idempotent
    with pytest.raises(RuntimeError):
        face_analyzer.analyze(skimage.data.astronaut())


# --- shared corpora -----------------------------------------------------------------


def _sample_frames(path: Path, indices: tuple[int, ...]) -> list[np.ndarray]:
    frames = []
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in indices:
                frames.append(frame.to_ndarray(format="rgb24"))
            if index >= max(indices):
                break
    return frames


@pytest.mark.parametrize(("corpus", "pattern"), [("mead-mini", "*.mp4"), ("crema-d-mini", "*.flv")])
def test_detection_rate_on_shared_data(shared_data: Path, analyzer: FaceAnalyzer, corpus: str, pattern: str) -> None:
    clips = sorted((shared_data / corpus).glob(pattern))
    assert clips, f"no {pattern} clips in {shared_data / corpus}"
    frames = [frame for clip in clips for frame in _sample_frames(clip, (0, 20, 40))]
    detected = sum(analyzer.analyze(frame) is not None for frame in frames)
    assert detected / len(frames) >= 0.95


def test_mediapipe_loads_without_pyplot_and_pyplot_still_works() -> None:
    """mediapipe's drawing helpers import matplotlib.pyplot (~0.5 s per faces worker); the
    detector defers it to first use, which must still give the real pyplot."""
    script = (
        "import sys\n"
        "import pipeline.faces.detect\n"
        "import mediapipe as mp\n"
        "print('matplotlib.figure' in sys.modules)\n"
        "figure = mp.solutions.drawing_utils.plt.figure()\n"
        "import matplotlib.pyplot as plt\n"
        "print(type(figure).__name__, plt.gcf() is figure, type(sys.modules['matplotlib.pyplot']).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[2], env={**os.environ, "MPLBACKEND": "Agg"})
    assert result.stdout.split() == ["False", "Figure", "True", "module"]
