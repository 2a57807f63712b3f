"""Speaker identities built from the real face photographs that installed packages ship.

Only two frontal face photos are available offline (scikit-image's astronaut,
Eileen Collins, and matplotlib's Grace Hopper), so identities beyond those two
are derived from them: mirrored, with a different face shape (jaw width, eye
distance, face length), skin tone, and hair/background/clothing colours.  Every
identity gets its own voice.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .landmarks import (FACE_OVAL, INNER_LIPS, LOWER_INNER_LIP, UPPER_INNER_LIP, FaceFrame,
                        detect_landmarks)
from .voice import SpeakerVoice
from .warp import apply_field, backward_field

# Face height (forehead to chin) as a fraction of the output frame: a tight face
# crop like the common emotion datasets, with room for head motion.
FACE_HEIGHT = 0.62
# The identity canvas is larger than the output frame so that head motion never
# samples outside the photograph.
CANVAS_MARGIN = 1.25

JAW = [58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288,
       132, 361, 93, 323]
FOREHEAD = [10, 109, 67, 103, 338, 297, 332]
EYE_REGION = [33, 133, 159, 145, 468, 263, 362, 386, 374, 473, 70, 105, 107, 300, 334, 336]
# Seeds are (spec seed, domain, ...) so identity and clip draws never share a stream.
SEED_DOMAIN_IDENTITY = 1
# The shuttle model beside the astronaut: real photo texture without a face.
_NO_FACE_REGION = (slice(0, 190), slice(322, 512))


@dataclass(frozen=True)
class Identity:
    speaker: str
    canvas: np.ndarray     # RGB uint8, square, the face centred
    landmarks: np.ndarray  # (478, 2) FaceMesh landmarks in canvas pixels
    voice: SpeakerVoice
    expressivity: float    # how strongly this person's face acts an emotion


def _photos() -> list[np.ndarray]:
    import matplotlib.cbook
    import skimage.data
    from PIL import Image

    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as hopper:
        return [skimage.data.astronaut(), np.asarray(hopper.convert("RGB"))]


def _face_crop(photo: np.ndarray, size: int) -> np.ndarray:
    """Square canvas of side ``size * CANVAS_MARGIN`` centred on the face."""
    landmarks = detect_landmarks(photo)
    top, chin = landmarks[10], landmarks[152]
    scale = FACE_HEIGHT * size / np.linalg.norm(chin - top)
    side = int(round(size * CANVAS_MARGIN))
    centre = (top + chin) / 2
    matrix = np.array([[scale, 0, side / 2 - scale * centre[0]],
                       [0, scale, side / 2 - scale * centre[1]]])
    return cv2.warpAffine(photo, matrix, (side, side), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REFLECT)


def _relax_smile(canvas: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Turn the astronaut's open smile into a closed, neutral mouth.

    Otherwise every identity derived from her would look happy at rest.  The teeth
    are painted over with the surrounding lip colour and a soft shadow line drawn
    where the lips meet; then the lips are drawn together and the corners lowered.
    """
    mouth = np.zeros(canvas.shape[:2], np.uint8)
    cv2.fillPoly(mouth, [landmarks[INNER_LIPS].astype(np.int32)], 255)
    mouth = cv2.dilate(mouth, np.ones((3, 3), np.uint8))
    closed = cv2.inpaint(canvas, mouth, 5, cv2.INPAINT_TELEA).astype(np.float32)
    seam = (landmarks[UPPER_INNER_LIP] + landmarks[LOWER_INNER_LIP]) / 2
    line = np.zeros(canvas.shape[:2], np.float32)
    cv2.polylines(line, [np.round(seam * 4).astype(np.int32)], False, 1.0, 1, cv2.LINE_AA, 2)
    line = cv2.GaussianBlur(line, (5, 5), 0)[..., None]
    closed = (closed * (1 - 0.6 * line)).astype(np.uint8)

    frame = FaceFrame.from_landmarks(landmarks)
    moves = {61: (-0.02, -0.13), 291: (-0.02, -0.13), 78: (-0.02, -0.12), 308: (-0.02, -0.12),
             14: (0, 0.04), 87: (0, 0.035), 317: (0, 0.035), 17: (0, 0.035), 84: (0, 0.03),
             314: (0, 0.03), 13: (0, -0.03), 82: (0, -0.025), 312: (0, -0.025)}
    points = landmarks[list(moves)]
    displacement = frame.displacement(points, np.array(list(moves.values())))
    anchors = landmarks[[1, 4, 152, 148, 377, 33, 263, 205, 425, 98, 327]]
    return apply_field(closed, backward_field(canvas.shape[:2], points, displacement, anchors))


def _reshape_face(canvas: np.ndarray, landmarks: np.ndarray, jaw: float, eyes: float,
                  length: float) -> np.ndarray:
    """Face-shape warp: jaw width, eye distance and face length in face units."""
    frame = FaceFrame.from_landmarks(landmarks)
    moves = {i: (jaw, 0.0) for i in JAW}
    moves.update({i: (eyes, 0.0) for i in EYE_REGION})
    for i in (152, 148, 377, 176, 400):
        moves[i] = (moves[i][0], -length)
    moves.update({i: (0.0, 0.6 * length) for i in FOREHEAD})
    points = landmarks[list(moves)]
    displacement = frame.displacement(points, np.array(list(moves.values())))
    anchors = landmarks[[1, 4, 6, 0, 17]]
    return apply_field(canvas, backward_field(canvas.shape[:2], points, displacement, anchors))


def _recolour(canvas: np.ndarray, landmarks: np.ndarray, skin_lightness: float,
              skin_warmth: float, hue_shift: float, saturation: float) -> np.ndarray:
    """Change skin tone inside the face/neck and the colours of everything else."""
    lab = cv2.cvtColor(canvas, cv2.COLOR_RGB2LAB).astype(np.float32)
    ycrcb = cv2.cvtColor(canvas, cv2.COLOR_RGB2YCrCb)
    skin_colour = cv2.inRange(ycrcb, (40, 133, 77), (255, 175, 130)).astype(np.float32) / 255
    face = np.zeros(canvas.shape[:2], np.float32)
    hull = cv2.convexHull(landmarks[FACE_OVAL].astype(np.int32))
    cv2.fillConvexPoly(face, hull, 1.0)
    iod = FaceFrame.from_landmarks(landmarks).iod
    # Grow the face downwards to the neck so skin tone does not stop at the jaw line.
    neck = cv2.dilate(face, cv2.getStructuringElement(cv2.MORPH_ELLIPSE,
                                                      (int(0.5 * iod),) * 2))
    neck = np.maximum(neck, np.roll(face, int(0.9 * iod), axis=0))
    feather = int(0.25 * iod) | 1
    skin = cv2.GaussianBlur(skin_colour * neck, (feather, feather), 0)
    skin = np.maximum(skin, cv2.GaussianBlur(face, (feather, feather), 0) * 0.9)

    toned = lab.copy()
    toned[..., 0] *= skin_lightness
    toned[..., 2] += skin_warmth
    toned = cv2.cvtColor(np.clip(toned, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)

    hsv = cv2.cvtColor(canvas, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + hue_shift / 2) % 180  # OpenCV hue is in degrees / 2
    hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 255)
    restyled = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)

    background = 1 - np.clip(cv2.GaussianBlur(np.maximum(neck, skin), (feather, feather), 0)
                             * 1.5, 0, 1)
    skin, background = skin[..., None], background[..., None]
    out = canvas * (1 - skin) + toned * skin
    out = out * (1 - background) + restyled * background
    return np.clip(out, 0, 255).astype(np.uint8)


def _voice(rng: np.random.Generator, female: bool) -> SpeakerVoice:
    return SpeakerVoice(
        f0_hz=rng.uniform(185, 235) if female else rng.uniform(98, 130),
        formant_scale=rng.uniform(1.1, 1.2) if female else rng.uniform(0.92, 1.02),
        rate_scale=rng.uniform(0.88, 1.12),
        loudness_db=rng.uniform(-1.5, 1.5),
        breathiness=rng.uniform(0.0, 0.08),
        expressivity=rng.uniform(0.8, 1.15),
    )


def build_identities(count: int, size: int, seed: int) -> list[Identity]:
    """The first two identities are the photos as they are; later ones are derived."""
    bases = [_face_crop(photo, size) for photo in _photos()]
    base_landmarks = [detect_landmarks(canvas) for canvas in bases]
    bases[0] = _relax_smile(bases[0], base_landmarks[0])
    base_landmarks[0] = detect_landmarks(bases[0])

    identities = []
    for index in range(count):
        rng = np.random.default_rng([seed, SEED_DOMAIN_IDENTITY, index])
        base, variant = index % 2, index // 2
        canvas, landmarks = bases[base], base_landmarks[base]
        if variant > 0:
            if variant % 2 == 1:
                canvas = np.ascontiguousarray(canvas[:, ::-1])
                landmarks = detect_landmarks(canvas)
            # Alternate wider/narrower faces so derived identities differ from each other.
            sign = 1 if variant % 2 == 1 else -1
            canvas = _reshape_face(canvas, landmarks, jaw=sign * rng.uniform(0.04, 0.09),
                                   eyes=rng.uniform(-0.04, 0.04),
                                   length=-sign * rng.uniform(0.03, 0.08))
            landmarks = detect_landmarks(canvas)
            # Step the hue by a third of the circle per variant so siblings look unalike.
            canvas = _recolour(canvas, landmarks, skin_lightness=rng.uniform(0.72, 1.08),
                               skin_warmth=rng.uniform(2, 12),
                               hue_shift=(120 * variant + rng.uniform(-30, 30)) % 360,
                               saturation=rng.uniform(0.6, 1.3))
        identities.append(Identity(
            speaker=f"spk{index:02d}", canvas=canvas, landmarks=landmarks,
            # Half the voices are male, balanced across the two base photos.
            voice=_voice(rng, female=(index + index // 2) % 2 == 0),
            expressivity=rng.uniform(0.8, 1.15)))
    return identities


def scene_without_face(size: int) -> np.ndarray:
    """A canvas of real photo background with no face in it."""
    side = int(round(size * CANVAS_MARGIN))
    return cv2.resize(_photos()[0][_NO_FACE_REGION], (side, side), interpolation=cv2.INTER_AREA)
