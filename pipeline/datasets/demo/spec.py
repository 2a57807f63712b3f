"""The demo dataset's parameters (params.yaml ``demo``), kept apart from the generator so
that loading params does not import the rendering and synthesis code."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DemoSpec:
    seed: int = 0
    identities: int = 6          # speakers; >= 4 so speaker-independent folds are possible
    emotions: list[str] = field(default_factory=lambda: [
        "neutral", "happy", "sad", "angry", "fear", "disgust", "surprise"])  # subset of EMOTIONS
    takes: int = 3               # clips per identity x emotion
    min_duration_s: float = 2.0
    max_duration_s: float = 4.0
    fps: int = 25
    size: int = 256              # square frames, pixels
    sample_rate: int = 16000
    bad_clips: bool = True       # add the four BAD_CLIPS
