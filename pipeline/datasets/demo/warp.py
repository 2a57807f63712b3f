"""Smooth landmark-driven displacement fields (thin-plate splines)."""
from __future__ import annotations

import cv2
import numpy as np

# Fields are smooth on the scale of the landmark spacing, so evaluating them on a
# coarse grid and upsampling bilinearly loses nothing visible and keeps the
# per-identity basis cheap.
_GRID_STEP = 4
# Pinned points along the image border keep every warp local to the face.
_BORDER_ANCHORS_PER_SIDE = 8


def backward_field(shape: tuple[int, int], points: np.ndarray, moves: np.ndarray,
                   anchors: np.ndarray, centre_at: float = 1.0) -> np.ndarray:
    """Backward displacement field (H, W, 2) float32 for ``cv2.remap``.

    Sampling an image at ``x + field(x)`` moves each of ``points`` by its ``moves``
    row while ``anchors`` and the image border stay put.  A thin-plate spline
    interpolates exactly without a width parameter, so neighbouring landmarks may
    move very differently (lips parting) without the overshoot of a wide Gaussian
    kernel or the attenuation of a narrow one.

    The spline passes through ``points + centre_at * moves``: 1.0 is exact for a
    warp applied once at full strength; 0.5 halves the worst-case error of a field
    that is later scaled by an intensity in [0, 1] (expressions), whose control
    points travel between their source and destination positions.
    """
    height, width = shape
    border = np.linspace(0.0, 1.0, _BORDER_ANCHORS_PER_SIDE, endpoint=False)
    border = np.concatenate([np.stack([border, np.zeros_like(border)], 1),
                             np.stack([np.ones_like(border), border], 1),
                             np.stack([1 - border, np.ones_like(border)], 1),
                             np.stack([np.zeros_like(border), 1 - border], 1)])
    border *= [width - 1, height - 1]
    centres = np.concatenate([points + centre_at * moves, anchors, border])
    values = np.concatenate([-moves, np.zeros((len(anchors) + len(border), 2))])

    # Work in units of the image size so that the kernel values stay O(1).
    scale = float(max(height, width))
    centres = centres / scale
    count = len(centres)
    affine = np.hstack([np.ones((count, 1)), centres])
    system = np.zeros((count + 3, count + 3))
    # The tiny ridge only matters for (near-)duplicate landmarks.
    system[:count, :count] = _tps_kernel(centres, centres) + 1e-8 * np.eye(count)
    system[:count, count:] = affine
    system[count:, :count] = affine.T
    rhs = np.vstack([values, np.zeros((3, 2))])
    coefficients = np.linalg.lstsq(system, rhs, rcond=None)[0]

    ys = np.arange(0, height + _GRID_STEP, _GRID_STEP, dtype=np.float64)
    xs = np.arange(0, width + _GRID_STEP, _GRID_STEP, dtype=np.float64)
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2) / scale
    grid_affine = np.hstack([np.ones((len(grid), 1)), grid])
    coarse = _tps_kernel(grid, centres) @ coefficients[:count] + grid_affine @ coefficients[count:]
    coarse = coarse.reshape(len(ys), len(xs), 2).astype(np.float32)
    # Bilinear upsampling with exact coordinates: pixel x sits at coarse index x/step.
    coarse_coords = identity_grid(shape) / _GRID_STEP
    return cv2.remap(coarse, coarse_coords[..., 0], coarse_coords[..., 1], cv2.INTER_LINEAR)


def _tps_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None, :] - 2 * a @ b.T
    sq = np.maximum(sq, 1e-20)
    return 0.5 * sq * np.log(sq)


def identity_grid(shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return np.stack([xs, ys], -1)


def apply_field(image: np.ndarray, field: np.ndarray) -> np.ndarray:
    maps = identity_grid(image.shape[:2]) + field
    return cv2.remap(image, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT)
