"""Similarity alignment of a face to a reference layout."""

from __future__ import annotations

import math

import numpy as np

from pipeline.faces.template import CANONICAL_TEMPLATE


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation mapping src [N,2] onto dst [N,2].

    Returns the [2, 3] float64 matrix M with dst ~= M @ [x, y, 1]. In 2D the linear part is
    [[a, -b], [b, a]], and the least-squares a, b have a closed form on the centred points.
    This is the same optimum as Umeyama's SVD solution with its reflection fix (a reflection
    is not of that form, so a mirrored face never aligns onto the template), at a tenth of the
    cost: it runs for every face. The sums are plain Python: for the handful of points a face
    has, numpy's per-call overhead costs several times the arithmetic.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need two matching [N>=2, 2] point sets, got {src.shape} and {dst.shape}")
    count = len(src)
    src_points, dst_points = src.tolist(), dst.tolist()
    src_x = sum(p[0] for p in src_points) / count
    src_y = sum(p[1] for p in src_points) / count
    dst_x = sum(p[0] for p in dst_points) / count
    dst_y = sum(p[1] for p in dst_points) / count
    spread = dot = cross = 0.0
    for (x, y), (u, v) in zip(src_points, dst_points):
        x, y, u, v = x - src_x, y - src_y, u - dst_x, v - dst_y
        spread += x * x + y * y
        dot += x * u + y * v
        cross += x * v - y * u
    if spread == 0.0:
        raise ValueError("the source points coincide: no similarity transform is defined")
    a, b = dot / spread, cross / spread
    return np.array([[a, -b, dst_x - (a * src_x - b * src_y)], [b, a, dst_y - (b * src_x + a * src_y)]])


def template_px(size: int, template: np.ndarray = CANONICAL_TEMPLATE, margin: float = 0.0) -> np.ndarray:
    """``template`` (unit crop coordinates) in pixels of a size x size crop; ``margin`` (fraction
    of the crop on each side) shrinks it towards the centre to include more context."""
    if not 0.0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {margin}")
    return (margin + np.asarray(template, dtype=np.float64) * (1.0 - 2.0 * margin)) * size


def align(
    frame_rgb: np.ndarray,
    five_points_px: np.ndarray,
    size: int,
    template: np.ndarray = CANONICAL_TEMPLATE,
    margin: float = 0.0,
) -> np.ndarray:
    """Warp the face so its points (the 5 template points, or any points that ``template``
    lays out) fall on ``template`` in a size x size crop.

    `template` is in unit crop coordinates; `margin` (fraction of the crop on each
    side) shrinks the template towards the centre to include more context.
    Pixels outside the frame are black.
    """
    matrix = similarity_transform(five_points_px, template_px(size, template, margin))
    return warp(frame_rgb, matrix, size)


def warp(frame: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The size x size crop that the [2, 3] frame-to-crop ``matrix`` maps the frame onto
    (anti-aliased when it shrinks; black outside the frame)."""
    return _warp_antialiased(frame, matrix, size)


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The [2, 3] affine map ``outer`` after ``inner``.

    A least-squares similarity fit commutes with similarity maps of its target: the fit onto
    A(template) is A after the fit onto the template. So one fit per face, composed with a
    fixed map per crop layout (size, template), gives every crop's matrix.
    """
    return np.hstack([outer[:, :2] @ inner[:, :2], outer[:, :2] @ inner[:, 2:] + outer[:, 2:]])


def _warp_antialiased(frame: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """cv2.warpAffine to a size x size crop, box-filtering first when the warp shrinks.

    warpAffine samples bilinearly, which aliases when a large face is shrunk into a
    small crop. Shrinking only the source region the crop will read by an integer
    factor with INTER_AREA, then warping from it, is about half the cost of warping
    at a multiple of the crop size and box-filtering the result.
    """
    import cv2  # here, so that the faces-keys check of every extract stage (config) skips OpenCV's 0.1 s import

    (a, b, tx), (c, d, ty) = matrix.tolist()
    determinant = a * d - b * c
    scale = math.sqrt(abs(determinant))
    factor = int(1.0 / scale) if scale > 0 else 1
    if factor <= 1:
        return cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

    height, width = frame.shape[:2]
    # The crop's corners in the frame, through the inverse map (scalar arithmetic: numpy's
    # per-call overhead on 2x3 matrices cost more than the warp's own geometry).
    xs, ys = [], []
    for u, v in ((0, 0), (size, 0), (0, size), (size, size)):
        u, v = u - tx, v - ty
        xs.append((d * u - b * v) / determinant)
        ys.append((a * v - c * u) / determinant)
    # Pad by one block so bilinear sampling at the crop border has neighbours.
    x0 = min(max(math.floor(min(xs)) - factor, 0), width)
    y0 = min(max(math.floor(min(ys)) - factor, 0), height)
    x1 = min(max(math.ceil(max(xs)) + factor, 0), width)
    y1 = min(max(math.ceil(max(ys)) + factor, 0), height)
    # Whole blocks only, so every shrunk pixel averages exactly factor x factor pixels.
    x1 = x0 + (x1 - x0) // factor * factor
    y1 = y0 + (y1 - y0) // factor * factor
    if x1 <= x0 or y1 <= y0:  # the crop lies entirely outside the frame
        return np.zeros((size, size) + frame.shape[2:], dtype=frame.dtype)
    shrunk = cv2.resize(
        frame[y0:y1, x0:x1], ((x1 - x0) // factor, (y1 - y0) // factor), interpolation=cv2.INTER_AREA
    )
    # Shrunk pixel q is centred on frame pixel origin + factor * q.
    origin_x, origin_y = x0 + (factor - 1) / 2.0, y0 + (factor - 1) / 2.0
    shrunk_matrix = np.array([
        [a * factor, b * factor, a * origin_x + b * origin_y + tx],
        [c * factor, d * factor, c * origin_x + d * origin_y + ty],
    ])
    return cv2.warpAffine(shrunk, shrunk_matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
