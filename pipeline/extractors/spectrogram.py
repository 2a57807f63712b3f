"""Spectrogram extractors over the decoded 16 kHz mono audio (librosa is imported when one runs)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.extractors import EXTRACTORS, Extractor, Features
from pipeline.store import Entry


def framing(entry: Entry, win_ms: float, hop_ms: float) -> tuple[np.ndarray, int, int, int]:
    """(samples, sample_rate, window, hop) of an audio entry, window and hop in samples."""
    sample_rate = int(entry.attrs["sample_rate"])
    return entry.arrays["samples"], sample_rate, int(round(win_ms * sample_rate / 1000)), int(round(hop_ms * sample_rate / 1000))


@EXTRACTORS.register("logmel")
class LogMel(Extractor):
    """Log-Mel power spectrogram, one frame per hop; frames are centred on their timestamp."""

    input = "audio"
    input_keys = ("samples",)

    @dataclass(frozen=True)
    class Config:
        n_mels: int = 64
        win_ms: float = 25.0
        hop_ms: float = 10.0
        fmin: float = 50.0
        fmax: float = 8000.0

    def extract(self, entry: Entry) -> Features:
        import librosa

        samples, sample_rate, win, hop = framing(entry, self.config.win_ms, self.config.hop_ms)
        power = librosa.feature.melspectrogram(
            y=samples,
            sr=sample_rate,
            n_fft=win,
            hop_length=hop,
            win_length=win,
            n_mels=self.config.n_mels,
            fmin=self.config.fmin,
            fmax=min(self.config.fmax, sample_rate / 2),
            center=True,
        )
        log_mel = np.log(power + 1e-10).T.astype(np.float32)
        timestamps = np.arange(len(log_mel)) * hop / sample_rate
        return Features(log_mel, timestamps, np.ones(len(log_mel), np.uint8))


@EXTRACTORS.register("spectrogram")
class LinearSpectrogram(Extractor):
    """Log-magnitude linear-frequency (speech) spectrogram up to ``fmax``."""

    input = "audio"
    input_keys = ("samples",)

    @dataclass(frozen=True)
    class Config:
        win_ms: float = 25.0
        hop_ms: float = 10.0
        n_fft: int = 512
        fmax: float = 4000.0

    def extract(self, entry: Entry) -> Features:
        import librosa

        samples, sample_rate, win, hop = framing(entry, self.config.win_ms, self.config.hop_ms)
        magnitude = np.abs(librosa.stft(samples, n_fft=max(self.config.n_fft, win), hop_length=hop, win_length=win, center=True))
        frequencies = librosa.fft_frequencies(sr=sample_rate, n_fft=max(self.config.n_fft, win))
        log_spectrum = np.log(magnitude[frequencies <= self.config.fmax] + 1e-6).T.astype(np.float32)
        timestamps = np.arange(len(log_spectrum)) * hop / sample_rate
        return Features(log_spectrum, timestamps, np.ones(len(log_spectrum), np.uint8))
