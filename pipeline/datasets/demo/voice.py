"""A small source-filter speech synthesiser for emotional pseudo-speech.

A glottal pulse train (Rosenberg flow pulses, with jitter, shimmer, tremor and
aspiration noise) follows an F0 contour built from per-syllable pitch accents;
cascaded formant resonators shape it into a random vowel sequence, and filtered
noise bursts stand in for consonants.  Emotion enters only through ``Prosody``;
speaker identity through ``SpeakerVoice``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import signal

from .emotions import Prosody

# Adult male formant frequencies (Peterson & Barney); speakers scale them.
VOWEL_FORMANTS = np.array([
    [730, 1090, 2440],   # a
    [530, 1840, 2480],   # e
    [270, 2290, 3010],   # i
    [570, 840, 2410],    # o
    [300, 870, 2240],    # u
    [660, 1720, 2410],   # ae
    [490, 1350, 1690],   # er
], dtype=np.float64)
NASAL_FORMANTS = np.array([250, 1100, 2300], dtype=np.float64)
FORMANT_BANDWIDTHS = np.array([80, 110, 160, 250], dtype=np.float64)
F4_HZ = 3500.0
BASE_LEVEL = 0.05      # RMS of a 0 dB voice; leaves headroom for +10 dB emotions
NOISE_FLOOR = 10 ** (-60 / 20)


@dataclass(frozen=True)
class SpeakerVoice:
    f0_hz: float           # speaking F0 in a neutral mood
    formant_scale: float   # vocal-tract length: ~1.0 male, ~1.15 female
    rate_scale: float      # habitual speaking-rate factor
    loudness_db: float     # habitual level
    breathiness: float     # added to the emotion's aspiration level
    expressivity: float    # how far this speaker's voice goes towards an emotion


@dataclass(frozen=True)
class _Syllable:
    start: int          # sample index
    consonant_end: int  # voicing (vowel) starts here
    end: int
    consonant: str      # "plosive", "fricative", "sibilant", "nasal" or "none"
    vowel: np.ndarray   # F1..F3 in Hz, speaker-scaled
    accent: float       # -0.5 .. 0.5, scaled by the pitch range


def synthesize(rng: np.random.Generator, n_samples: int, sample_rate: int,
               voice: SpeakerVoice, prosody: Prosody) -> np.ndarray:
    """Return ``n_samples`` of float32 mono pseudo-speech in [-1, 1]."""
    syllables = _plan_syllables(rng, n_samples, sample_rate, voice, prosody)
    t = np.arange(n_samples) / sample_rate
    f0 = _f0_contour(rng, t, syllables, sample_rate, voice, prosody)
    voicing = _voicing_gate(syllables, n_samples, sample_rate)

    flow, excitation = _glottal_source(rng, f0, sample_rate, prosody)
    # Turbulence noise pulses with the glottal flow; 0.05 puts breathiness 1 at
    # roughly the level of the pulse excitation.
    aspiration = rng.standard_normal(n_samples) * (0.3 + flow) * 0.05
    source = voicing * (excitation + (prosody.breathiness + voice.breathiness) * aspiration)
    voiced = _vocal_tract(source, syllables, sample_rate, voice)
    active = voicing > 0.5
    voiced /= np.sqrt(np.mean(voiced[active] ** 2)) if active.any() else 1.0

    speech = voiced + _consonant_noise(rng, syllables, n_samples, sample_rate)
    gain = BASE_LEVEL * 10 ** ((prosody.loudness_db + voice.loudness_db) / 20)
    audio = gain * speech + NOISE_FLOOR * rng.standard_normal(n_samples)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def _plan_syllables(rng, n_samples, sample_rate, voice, prosody) -> list[_Syllable]:
    """Words of 1-4 syllables separated by pauses, filling the clip."""
    rate = prosody.rate * voice.rate_scale * rng.uniform(0.92, 1.08)
    duration = n_samples / sample_rate
    syllables: list[_Syllable] = []
    t = rng.uniform(0.05, 0.25)
    while t < duration - 0.25:
        for position in range(int(rng.integers(1, 5))):
            length = rng.uniform(0.75, 1.25) / rate
            if t + length > duration - 0.08:
                break
            consonant = str(rng.choice(["plosive", "fricative", "sibilant", "nasal", "none"],
                                       p=[0.3, 0.15, 0.15, 0.2, 0.2]))
            consonant_len = 0.0 if consonant == "none" else rng.uniform(0.18, 0.35) * length
            vowel = VOWEL_FORMANTS[rng.integers(len(VOWEL_FORMANTS))] * voice.formant_scale
            # Word-initial syllables carry the stronger accents.
            accent = rng.uniform(-0.5, 0.5) * (1.0 if position == 0 else 0.6)
            start = int(t * sample_rate)
            syllables.append(_Syllable(start, start + int(consonant_len * sample_rate),
                                       int((t + length) * sample_rate), consonant, vowel, accent))
            t += length
        t += rng.uniform(0.08, 0.3) * 4.0 / rate
    return syllables


def _f0_contour(rng, t, syllables, sample_rate, voice, prosody) -> np.ndarray:
    centres = [(s.consonant_end + s.end) / 2 / sample_rate for s in syllables] or [t[-1] / 2]
    accents = [s.accent * prosody.pitch_range_st for s in syllables] or [0.0]
    # Glide between the syllable accents: interpolate and smooth on a 200 Hz
    # control grid (smoothing at audio rate costs far more for the same curve).
    control_t = np.arange(0.0, t[-1] + 0.005, 0.005)
    window = np.hanning(13)  # 60 ms
    accents_curve = np.convolve(np.interp(control_t, centres, accents), window / window.sum(),
                                "same")
    semitones = np.interp(t, control_t, accents_curve)
    semitones += prosody.pitch_st + prosody.pitch_slope_st * (t / t[-1] - 0.5)
    tremor_hz = rng.uniform(5.0, 7.0)
    semitones += prosody.tremor_st * np.sin(2 * np.pi * tremor_hz * t + rng.uniform(0, 2 * np.pi))
    f0 = voice.f0_hz * 2 ** (semitones / 12)
    # Jitter: fast random period perturbation, one value every 2.5 ms.
    knots = rng.standard_normal(int(t[-1] / 0.0025) + 2)
    f0 *= 1 + prosody.jitter * np.interp(t, np.arange(len(knots)) * 0.0025, knots)
    return f0


def _voicing_gate(syllables, n_samples, sample_rate) -> np.ndarray:
    gate = np.zeros(n_samples)
    ramp = int(0.012 * sample_rate)
    for s in syllables:
        begin = s.start if s.consonant == "nasal" else s.consonant_end
        length = s.end - begin
        if length <= 2 * ramp:
            continue
        envelope = np.ones(length)
        fade = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, ramp))
        envelope[:ramp] = fade
        # Vowels decay towards the syllable end rather than stopping abruptly.
        envelope[-3 * ramp:] = np.linspace(1, 0, 3 * ramp) ** 1.5
        if s.consonant == "nasal":
            envelope[:s.consonant_end - begin] *= 0.35
        gate[begin:s.end] = np.maximum(gate[begin:s.end], envelope * (1 + 0.5 * s.accent))
    return gate


def _glottal_source(rng, f0, sample_rate, prosody) -> tuple[np.ndarray, np.ndarray]:
    """Rosenberg glottal flow and its derivative (the radiated excitation)."""
    phase = np.cumsum(f0 / sample_rate)
    cycle = phase.astype(np.int64)
    frac = phase - cycle
    opening = 0.4
    # A lax voice closes slowly (weak harmonics); a tense voice closes abruptly.
    closing = 0.08 + 0.22 * prosody.tilt
    flow = np.where(frac < opening, 0.5 * (1 - np.cos(np.pi * frac / opening)),
                    np.where(frac < opening + closing,
                             np.cos(0.5 * np.pi * (frac - opening) / closing), 0.0))
    # Cycle-to-cycle amplitude perturbation grows with the period perturbation.
    shimmer = 1 + 2 * prosody.jitter * rng.standard_normal(cycle[-1] + 1)
    flow *= shimmer[cycle]
    excitation = np.diff(flow, prepend=0.0)
    # A one-pole low-pass sets the spectral slope: about -2 dB (tense) to -15 dB
    # (lax) at high frequencies.
    pole = 0.85 * prosody.tilt
    excitation = signal.lfilter([1 - pole], [1, -pole], excitation)
    return flow, excitation


def _resonator_sos(formants: np.ndarray, sample_rate: int) -> np.ndarray:
    """Cascade of unity-DC-gain two-pole resonators, one second-order section each."""
    sections = []
    for freq, bandwidth in zip(np.append(formants, F4_HZ), FORMANT_BANDWIDTHS):
        radius = np.exp(-np.pi * bandwidth / sample_rate)
        a1 = -2 * radius * np.cos(2 * np.pi * min(freq, 0.45 * sample_rate) / sample_rate)
        a2 = radius ** 2
        sections.append([1 + a1 + a2, 0, 0, 1, a1, a2])
    return np.array(sections)


def _vocal_tract(source, syllables, sample_rate, voice) -> np.ndarray:
    """Filter each syllable with its vowel's formants, carrying the filter state."""
    out = np.zeros_like(source)
    state = np.zeros((4, 2))
    boundaries = [0] + [b for s in syllables for b in (s.start, s.consonant_end)] + [len(source)]
    targets = [syllables[0].vowel if syllables else VOWEL_FORMANTS[0]]
    for s in syllables:
        nasal = NASAL_FORMANTS * voice.formant_scale if s.consonant == "nasal" else s.vowel
        targets += [nasal, s.vowel]
    for begin, end, formants in zip(boundaries[:-1], boundaries[1:], targets):
        if end > begin:
            out[begin:end], state = signal.sosfilt(_resonator_sos(formants, sample_rate),
                                                   source[begin:end], zi=state)
    return out


@lru_cache(maxsize=None)
def _noise_band(kind: str, sample_rate: int) -> np.ndarray:
    bands = {"plosive": (1000, 6000), "fricative": (1200, 7000), "sibilant": (3500, 7500)}
    low, high = bands[kind]
    return signal.butter(4, [low, min(high, 0.47 * sample_rate)], "bandpass",
                         fs=sample_rate, output="sos")


def _consonant_noise(rng, syllables, n_samples, sample_rate) -> np.ndarray:
    out = np.zeros(n_samples)
    levels = {"plosive": 0.9, "fricative": 0.25, "sibilant": 0.45}
    for s in syllables:
        if s.consonant not in levels:
            continue
        length = s.consonant_end - s.start
        if length < 8:
            continue
        noise = signal.sosfilt(_noise_band(s.consonant, sample_rate), rng.standard_normal(length))
        if s.consonant == "plosive":
            # A short release burst after a silent closure.
            envelope = np.zeros(length)
            closure = length // 2
            envelope[closure:] = np.exp(-np.arange(length - closure) / (0.012 * sample_rate))
        else:
            envelope = np.sin(np.linspace(0, np.pi, length)) ** 0.7
        out[s.start:s.consonant_end] += levels[s.consonant] * envelope * noise
    return out
