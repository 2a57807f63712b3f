"""Facial actions as landmark-driven displacement fields, and their time course.

Each action (loosely a FACS action unit) moves a few FaceMesh landmarks by
(outward, up) amounts in eye-distance units; every other face landmark is an
anchor.  ``action_basis`` turns the actions into per-identity backward fields
once, so a clip's expression is a weighted sum of fields and each frame is a
single remap of the identity image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .landmarks import (BROWS, EYES, FACE_OVAL, INNER_LIPS, LEFT_IRIS, NOSE, OUTER_LIPS,
                        RIGHT_IRIS, FaceFrame)
from .warp import backward_field


# landmarks -> (outward, up) in eye distances; symmetric pairs share one entry.
Action = dict[tuple[int, ...], tuple[float, float]]


def _jaw_drop(drop: float) -> Action:
    # The lower lip and chin follow the jaw; lip points near the corners move less.
    return {(14,): (0, -drop), (87, 317): (0, -0.95 * drop), (178, 402): (0, -0.8 * drop),
            (88, 318): (0, -0.55 * drop), (95, 324): (0, -0.35 * drop),
            (17,): (0, -drop), (84, 314): (0, -0.95 * drop), (181, 405): (0, -0.8 * drop),
            (91, 321): (0, -0.55 * drop), (146, 375): (0, -0.35 * drop),
            (61, 291): (-0.03, -0.25 * drop), (78, 308): (-0.03, -0.25 * drop),
            (152,): (0, -0.9 * drop), (148, 377): (0, -0.85 * drop), (176, 400): (0, -0.75 * drop),
            (149, 378): (0, -0.6 * drop), (150, 379): (0, -0.4 * drop),
            (136, 365): (0, -0.2 * drop), (13,): (0, 0.04), (0,): (0, 0.02)}


ACTIONS: dict[str, Action] = {
    "lip_corner_pull": {  # smile
        (61, 291): (0.1, 0.11), (78, 308): (0.09, 0.1), (185, 409): (0.05, 0.06),
        (146, 375): (0.06, 0.08), (40, 270): (0.03, 0.04), (91, 321): (0.04, 0.05),
        (205, 425): (0.02, 0.05)},
    "lip_corner_depress": {
        (61, 291): (0.01, -0.1), (78, 308): (0.01, -0.09), (146, 375): (0.0, -0.06),
        (185, 409): (0.0, -0.05), (91, 321): (0.0, -0.04), (40, 270): (0.0, -0.03)},
    "lip_stretch": {
        (61, 291): (0.11, -0.02), (78, 308): (0.1, -0.02), (146, 375): (0.05, -0.01),
        (185, 409): (0.05, 0.0), (91, 321): (0.03, 0.0), (40, 270): (0.03, 0.0)},
    "lip_press": {
        (61, 291): (-0.05, 0.0), (78, 308): (-0.05, 0.0), (0,): (0, -0.03), (37, 267): (0, -0.03),
        (17,): (0, 0.04), (84, 314): (0, 0.035)},
    "upper_lip_raise": {
        (0,): (0, 0.08), (37, 267): (0, 0.08), (39, 269): (0, 0.07), (40, 270): (0, 0.05),
        (13,): (0, 0.08), (82, 312): (0, 0.08), (81, 311): (0, 0.07), (80, 310): (0, 0.05),
        (98, 327): (0, 0.03), (129, 358): (0, 0.02)},
    "nose_wrinkle": {
        (48, 278): (-0.01, 0.06), (64, 294): (-0.01, 0.06), (98, 327): (0, 0.05),
        (129, 358): (0, 0.05)},
    "jaw_drop": _jaw_drop(0.28),
    "inner_brow_raise": {
        (107, 336): (0, 0.13), (55, 285): (0, 0.13), (66, 296): (0, 0.11), (65, 295): (0, 0.11),
        (105, 334): (0, 0.07), (52, 282): (0, 0.07), (63, 293): (0, 0.03), (53, 283): (0, 0.03)},
    "outer_brow_raise": {
        (70, 300): (0, 0.13), (46, 276): (0, 0.13), (63, 293): (0, 0.11), (53, 283): (0, 0.11),
        (105, 334): (0, 0.07), (52, 282): (0, 0.07), (66, 296): (0, 0.03), (65, 295): (0, 0.03)},
    "brow_lower": {
        (107, 336): (-0.06, -0.09), (55, 285): (-0.06, -0.09), (66, 296): (-0.04, -0.08),
        (65, 295): (-0.04, -0.08), (105, 334): (-0.02, -0.07), (52, 282): (-0.02, -0.07),
        (63, 293): (0, -0.05), (53, 283): (0, -0.05), (70, 300): (0, -0.03), (46, 276): (0, -0.03)},
    "upper_lid_raise": {
        (159, 386): (0, 0.06), (158, 385): (0, 0.055), (160, 387): (0, 0.05),
        (157, 384): (0, 0.045), (161, 388): (0, 0.04), (173, 398): (0, 0.025),
        (246, 466): (0, 0.025)},
    "lid_tighten": {
        (145, 374): (0, 0.045), (144, 373): (0, 0.04), (153, 380): (0, 0.04),
        (163, 390): (0, 0.03), (154, 381): (0, 0.03),
        (159, 386): (0, -0.025), (158, 385): (0, -0.02), (160, 387): (0, -0.02)},
    "lid_droop": {
        (159, 386): (0, -0.035), (158, 385): (0, -0.03), (160, 387): (0, -0.03),
        (157, 384): (0, -0.02), (161, 388): (0, -0.02)},
    "cheek_raise": {
        (145, 374): (0, 0.04), (144, 373): (0, 0.035), (153, 380): (0, 0.035),
        (163, 390): (0, 0.025), (154, 381): (0, 0.025),
        (50, 280): (0, 0.04), (205, 425): (0, 0.04), (117, 346): (0, 0.03)},
}

_ANCHORS = sorted(set(FACE_OVAL + EYES + BROWS + NOSE + OUTER_LIPS + INNER_LIPS
                      + [RIGHT_IRIS, LEFT_IRIS]))


@dataclass(frozen=True)
class ActionBasis:
    field: np.ndarray           # (H, W, 2) backward field at weight 1, canvas pixels
    landmark_moves: np.ndarray  # (478, 2) forward landmark displacement at weight 1


def action_basis(canvas_shape: tuple[int, int], landmarks: np.ndarray) -> dict[str, ActionBasis]:
    frame = FaceFrame.from_landmarks(landmarks)
    basis = {}
    for name, action in ACTIONS.items():
        indices = [i for group in action for i in group]
        out_up = np.array([action[group] for group in action for _ in group])
        moves = frame.displacement(landmarks[indices], out_up)
        anchors = landmarks[[i for i in _ANCHORS if i not in indices]]
        # Control points travel as the field is scaled by the intensity, so the
        # spline is fitted halfway along their path.
        field = backward_field(canvas_shape, landmarks[indices], moves, anchors, centre_at=0.5)
        landmark_moves = np.zeros_like(landmarks)
        landmark_moves[indices] = moves
        basis[name] = ActionBasis(field, landmark_moves)
    return basis


def combine(basis: dict[str, ActionBasis], weights: dict[str, float]) -> ActionBasis:
    """One expression as a weighted sum of actions (small warps add approximately)."""
    first = next(iter(basis.values()))
    field = np.zeros_like(first.field)
    moves = np.zeros_like(first.landmark_moves)
    for name, weight in weights.items():
        field += weight * basis[name].field
        moves += weight * basis[name].landmark_moves
    return ActionBasis(field, moves)


def intensity_envelope(rng: np.random.Generator, n_frames: int, apex: float) -> np.ndarray:
    """Onset -> apex -> offset, with random timing; some takes never fully relax."""
    t = np.linspace(0.0, 1.0, n_frames)
    onset_start = rng.uniform(0.0, 0.25)
    onset_end = onset_start + rng.uniform(0.12, 0.3)
    offset_start = onset_end + rng.uniform(0.25, 0.5)
    offset_end = offset_start + rng.uniform(0.1, 0.3)
    rise = _smoothstep((t - onset_start) / (onset_end - onset_start))
    fall = 1 - _smoothstep((t - offset_start) / (offset_end - offset_start))
    wobble = 1 + 0.06 * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * t + rng.uniform(0, 2 * np.pi))
    return apex * rise * fall * wobble


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)
