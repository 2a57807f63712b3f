"""Face geometry from the mesh: exact on a synthetic face with known pose and shape, and
sensible on real MEAD faces."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pipeline.extractors import EXTRACTORS
from pipeline.extractors.face_geometry import (
    CHIN,
    FEATURE_NAMES,
    LEFT_BROW_UPPER,
    LEFT_EYE_LIDS,
    LEFT_MOUTH_CORNER,
    LOWER_LIP_INNER,
    NOSE_TIP,
    RIGHT_BROW_UPPER,
    RIGHT_EYE_LIDS,
    RIGHT_MOUTH_CORNER,
    UPPER_LIP_INNER,
    geometry_features,
)
from pipeline.faces.template import IMAGE_LEFT_EYE_CONTOUR, IMAGE_RIGHT_EYE_CONTOUR
from pipeline.store import Entry

COLUMN = {name: i for i, name in enumerate(FEATURE_NAMES)}


def _head_frame_face(mouth_gap: float = 0.2, corner_lift: float = 0.05) -> np.ndarray:
    """[478,3] face in head coordinates (x right, y up, z out of the face), inter-ocular
    distance 1: eye centres at (-0.5, 0, 0) and (0.5, 0, 0), mouth corners 1.0 below."""
    face = np.zeros((478, 3))
    ring = np.stack([np.cos(np.linspace(0, 2 * np.pi, 16, endpoint=False)), np.sin(np.linspace(0, 2 * np.pi, 16, endpoint=False)), np.zeros(16)], 1)
    face[list(IMAGE_LEFT_EYE_CONTOUR)] = [-0.5, 0, 0] + 0.15 * ring * [1, 0.4, 1]
    face[list(IMAGE_RIGHT_EYE_CONTOUR)] = [0.5, 0, 0] + 0.15 * ring * [1, 0.4, 1]
    for (upper, lower, outer, inner), x in ((LEFT_EYE_LIDS, -0.5), (RIGHT_EYE_LIDS, 0.5)):
        face[upper], face[lower] = [x, 0.06, 0], [x, -0.06, 0]  # aperture 0.12 / 0.3
        face[outer], face[inner] = [x + np.sign(x) * 0.15, 0, 0], [x - np.sign(x) * 0.15, 0, 0]
    for contour, x in ((IMAGE_LEFT_EYE_CONTOUR, -0.5), (IMAGE_RIGHT_EYE_CONTOUR, 0.5)):
        face[list(contour)] += [x, 0, 0] - face[list(contour)].mean(axis=0)  # eye centre exactly there
    face[list(LEFT_BROW_UPPER)] = [-0.5, 0.35, 0.05]
    face[list(RIGHT_BROW_UPPER)] = [0.5, 0.35, 0.05]
    face[[107, 336]] = [[-0.2, 0.35, 0.05], [0.2, 0.35, 0.05]]
    face[LEFT_MOUTH_CORNER], face[RIGHT_MOUTH_CORNER] = [-0.4, -1.0, 0], [0.4, -1.0, 0]
    face[UPPER_LIP_INNER] = [0, -1.0 - corner_lift + mouth_gap / 2, 0.1]
    face[LOWER_LIP_INNER] = [0, -1.0 - corner_lift - mouth_gap / 2, 0.1]
    face[NOSE_TIP], face[CHIN] = [0, -0.5, 0.4], [0, -1.6, 0.1]
    return face


def _to_image(face: np.ndarray, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0, scale: float = 80.0) -> np.ndarray:
    """Pose the head (degrees, viewer's frame: x right, y up, z towards the camera) and map
    it to image pixels (x right, y down, z away from the camera) as MediaPipe reports them."""
    rotation = Rotation.from_euler("YXZ", [yaw, pitch, roll], degrees=True).as_matrix()
    viewer = face @ rotation.T * scale
    return viewer * [1, -1, -1] + [320.0, 240.0, 0.0]


def test_frontal_face_measures_as_designed() -> None:
    features = geometry_features(_to_image(_head_frame_face(mouth_gap=0.2, corner_lift=0.05))[None])[0]
    expected = {
        "mouth_open": 0.2, "mouth_width": 0.8, "jaw_drop": np.linalg.norm([0, 1.1, 0.3]),
        "left_corner_raise": 0.05, "right_corner_raise": 0.05,
        "left_brow_raise": 0.35, "right_brow_raise": 0.35, "brow_gap": 0.4,
        "left_eye_aperture": 0.4, "right_eye_aperture": 0.4, "yaw": 0.0, "pitch": 0.0, "roll": 0.0,
    }
    for name, value in expected.items():
        assert features[COLUMN[name]] == pytest.approx(value, abs=1e-5), name


@pytest.mark.parametrize(("yaw", "pitch", "roll"), [(25.0, 0.0, 0.0), (0.0, 15.0, 0.0), (0.0, 0.0, -20.0), (-30.0, 10.0, 12.0)])
def test_head_pose_recovered_and_shape_features_invariant(yaw: float, pitch: float, roll: float) -> None:
    face = _head_frame_face()
    frontal = geometry_features(_to_image(face)[None])[0]
    posed = geometry_features(_to_image(face, yaw, pitch, roll, scale=37.0)[None])[0]
    np.testing.assert_allclose(posed[[COLUMN["yaw"], COLUMN["pitch"], COLUMN["roll"]]], [yaw, pitch, roll], atol=1e-4)
    np.testing.assert_allclose(posed[: COLUMN["yaw"]], frontal[: COLUMN["yaw"]], atol=1e-5)


def test_pose_signs_follow_the_image() -> None:
    face = _head_frame_face()
    turned = _to_image(face, yaw=30.0)
    assert turned[NOSE_TIP, 0] > 320.0  # yaw > 0: the nose moves to the image right
    tilted = _to_image(face, pitch=20.0)
    assert tilted[NOSE_TIP, 1] > _to_image(face)[NOSE_TIP, 1]  # pitch > 0: nose down in the image


def test_opening_the_mouth_grows_mouth_open_only() -> None:
    closed = geometry_features(_to_image(_head_frame_face(mouth_gap=0.05), yaw=20)[None])[0]
    opened = geometry_features(_to_image(_head_frame_face(mouth_gap=0.4), yaw=20)[None])[0]
    assert opened[COLUMN["mouth_open"]] - closed[COLUMN["mouth_open"]] == pytest.approx(0.35, abs=1e-5)
    assert opened[COLUMN["mouth_width"]] == pytest.approx(closed[COLUMN["mouth_width"]], abs=1e-6)


def test_extractor_keeps_masked_frames_masked() -> None:
    extractor = EXTRACTORS.get("face_geometry")(EXTRACTORS.get("face_geometry").Config())
    landmarks = np.stack([_to_image(_head_frame_face()), np.zeros((478, 3)), _to_image(_head_frame_face(), yaw=10)]).astype(np.float32)
    mask = np.array([1, 0, 1], np.uint8)
    features = extractor.extract(Entry("clip", {"landmarks": landmarks, "mask": mask, "timestamps": np.array([0.0, 0.2, 0.4])}, {}))
    assert features.data.shape == (3, len(FEATURE_NAMES))
    assert np.isfinite(features.data).all() and not features.data[1].any()
    np.testing.assert_array_equal(features.mask, mask)
    assert features.data[2, COLUMN["yaw"]] == pytest.approx(10.0, abs=1e-3)
    assert extractor.weights_sha256 == "" and "no weights" in extractor.weights_origin
    assert extractor.identity()["extractor"] == "face_geometry"


def _mean_features(video: Path) -> np.ndarray:
    from pipeline.faces import FaceAnalyzer
    from pipeline.media import sample_frames

    with FaceAnalyzer() as analyzer:
        faces = [analyzer.analyze(frame) for _, frame in sample_frames(video, 2.0)]
    return geometry_features(np.stack([face.landmarks for face in faces if face is not None])).mean(axis=0)


def test_mead_expressions_move_the_expected_measures(shared_data: Path) -> None:
    """Per actor: surprise raises the brows and opens the eyes, a smile widens the mouth,
    compared with the same actor's neutral clip."""
    for actor in ("M030", "W009", "W011"):
        clip = {e: shared_data / "mead-mini" / f"{actor}_front_{e}_level{1 if e == 'neutral' else 3}_001.mp4" for e in ("neutral", "surprised", "happy")}
        neutral, surprised, happy = (_mean_features(clip[e]) for e in ("neutral", "surprised", "happy"))
        assert surprised[COLUMN["left_brow_raise"]] > neutral[COLUMN["left_brow_raise"]], actor
        assert surprised[COLUMN["right_brow_raise"]] > neutral[COLUMN["right_brow_raise"]], actor
        assert surprised[[COLUMN["left_eye_aperture"], COLUMN["right_eye_aperture"]]].mean() > neutral[[COLUMN["left_eye_aperture"], COLUMN["right_eye_aperture"]]].mean(), actor
        assert happy[COLUMN["mouth_width"]] > 1.08 * neutral[COLUMN["mouth_width"]], actor
        assert abs(neutral[COLUMN["yaw"]]) < 10 and abs(neutral[COLUMN["roll"]]) < 10, actor  # frontal view
