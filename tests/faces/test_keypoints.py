"""Crops aligned from the detector's keypoints (faces.landmarks: keypoints), the crops a store
holds, and params validation of extractors against them."""
from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib.cbook
import numpy as np
import pytest
import skimage.data
import yaml

from pipeline.config import ParamsError, load_params
from pipeline.extraction import ClipJob, FaceClipProcessor, fill_store
from pipeline.faces import CANONICAL_TEMPLATE, GRAY_TEMPLATE, FaceAnalyzer, five_points, similarity_transform
from pipeline.faces.align import compose, template_px
from pipeline.faces.clip import unavailable_keys
from pipeline.faces.template import ALIGNMENT_KEYPOINTS, KEYPOINT_TEMPLATE, gray_layout
from pipeline.store import FeatureStore


REPO = Path(__file__).resolve().parents[2]


def _photos() -> list[np.ndarray]:
    hopper = cv2.imread(str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return [skimage.data.astronaut(), cv2.cvtColor(hopper, cv2.COLOR_BGR2RGB)]


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def test_keypoint_crops_frame_the_face_as_the_mesh_crops_do() -> None:
    with FaceAnalyzer(landmarks="mesh") as mesh, FaceAnalyzer(landmarks="keypoints", large_crop_size=224) as keypoints:
        for photo in _photos():
            by_mesh, by_keypoints = mesh.analyze(photo), keypoints.analyze(photo)
            assert by_keypoints.landmarks is None and by_keypoints.points.shape == (4, 2)
            # The standalone short-range detector is the mesh graph's own: same box, score, keypoints.
            np.testing.assert_array_equal(by_keypoints.box, by_mesh.box)
            np.testing.assert_array_equal(by_keypoints.keypoints, by_mesh.keypoints)
            assert by_keypoints.score == by_mesh.score
            left_eye, right_eye, nose, mouth = by_keypoints.keypoints[list(ALIGNMENT_KEYPOINTS)]
            assert left_eye[0] < nose[0] < right_eye[0] and max(left_eye[1], right_eye[1]) < nose[1] < mouth[1]
            assert by_keypoints.crop_rgb.shape == (112, 112, 3) and by_keypoints.crop_rgb_large.shape == (224, 224, 3)
            assert by_keypoints.crop_gray.shape == (64, 64) and by_keypoints.crop_gray.std() > 10
            # Where the mesh's five points land in the keypoint-aligned crop: within 0.2 of the
            # inter-ocular distance of the template points (0.13 and 0.10 measured on these photos).
            five = five_points(by_mesh.landmarks).astype(np.float64)
            fit = similarity_transform(by_keypoints.points, KEYPOINT_TEMPLATE)
            inter_ocular = np.linalg.norm(CANONICAL_TEMPLATE[1] - CANONICAL_TEMPLATE[0])
            assert np.linalg.norm(_apply(fit, five) - CANONICAL_TEMPLATE, axis=1).mean() / inter_ocular < 0.2


def test_one_fit_per_face_gives_each_crop_its_own_least_squares_alignment() -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform(40, 200, (4, 2))
    fit = similarity_transform(points, KEYPOINT_TEMPLATE)
    for size, template in [(64, gray_layout(KEYPOINT_TEMPLATE)), (224, KEYPOINT_TEMPLATE)]:
        layout = similarity_transform(KEYPOINT_TEMPLATE, template_px(size, template))
        # Exact but for the float32 templates' rounding: far below warpAffine's 1/32 px steps.
        np.testing.assert_allclose(compose(layout, fit), similarity_transform(points, template_px(size, template)), atol=1e-4)
    np.testing.assert_allclose(gray_layout(CANONICAL_TEMPLATE), GRAY_TEMPLATE, atol=1e-7)


def test_analyzer_without_rgb_crop_or_with_unknown_landmarks() -> None:
    with FaceAnalyzer(crop_size=0, landmarks="keypoints") as analyzer:
        face = analyzer.analyze(skimage.data.astronaut())
    assert face.crop_rgb is None and face.crop_gray.shape == (64, 64)
    with pytest.raises(ValueError, match="landmarks must be one of"):
        FaceAnalyzer(landmarks="iris")


def _face_frame(i: int) -> np.ndarray:
    return np.ascontiguousarray(skimage.data.astronaut()[20 + i % 5 : 276 + i % 5, 100:356])


def test_keypoints_store_holds_no_mesh_and_only_the_configured_crops(tmp_path, clip_factory) -> None:
    clip = clip_factory("face.mp4", seconds=1.0, size=256, frame=lambda i: _face_frame(i) if i < 12 else np.zeros((256, 256, 3), np.uint8))
    jobs = [ClipJob("face", str(clip))]
    entries = {}
    for landmarks, crop_rgb in [("mesh", True), ("keypoints", False)]:
        store = FeatureStore(tmp_path / landmarks)
        processor = FaceClipProcessor(str(store.root), {"l": landmarks}, fps=5, min_detection_confidence=0.5, crop_size=112,
                                      gray_size=64, detector="auto", landmarks=landmarks, crop_rgb=crop_rgb)
        fill_store(store, jobs, processor, {"l": landmarks}, "faces", workers=1)
        entries[landmarks] = store.read("face")
    mesh, keypoints = entries["mesh"], entries["keypoints"]
    assert sorted(keypoints.arrays) == ["box", "crop_gray", "keypoints", "mask", "score", "timestamps"]
    assert {"landmarks", "crop_rgb", "keypoints"} <= set(mesh.arrays)
    assert keypoints.attrs["landmarks"] == "keypoints" and mesh.attrs["landmarks"] == "mesh"
    assert keypoints.arrays["keypoints"].shape == (5, 6, 2) and keypoints.arrays["crop_gray"].shape == (5, 64, 64)
    # The same faces found (frames 0-2 of 5 have one), the same detections.
    np.testing.assert_array_equal(keypoints.mask, [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(keypoints.mask, mesh.mask)
    np.testing.assert_array_equal(keypoints.arrays["keypoints"], mesh.arrays["keypoints"])
    assert not keypoints.arrays["crop_gray"][3:].any() and keypoints.arrays["crop_gray"][:3].std() > 10


def test_unavailable_keys_name_the_setting_that_stores_them() -> None:
    assert unavailable_keys(["crop_gray", "mask", "timestamps", "keypoints"], "keypoints", False) == {}
    missing = unavailable_keys(["landmarks", "crop_rgb", "crop_rgb_224", "tracks_crop_gray", "depth"], "keypoints", False)
    assert missing == {
        "landmarks": "faces.landmarks: mesh (keypoints alignment stores no face mesh)",
        "crop_rgb": "faces.crop_rgb: true",
        "crop_rgb_224": "faces.crop_rgb_224: true",
        "tracks_crop_gray": "faces.max_faces > 1 (per-track arrays)",
        "depth": "no faces setting (the faces stage never writes it)",
    }
    assert unavailable_keys(["tracks_landmarks", "tracks_id"], "mesh", max_faces=2) == {}
    assert "tracks_landmarks" in unavailable_keys(["tracks_landmarks"], "keypoints", max_faces=2)


def _params(tmp_path: Path, faces: dict, extractor: dict) -> Path:
    """The repository's params.yaml with these faces settings and one more face extractor."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["faces"].update(faces)
    params["extractors"]["extra"] = {"input": "faces", **extractor}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.parametrize(
    "faces, extractor, message",
    [
        ({"landmarks": "keypoints"}, {"type": "face_geometry"},
         r"extractors\.extra: face_geometry reads 'landmarks' .*needs faces\.landmarks: mesh"),
        ({"crop_rgb": False}, {"type": "torchvision_backbone"}, r"torchvision_backbone reads 'crop_rgb' .*faces\.crop_rgb: true"),
        ({"crop_rgb": True, "crop_rgb_224": False}, {"type": "torchvision_backbone", "options": {"crop": "crop_rgb_224"}},
         r"reads 'crop_rgb_224' .*faces\.crop_rgb_224: true"),
        ({"max_faces": 1}, {"type": "fer_mini_xception", "options": {"faces": "mean"}}, r"reads 'tracks_crop_gray' .*max_faces > 1"),
    ],
)
def test_params_reject_an_extractor_reading_what_the_faces_store_lacks(tmp_path, faces, extractor, message) -> None:
    with pytest.raises(ParamsError, match=message):
        load_params(_params(tmp_path, faces, extractor))


def test_params_accept_what_the_faces_store_holds(tmp_path) -> None:
    assert load_params(_params(tmp_path, {"landmarks": "mesh"}, {"type": "face_geometry"})).faces.landmarks == "mesh"
    keypoints = load_params(_params(tmp_path, {"landmarks": "keypoints", "crop_rgb": False}, {"type": "gray_crops"}))
    assert keypoints.faces.landmarks == "keypoints" and not keypoints.faces.crop_rgb
    assert load_params(REPO / "params.yaml").faces.landmarks == "mesh"  # the default
