"""Hand-crafted face geometry from the 478-point MediaPipe mesh of the faces store: mouth,
lips, brows, eyes and head pose per sampled frame. No weights.

Distances are measured in the head's own frame (the mesh rotated back to frontal) and
divided by the inter-ocular distance, so they do not change with head rotation, distance to
the camera or image size. The head frame is fixed by four points that lie close to one plane
of the face: x from the image-left to the image-right eye centre, y ("up") from the mouth
corners' midpoint towards the eyes' midpoint, made orthogonal to x, z = x cross y, pointing
out of the face. Head pose is that frame's rotation, in degrees, in the viewer's frame
(x right, y up, z towards the camera): yaw > 0 turns the nose to the image right, pitch > 0
tilts it down, roll > 0 turns the eye line counter-clockwise as seen in the image.
The mesh's z is MediaPipe's relative depth (scaled like x), which is weak-perspective: good
for the pose of a face, not metric. The eyes sit deeper than the mouth corners, so a face
looking straight at the camera reads a pitch of about -5 to -15 degrees (MEAD frontal clips):
pitch is best used relative to the same speaker's other frames.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.extractors import EXTRACTORS, Extractor, Features
from pipeline.store import Entry

# The eye contours and mesh size come from pipeline.faces.template, imported where used:
# importing pipeline.faces loads OpenCV, which computing a key never needs.

# MediaPipe face-mesh indices; "left"/"right" are image sides (see pipeline.faces.template).
UPPER_LIP_INNER, LOWER_LIP_INNER = 13, 14
LEFT_MOUTH_CORNER, RIGHT_MOUTH_CORNER = 61, 291
NOSE_TIP, CHIN = 1, 152
LEFT_BROW_UPPER = (70, 63, 105, 66, 107)
RIGHT_BROW_UPPER = (300, 293, 334, 296, 336)
LEFT_BROW_INNER, RIGHT_BROW_INNER = 107, 336
# (upper lid, lower lid, outer corner, inner corner)
LEFT_EYE_LIDS = (159, 145, 33, 133)
RIGHT_EYE_LIDS = (386, 374, 263, 362)

FEATURE_NAMES: tuple[str, ...] = (
    "mouth_open",         # inner-lip gap / IOD
    "mouth_width",        # corner-to-corner / IOD
    "jaw_drop",           # nose tip to chin / IOD
    "left_corner_raise",  # height of the corner above the inner-lip midpoint / IOD (smile > 0)
    "right_corner_raise",
    "left_brow_raise",    # height of the brow's upper edge above the eye centre / IOD
    "right_brow_raise",
    "brow_gap",           # inner brow ends' distance / IOD (smaller when frowning)
    "left_eye_aperture",  # lid gap / eye width
    "right_eye_aperture",
    "yaw",                # degrees
    "pitch",
    "roll",
)

# Image (x right, y down, z away from the camera) -> viewer's frame (x right, y up, z towards the camera).
_IMAGE_TO_VIEWER = np.diag([1.0, -1.0, -1.0])


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def head_frames(mesh: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rotation [T,3,3] whose columns are the head's x (right), y (up) and z (out of the
    face) axes in image coordinates, eye-line midpoint [T,3], inter-ocular distance [T])
    of meshes [T,478,3]."""
    from pipeline.faces.template import IMAGE_LEFT_EYE_CONTOUR, IMAGE_RIGHT_EYE_CONTOUR

    left_eye = mesh[:, list(IMAGE_LEFT_EYE_CONTOUR)].mean(axis=1)
    right_eye = mesh[:, list(IMAGE_RIGHT_EYE_CONTOUR)].mean(axis=1)
    eyes_mid = (left_eye + right_eye) / 2
    mouth_mid = (mesh[:, LEFT_MOUTH_CORNER] + mesh[:, RIGHT_MOUTH_CORNER]) / 2
    x_axis = _unit(right_eye - left_eye)
    up = eyes_mid - mouth_mid
    y_axis = _unit(up - (up * x_axis).sum(-1, keepdims=True) * x_axis)
    # The image frame is right-handed too, so x cross up is the outward normal (image -z,
    # towards the camera, for a frontal face).
    z_axis = np.cross(x_axis, y_axis)
    return np.stack([x_axis, y_axis, z_axis], axis=-1), eyes_mid, np.linalg.norm(right_eye - left_eye, axis=-1)


def head_pose_degrees(rotation: np.ndarray) -> np.ndarray:
    """[T,3] (yaw, pitch, roll) of head_frames rotations, in the viewer's frame: intrinsic
    rotations about y (yaw), then x (pitch), then z (roll); all zero for a frontal upright face."""
    viewer = _IMAGE_TO_VIEWER @ rotation
    from scipy.spatial.transform import Rotation  # a third of a second of imports, for this extractor only

    return Rotation.from_matrix(viewer).as_euler("YXZ", degrees=True)


def geometry_features(mesh: np.ndarray) -> np.ndarray:
    """[T,478,3] meshes in frame pixels -> [T, len(FEATURE_NAMES)] float32."""
    from pipeline.faces.template import IMAGE_LEFT_EYE_CONTOUR, IMAGE_RIGHT_EYE_CONTOUR

    mesh = np.asarray(mesh, np.float64)
    rotation, origin, iod = head_frames(mesh)
    # Head-frame coordinates: x right, y up, z out of the face, in units of the inter-ocular distance.
    local = np.einsum("tnc,tcd->tnd", mesh - origin[:, None], rotation) / iod[:, None, None]

    def distance(a: int, b: int) -> np.ndarray:
        return np.linalg.norm(local[:, a] - local[:, b], axis=-1)

    lip_mid_height = (local[:, UPPER_LIP_INNER, 1] + local[:, LOWER_LIP_INNER, 1]) / 2
    left_eye_height = local[:, list(IMAGE_LEFT_EYE_CONTOUR), 1].mean(axis=1)
    right_eye_height = local[:, list(IMAGE_RIGHT_EYE_CONTOUR), 1].mean(axis=1)

    def aperture(lids: tuple[int, int, int, int]) -> np.ndarray:
        upper, lower, outer, inner = lids
        return distance(upper, lower) / distance(outer, inner)

    columns = [
        distance(UPPER_LIP_INNER, LOWER_LIP_INNER),
        distance(LEFT_MOUTH_CORNER, RIGHT_MOUTH_CORNER),
        distance(NOSE_TIP, CHIN),
        local[:, LEFT_MOUTH_CORNER, 1] - lip_mid_height,
        local[:, RIGHT_MOUTH_CORNER, 1] - lip_mid_height,
        local[:, list(LEFT_BROW_UPPER), 1].mean(axis=1) - left_eye_height,
        local[:, list(RIGHT_BROW_UPPER), 1].mean(axis=1) - right_eye_height,
        distance(LEFT_BROW_INNER, RIGHT_BROW_INNER),
        aperture(LEFT_EYE_LIDS),
        aperture(RIGHT_EYE_LIDS),
        *head_pose_degrees(rotation).T,
    ]
    return np.stack(columns, axis=-1).astype(np.float32)


@EXTRACTORS.register("face_geometry")
class FaceGeometry(Extractor):
    """13 geometric features per sampled frame (FEATURE_NAMES) from the face mesh; frames
    without a face keep zeros and stay masked."""

    input = "faces"
    input_keys = ("landmarks", "mask", "timestamps")

    @classmethod
    def weights_origin_for(cls, config) -> str:
        return "no weights: measured on the faces store's MediaPipe face mesh"

    def extract(self, entry: Entry) -> Features:
        from pipeline.faces.template import NUM_MESH_LANDMARKS

        landmarks, mask = entry.arrays["landmarks"], entry.arrays["mask"].astype(bool)
        if landmarks.ndim != 3 or landmarks.shape[1:] != (NUM_MESH_LANDMARKS, 3):
            raise ValueError(f"{entry.clip_id}: expected [T,{NUM_MESH_LANDMARKS},3] landmarks, got {landmarks.shape}")
        output = np.zeros((len(landmarks), len(FEATURE_NAMES)), np.float32)
        if mask.any():
            output[mask] = geometry_features(landmarks[mask])
        return Features(output, entry.arrays["timestamps"], mask.astype(np.uint8))
