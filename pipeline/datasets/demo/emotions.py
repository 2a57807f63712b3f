"""How each emotion is acted: facial actions, voice prosody and valence/arousal.

The table is designed so that each modality alone confuses some emotions that the
other one separates, which makes audio-visual fusion measurably useful:

* face: angry ~ disgust (brows down, eyes narrowed), fear ~ surprise (brows up,
  eyes wide, jaw open) and neutral ~ sad (sad is a weak expression);
* voice: happy ~ surprise ~ angry (high, loud, fast) and sad ~ disgust (low,
  soft, slow), with neutral in between; fear has its own narrow, trembling high
  pitch.

Per-take strength, per-speaker expressivity and voice/face differences keep
either modality well short of perfect; ``python -m pipeline.datasets.demo.check``
measures the result.
"""
from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Prosody:
    pitch_st: float        # mean F0 relative to the speaker's base, semitones
    pitch_range_st: float  # spread of per-syllable pitch accents, semitones
    pitch_slope_st: float  # F0 change over the utterance, semitones (+ = rising)
    rate: float            # syllables per second
    loudness_db: float
    tilt: float            # 0 = tense, bright source .. 1 = lax, dark source
    breathiness: float     # aspiration noise relative to the voiced source
    tremor_st: float       # depth of the ~6 Hz vocal tremor, semitones
    jitter: float          # cycle-to-cycle F0 perturbation, fraction of F0

    def towards(self, target: "Prosody", amount: float) -> "Prosody":
        """Interpolate from self (neutral) towards ``target`` (amount 1 = full emotion)."""
        return Prosody(**{f.name: getattr(self, f.name)
                          + amount * (getattr(target, f.name) - getattr(self, f.name))
                          for f in fields(Prosody)})


@dataclass(frozen=True)
class EmotionProfile:
    valence: float
    arousal: float
    face: dict[str, float]  # facial action name (see expressions.ACTIONS) -> weight at apex
    voice: Prosody


EMOTIONS: dict[str, EmotionProfile] = {
    "neutral": EmotionProfile(
        0.0, 0.0, {},
        Prosody(0.0, 2.5, -1.5, 4.0, 0.0, 0.5, 0.08, 0.0, 0.005)),
    "happy": EmotionProfile(
        0.8, 0.5, {"lip_corner_pull": 1.2, "cheek_raise": 1.0, "jaw_drop": 0.25},
        Prosody(4.0, 8.0, 0.0, 4.9, 5.0, 0.3, 0.06, 0.0, 0.005)),
    "sad": EmotionProfile(
        -0.7, -0.4, {"lip_corner_depress": 1.0, "inner_brow_raise": 0.8, "brow_lower": 0.3,
                     "lid_droop": 0.6},
        Prosody(-2.5, 1.2, -2.0, 2.6, -9.0, 0.85, 0.35, 0.0, 0.008)),
    "angry": EmotionProfile(
        -0.6, 0.75, {"brow_lower": 1.3, "lid_tighten": 1.0, "lip_press": 0.8,
                     "upper_lip_raise": 0.5, "nose_wrinkle": 0.3, "lip_corner_depress": 0.3},
        Prosody(3.0, 4.5, -1.5, 5.6, 8.0, 0.05, 0.04, 0.0, 0.012)),
    "fear": EmotionProfile(
        -0.65, 0.6, {"inner_brow_raise": 1.0, "outer_brow_raise": 0.6, "brow_lower": 0.4,
                     "upper_lid_raise": 1.0, "lip_stretch": 1.0, "jaw_drop": 0.5},
        Prosody(6.0, 1.2, 0.5, 5.2, 1.0, 0.5, 0.25, 1.0, 0.025)),
    "disgust": EmotionProfile(
        -0.65, 0.2, {"brow_lower": 0.8, "lid_tighten": 0.6, "nose_wrinkle": 1.0,
                     "upper_lip_raise": 0.9, "lip_corner_depress": 0.4},
        Prosody(-3.0, 3.5, -4.0, 2.6, -6.0, 0.65, 0.15, 0.0, 0.01)),
    "surprise": EmotionProfile(
        0.3, 0.8, {"inner_brow_raise": 1.0, "outer_brow_raise": 1.0, "upper_lid_raise": 1.0,
                   "jaw_drop": 1.0},
        Prosody(5.0, 9.0, 6.0, 4.4, 4.0, 0.3, 0.06, 0.0, 0.005)),
}
