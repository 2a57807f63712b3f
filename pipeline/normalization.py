"""Normalisation of frame features before any model sees them: the speaker standardisation
protocols and per-utterance normalisation (numpy only, so checkpoints apply them at prediction
time without the training code).

``train.speaker_standardization`` names the protocol, i.e. whose statistics a clip is
standardised with:

- ``none``: nobody's (each model still standardises its inputs with the training part of
  its fold, as it always does);
- ``train-speakers``: per fold, the mean and std of every visible frame of the training
  folds' clips (the training speakers only), applied to every clip of that fold, held-out
  clips included: no statistic of a test speaker is used (non-transductive);
- ``transductive``: each speaker's own statistics, test speakers included (their unlabelled
  clips), as in the GeMAPS paper (Eyben et al. 2016). On acted corpora, where each speaker
  acts every emotion about equally, these statistics carry information a deployed system
  rarely has.

``train.feature_normalization: utterance`` subtracts each clip's own mean and divides by its
own std (per dimension, over its visible frames) before the protocol: it needs nobody else's
clips. A clip with fewer than two visible frames (e.g. openSMILE functionals, one vector per
clip) has no within-clip statistics and is left as it is.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from pipeline.config import FEATURE_NORMALIZATIONS, SPEAKER_STANDARDIZATIONS, speaker_standardization_name  # noqa: F401

# clip_id -> (frames [T, D], mask [T], timestamps [T], ...)
Sequences = dict[str, tuple]
Statistics = tuple[np.ndarray, np.ndarray]        # (mean [D], std [D])
SpeakerStatistics = dict[str, Statistics]          # speaker -> statistics

MIN_STD = 1e-6


def statistics_of(frames: np.ndarray) -> Statistics:
    return frames.mean(0), np.maximum(frames.std(0), MIN_STD)


def _visible(sequences: Sequences, clip_ids: Iterable[str]) -> list[np.ndarray]:
    return [sequences[c][0][sequences[c][1]] for c in clip_ids]


def standardized(x: np.ndarray, mask: np.ndarray, statistics: Statistics) -> np.ndarray:
    mean, std = statistics
    return np.where(mask[:, None], (x - mean) / std, 0.0).astype(np.float32)


def pooled_statistics(sequences: Sequences, clip_ids: Iterable[str]) -> Statistics | None:
    """Mean and std over every visible frame of ``clip_ids`` (None without any)."""
    frames = [f for f in _visible(sequences, [c for c in clip_ids if c in sequences]) if len(f)]
    return statistics_of(np.concatenate(frames)) if frames else None


def apply_statistics(sequences: Sequences, statistics: Statistics | None) -> Sequences:
    """Every clip standardised with the same statistics (None: left as it is)."""
    if statistics is None:
        return dict(sequences)
    return {c: (standardized(x, mask, statistics), mask, *rest) for c, (x, mask, *rest) in sequences.items()}


def speaker_statistics(sequences: Sequences, speakers: dict[str, str]) -> SpeakerStatistics:
    """Mean and std of the visible frames of each speaker's clips (no labels are used)."""
    by_speaker: dict[str, list[str]] = {}
    for clip_id in sequences:
        by_speaker.setdefault(speakers[clip_id], []).append(clip_id)
    statistics = {}
    for speaker, clip_ids in by_speaker.items():
        found = pooled_statistics(sequences, clip_ids)
        if found is not None:
            statistics[speaker] = found
    return statistics


def apply_speaker_statistics(sequences: Sequences, speakers: dict[str, str], statistics: SpeakerStatistics) -> Sequences:
    """Each clip's frames minus its speaker's mean, over its speaker's std (a speaker without
    statistics, i.e. without any visible frame, is left as it is)."""
    result = {}
    for clip_id, (x, mask, *rest) in sequences.items():
        found = statistics.get(speakers[clip_id])
        result[clip_id] = (x, mask, *rest) if found is None else (standardized(x, mask, found), mask, *rest)
    return result


def standardize_per_speaker(sequences: Sequences, speakers: dict[str, str]) -> Sequences:
    """Each clip's frames standardised with its own speaker's statistics (transductive)."""
    return apply_speaker_statistics(sequences, speakers, speaker_statistics(sequences, speakers))


def normalize_utterances(sequences: Sequences) -> Sequences:
    """Each clip's frames standardised with the clip's own statistics (a clip with fewer than
    two visible frames is left as it is)."""
    result = {}
    for clip_id, (x, mask, *rest) in sequences.items():
        visible = x[mask]
        result[clip_id] = (standardized(x, mask, statistics_of(visible)), mask, *rest) if len(visible) >= 2 else (x, mask, *rest)
    return result


def normalize_features(sequences: Sequences, feature_normalization: str) -> Sequences:
    """``train.feature_normalization`` applied to one branch's sequences."""
    if feature_normalization == "utterance":
        return normalize_utterances(sequences)
    if feature_normalization != "none":
        raise ValueError(f"feature normalisation {feature_normalization!r} is not one of {list(FEATURE_NORMALIZATIONS)}")
    return sequences
