"""MediaPipe FaceMesh landmarks and the face-aligned coordinate frame.

Indices refer to the 478-point FaceMesh topology (468 mesh points + 10 iris
points with ``refine_landmarks=True``).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pipeline.native_logs import native_chatter_filtered

RIGHT_IRIS = 468  # the eye on the image-left side of a frontal face
LEFT_IRIS = 473

FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379,
             378, 400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127,
             162, 21, 54, 103, 67, 109]
INNER_LIPS = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308,
              324, 318, 402, 317, 14, 87, 178, 88, 95]
UPPER_INNER_LIP = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LOWER_INNER_LIP = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
OUTER_LIPS = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291,
              375, 321, 405, 314, 17, 84, 181, 91, 146]
EYES = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246,
        263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]
BROWS = [70, 63, 105, 66, 107, 46, 53, 52, 65, 55,
         300, 293, 334, 296, 336, 276, 283, 282, 295, 285]
NOSE = [1, 4, 6, 168, 197, 195, 5, 48, 278, 64, 294, 98, 327, 129, 358]


@dataclass(frozen=True)
class FaceFrame:
    """Face-aligned axes in image pixels; one unit is the inter-ocular distance.

    Expression and face-shape displacements are specified as (outward, up) in these
    units so that they mean the same thing on every identity, whatever its size,
    roll, or whether the photo was mirrored.
    """

    centre: np.ndarray  # midpoint between the irises
    x_axis: np.ndarray  # unit vector from the image-left iris to the image-right iris
    y_axis: np.ndarray  # unit vector pointing towards the chin
    iod: float

    @classmethod
    def from_landmarks(cls, landmarks: np.ndarray) -> "FaceFrame":
        right, left = landmarks[RIGHT_IRIS], landmarks[LEFT_IRIS]
        x_axis = (left - right) / np.linalg.norm(left - right)
        y_axis = np.array([-x_axis[1], x_axis[0]])
        return cls((left + right) / 2, x_axis, y_axis, float(np.linalg.norm(left - right)))

    def displacement(self, points: np.ndarray, out_up: np.ndarray) -> np.ndarray:
        """Convert per-point (outward, up) face units to image-pixel displacements.

        "Outward" points away from the facial midline, so one symmetric entry moves
        both mouth corners apart instead of both to the same side.
        """
        side = np.sign((points - self.centre) @ self.x_axis)
        return self.iod * (out_up[:, :1] * side[:, None] * self.x_axis
                           - out_up[:, 1:] * self.y_axis)


def detect_landmarks(rgb: np.ndarray) -> np.ndarray:
    """Return the (478, 2) FaceMesh landmarks of the single face in ``rgb`` in pixels."""
    with native_chatter_filtered():
        result = _face_mesh().process(np.ascontiguousarray(rgb))
    if not result.multi_face_landmarks:
        raise RuntimeError("FaceMesh found no face in an identity image")
    height, width = rgb.shape[:2]
    points = result.multi_face_landmarks[0].landmark
    return np.array([[p.x * width, p.y * height] for p in points], dtype=np.float64)


@lru_cache(maxsize=1)
def _face_mesh():
    # Imported lazily: only the parent process needs MediaPipe.  Static-image mode
    # makes every call independent, so one instance can serve all identities.
    import mediapipe as mp

    return mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
                                           max_num_faces=1)
