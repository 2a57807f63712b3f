"""Frame rendering: expression warp, head motion, lighting drift and sensor noise."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from .expressions import ActionBasis
from .landmarks import INNER_LIPS, UPPER_INNER_LIP, FaceFrame
from .warp import identity_grid

MOUTH_CAVITY_RGB = np.array([48, 18, 20], np.float32)
TEETH_RGB = np.array([205, 195, 185], np.float32)
MAX_ROLL_DEG = 4.0
MAX_SHIFT = 0.025   # fraction of the frame
MAX_ZOOM = 0.03
NOISE_SIGMA = 2.5   # grey levels
NOISE_PAD = 16


@dataclass(frozen=True)
class FaceAnimation:
    landmarks: np.ndarray    # identity landmarks, canvas pixels
    expression: ActionBasis  # the take's expression at intensity 1
    intensity: np.ndarray    # per-frame expression intensity

    @property
    def iod(self) -> float:
        return FaceFrame.from_landmarks(self.landmarks).iod


def smooth_curve(rng: np.random.Generator, n_frames: int, fps: int,
                 max_hz: float = 0.6) -> np.ndarray:
    """A slow random wobble in [-1, 1]: a few sinusoids with random frequency and phase."""
    t = np.arange(n_frames) / fps
    amplitudes = rng.uniform(0.3, 1.0, 3)
    curve = sum(a * np.sin(2 * np.pi * rng.uniform(0.05, max_hz) * t + rng.uniform(0, 2 * np.pi))
                for a in amplitudes)
    return curve / amplitudes.sum()


def render_frames(rng: np.random.Generator, canvas: np.ndarray, size: int, fps: int,
                  n_frames: int, face: FaceAnimation | None) -> Iterator[np.ndarray]:
    """Yield ``n_frames`` RGB uint8 frames of side ``size`` filmed from ``canvas``.

    Head motion is an affine map from output to canvas pixels; the expression
    field is defined on the canvas, so it is resampled through the same affine
    map before being added, and the whole frame is then one ``cv2.remap``.
    """
    roll = np.deg2rad(MAX_ROLL_DEG) * smooth_curve(rng, n_frames, fps)
    shift = MAX_SHIFT * size * np.stack([smooth_curve(rng, n_frames, fps) for _ in range(2)], 1)
    zoom = 1 + MAX_ZOOM * smooth_curve(rng, n_frames, fps)
    gain = 1 + 0.12 * smooth_curve(rng, n_frames, fps, max_hz=0.4)
    gamma = 1 + 0.12 * smooth_curve(rng, n_frames, fps, max_hz=0.4)
    white_balance = rng.uniform(0.95, 1.05, 3)

    output_grid = identity_grid((size, size))
    levels = np.arange(256, dtype=np.float32)[:, None] / 255
    canvas_centre = np.array(canvas.shape[1::-1], np.float64) / 2
    # Drawing fresh Gaussian noise for every pixel of every frame dominated the
    # render time; random crops of a small noise bank look the same.
    noise_bank = (NOISE_SIGMA * rng.standard_normal((2, size + NOISE_PAD, size + NOISE_PAD, 3),
                                                    dtype=np.float32)).astype(np.int16)
    for index in range(n_frames):
        cos, sin = np.cos(roll[index]), np.sin(roll[index])
        linear = np.array([[cos, sin], [-sin, cos]]) / zoom[index]
        offset = canvas_centre - linear @ (np.full(2, size / 2) + shift[index])
        to_canvas = np.hstack([linear, offset[:, None]])
        maps = cv2.transform(output_grid, to_canvas)
        if face is not None and face.intensity[index] > 1e-3:
            field = cv2.warpAffine(face.expression.field, to_canvas, (size, size),
                                   flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
            maps += face.intensity[index] * field
        frame = cv2.remap(canvas, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)
        if face is not None:
            _paint_mouth_cavity(frame, face, index, to_canvas)

        lut = np.clip(255 * gain[index] * white_balance * levels ** gamma[index], 0, 255)
        frame = cv2.LUT(frame, lut.astype(np.uint8).reshape(256, 1, 3))
        bank, dy, dx = rng.integers(0, 2), *rng.integers(0, NOISE_PAD, 2)
        yield cv2.add(frame, noise_bank[bank, dy:dy + size, dx:dx + size], dtype=cv2.CV_8U)


def _paint_mouth_cavity(frame, face: FaceAnimation, index: int, to_canvas) -> None:
    """Paint the open mouth in place: a warp alone would only stretch the lip pixels.

    The gap between the inner lips becomes a dark cavity with a band of upper
    teeth, fading in as the lips part beyond their resting gap.
    """
    moved = face.landmarks + face.intensity[index] * face.expression.landmark_moves
    gap = np.linalg.norm(moved[13] - moved[14])
    extra_gap = gap - np.linalg.norm(face.landmarks[13] - face.landmarks[14])
    opacity = np.clip(extra_gap / (0.06 * face.iod), 0.0, 1.0) * 0.9
    if opacity <= 0.0:
        return
    to_frame = cv2.invertAffineTransform(to_canvas)
    lips = cv2.transform(moved[INNER_LIPS][None], to_frame)[0]
    # Teeth show in the middle of the mouth, not at the corners.
    upper_lip = cv2.transform(moved[UPPER_INNER_LIP[2:-2]][None], to_frame)[0]

    # Work on the mouth's bounding box only.
    left, top = np.maximum(np.floor(lips.min(0)).astype(int) - 4, 0)
    right, bottom = np.ceil(lips.max(0)).astype(int) + 4
    roi = frame[top:bottom, left:right]
    if roi.size == 0:
        return
    subpixel = 4  # draw with 2 fractional bits for smooth edges
    origin = np.array([left, top])
    cavity = np.zeros(roi.shape[:2], np.float32)
    cv2.fillPoly(cavity, [np.round((lips - origin) * subpixel).astype(np.int32)], 1.0,
                 cv2.LINE_AA, 2)
    teeth = np.zeros_like(cavity)
    cv2.polylines(teeth, [np.round((upper_lip - origin) * subpixel).astype(np.int32)], False,
                  1.0, max(1, int(0.4 * gap)), cv2.LINE_AA, 2)
    cavity = cv2.GaussianBlur(cavity, (3, 3), 0)[..., None] * opacity
    teeth = np.minimum(0.8 * cv2.GaussianBlur(teeth, (3, 3), 0)[..., None], cavity)
    roi[:] = roi * (1 - cavity) + MOUTH_CAVITY_RGB * (cavity - teeth) + TEETH_RGB * teeth
