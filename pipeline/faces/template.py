"""Reference layouts for aligned face crops and the mesh points that anchor them.

"Left"/"right" always mean the side of the *image* (viewer's left), which is the
convention of the ArcFace template; MediaPipe names its eyes after the subject,
so the image-left eye is MediaPipe's RIGHT_EYE.
"""

from __future__ import annotations

import numpy as np

# ArcFace / InsightFace 112x112 reference points divided by 112, in the order
# left eye centre, right eye centre, nose tip, left mouth corner, right mouth corner.
# Using the exact ArcFace layout keeps the 112 crop compatible with face
# recognition / expression backbones trained on that alignment.
CANONICAL_TEMPLATE: np.ndarray = (
    np.array(
        [
            [38.2946, 51.6963],
            [73.5318, 51.5014],
            [56.0252, 71.7366],
            [41.5493, 92.3655],
            [70.7299, 92.2041],
        ],
        dtype=np.float32,
    )
    / 112.0
)

# FER2013 crops show the whole face, forehead to chin, with little background,
# whereas the ArcFace layout cuts off the upper forehead and the chin (mesh
# landmark 152 lands at y~1.07). The gray template is the ArcFace layout shrunk
# slightly about the crop centre and moved up, fitted on MEAD / CREMA-D / sample
# faces so that the chin lands at y~0.95 and the upper forehead (landmark 10) at
# y~0.14; eyes end up at y~0.37 and the mouth at y~0.72, roughly FER2013's layout.
GRAY_TEMPLATE_SCALE: float = 0.95
GRAY_TEMPLATE_SHIFT_Y: float = -0.09


def gray_layout(template: np.ndarray) -> np.ndarray:
    """Where points laid out by ``template`` (the ArcFace crop's unit coordinates) fall in the
    gray crop's FER2013-like framing."""
    shift = np.array([0.0, GRAY_TEMPLATE_SHIFT_Y], np.float32)
    return ((np.asarray(template, np.float32) - 0.5) * GRAY_TEMPLATE_SCALE + 0.5 + shift).astype(np.float32)


GRAY_TEMPLATE: np.ndarray = gray_layout(CANONICAL_TEMPLATE)

# Eye centres are the mean of the 16 eyelid-contour points rather than the iris
# centre (468 / 473): the contour does not move with gaze, so the alignment stays
# put when the subject looks sideways. Same sets as MediaPipe's
# FACEMESH_RIGHT_EYE / FACEMESH_LEFT_EYE (checked by the tests).
IMAGE_LEFT_EYE_CONTOUR: tuple[int, ...] = (7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246)
IMAGE_RIGHT_EYE_CONTOUR: tuple[int, ...] = (249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466)
NOSE_TIP: int = 1
IMAGE_LEFT_MOUTH_CORNER: int = 61
IMAGE_RIGHT_MOUTH_CORNER: int = 291
NUM_MESH_LANDMARKS: int = 478


def _five_point_weights() -> np.ndarray:
    """[5, 478] weights whose product with the mesh's xy gives the five template points."""
    weights = np.zeros((5, NUM_MESH_LANDMARKS), np.float32)
    weights[0, list(IMAGE_LEFT_EYE_CONTOUR)] = 1.0 / len(IMAGE_LEFT_EYE_CONTOUR)
    weights[1, list(IMAGE_RIGHT_EYE_CONTOUR)] = 1.0 / len(IMAGE_RIGHT_EYE_CONTOUR)
    weights[2, NOSE_TIP] = 1.0
    weights[3, IMAGE_LEFT_MOUTH_CORNER] = 1.0
    weights[4, IMAGE_RIGHT_MOUTH_CORNER] = 1.0
    return weights


# One small matrix product instead of fancy indexing and means per point (several times
# faster; five_points runs for every face of every sampled frame).
_FIVE_POINT_WEIGHTS = _five_point_weights()


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """The 5 template points (order of CANONICAL_TEMPLATE) from a [478, 2|3] face mesh, as [5, 2] float32."""
    if landmarks.ndim != 2 or landmarks.shape[0] != NUM_MESH_LANDMARKS:
        raise ValueError(f"expected [{NUM_MESH_LANDMARKS}, 2|3] landmarks, got {landmarks.shape}")
    return _FIVE_POINT_WEIGHTS @ landmarks[:, :2].astype(np.float32, copy=False)


# The short-range detector's six keypoints, in its order (MediaPipe's FaceKeyPoint), with
# MediaPipe's subject-side names turned into image sides: the image-left eye is its RIGHT_EYE.
KEYPOINT_NAMES: tuple[str, ...] = (
    "image_left_eye", "image_right_eye", "nose_tip", "mouth_centre", "image_left_ear", "image_right_ear",
)
NUM_KEYPOINTS: int = len(KEYPOINT_NAMES)
# The keypoints that align a crop without the mesh. The ear tragions are left out: they
# move across the face with every head turn and are often hidden.
ALIGNMENT_KEYPOINTS: tuple[int, ...] = (0, 1, 2, 3)

# Where those four keypoints fall, on average, in the ArcFace crop that the mesh's five
# points align (unit coordinates), fitted with `bench/face_alignment.py --fit`: the mean of
# six people's mean positions (the three MEAD actors and the CREMA-D actor of the shared
# data at 5 fps, and the two photographs the demo identities are made from; people weigh
# equally). The detector's eye points sit lower and further apart than the eyelid-contour
# centres and its nose point higher than mesh point 1. The person-to-person spread of these
# means (std 0.005-0.025 of the crop) is most of what separates the two alignments: crops
# aligned onto this template land the mesh's five points 0.04-0.07 of the inter-ocular
# distance (about a pixel of the 64 gray crop) from where the mesh alignment puts them.
KEYPOINT_TEMPLATE: np.ndarray = np.array(
    [
        [0.3302, 0.4869],
        [0.6715, 0.4805],
        [0.5049, 0.6301],
        [0.5080, 0.8186],
    ],
    dtype=np.float32,
)
KEYPOINT_GRAY_TEMPLATE: np.ndarray = gray_layout(KEYPOINT_TEMPLATE)
