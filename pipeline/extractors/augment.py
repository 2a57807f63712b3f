"""Waveform augmentations for the audio extractors: the maths behind
``extractors.<name>.augmentations`` (see pipeline/config.py for the params and
pipeline/extraction.py for the copies they make).

Each augmentation turns one clip's decoded samples into the samples of one augmented copy.
The extract stage runs the extractor on each copy and stores it in its own store
(``features/<name>/augmented/<augmentation>``), so a copy is extracted once, cached, and
only ever read by training (it is never a clip of the experiment).

Adding one: a class with a ``Config`` dataclass (its params-file keys) and an
``apply(samples, sample_rate, rng)`` method, decorated with ``@AUGMENTATIONS.register("type")``.
A copy must be the same for the same clip, config and code: ``rng`` is seeded from the clip id
and the augmentation's name (:func:`copy_rng`); bump ``VERSION`` when an augmentation's
output changes for the same config (every copy is then extracted again).

Numpy only at import (scipy is imported where a copy is resampled): params validation
imports this module.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np

from pipeline.registry import Registry

# Part of every copy's lineage: bump when an augmentation's output changes for the same config.
VERSION = 1


class Augmentation:
    registry_name: ClassVar[str]
    Config: ClassVar[type]

    def __init__(self, config: Any) -> None:
        self.config = config
        self.check()

    def check(self) -> None:
        """Raise ValueError (its message names the bad key) for a config that cannot work."""

    def apply(self, samples: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


AUGMENTATIONS: Registry[type[Augmentation]] = Registry("augmentation")


def copy_rng(clip_id: str, augmentation_name: str) -> np.random.Generator:
    """The random stream of one clip's copy: a re-run, on any machine, draws the same noise."""
    digest = hashlib.sha256(f"{clip_id}\0{augmentation_name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0


@AUGMENTATIONS.register("speed")
class Speed(Augmentation):
    """Speed perturbation as Kaldi does it (sox ``speed``): the clip played ``factor`` times as
    fast, so its duration is divided by ``factor`` and its pitch and formants move with it.
    Resampled by a polyphase filter (the factor as a ratio of integers up to 100)."""

    @dataclass(frozen=True)
    class Config:
        factor: float

    def check(self) -> None:
        if not 0.5 <= self.config.factor <= 2.0:
            raise ValueError(f"factor: {self.config.factor} is outside [0.5, 2] (Kaldi's recipes use 0.9 and 1.1)")

    def apply(self, samples, sample_rate, rng):
        from scipy.signal import resample_poly

        ratio = Fraction(self.config.factor).limit_denominator(100)
        if ratio == 1 or not len(samples):
            return samples.astype(np.float32)
        # factor times faster: every `numerator` input samples become `denominator` output samples.
        return resample_poly(samples.astype(np.float64), ratio.denominator, ratio.numerator).astype(np.float32)


@AUGMENTATIONS.register("noise")
class Noise(Augmentation):
    """Additive white Gaussian noise at ``snr_db`` dB below the clip's own power (computed over
    the whole clip; a silent clip stays silent)."""

    @dataclass(frozen=True)
    class Config:
        snr_db: float

    def check(self) -> None:
        if not -20.0 <= self.config.snr_db <= 80.0:
            raise ValueError(f"snr_db: {self.config.snr_db} is outside [-20, 80] dB")

    def apply(self, samples, sample_rate, rng):
        signal_rms = rms(samples)
        if signal_rms == 0.0:
            return samples.astype(np.float32)
        noise = rng.standard_normal(len(samples))
        # Scaled to the exact power the SNR asks for (not only in expectation).
        noise *= signal_rms / (rms(noise) * 10 ** (self.config.snr_db / 20))
        return (samples.astype(np.float64) + noise).astype(np.float32)


@AUGMENTATIONS.register("gain")
class Gain(Augmentation):
    """The clip scaled by ``db`` dB (float samples: a positive gain is not clipped)."""

    @dataclass(frozen=True)
    class Config:
        db: float

    def check(self) -> None:
        if not -40.0 <= self.config.db <= 40.0:
            raise ValueError(f"db: {self.config.db} is outside [-40, 40] dB")

    def apply(self, samples, sample_rate, rng):
        return (samples.astype(np.float64) * 10 ** (self.config.db / 20)).astype(np.float32)


def build(augmentation_type: str, options: dict[str, Any], where: str) -> Augmentation:
    """The augmentation ``augmentation_type`` with ``options`` (a ParamsError names ``where``)."""
    from pipeline.config import ParamsError

    config = AUGMENTATIONS.config(augmentation_type, options, where, f"{where}.type")
    try:
        return AUGMENTATIONS.get(augmentation_type)(config)
    except ValueError as error:
        raise ParamsError(f"{where}.{error}") from None


def identity(name: str, augmentation_type: str, options: dict[str, Any]) -> dict[str, Any]:
    """What a copy depends on beyond its extractor and its input entry: the augmentation's
    type, config and code version, and its name, which seeds its random draws."""
    config = AUGMENTATIONS.config(augmentation_type, options, augmentation_type)
    return {"name": name, "type": augmentation_type, "config": asdict(config), "augment_version": VERSION}
