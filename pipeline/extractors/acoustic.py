"""openSMILE acoustic features (eGeMAPS, ComParE, emobase). openSMILE is free for research only:
see the README's licence note."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np

from pipeline.extractors import EXTRACTORS, Extractor, Features
from pipeline.store import Entry


@EXTRACTORS.register("opensmile")
class OpenSmile(Extractor):
    """Low-level descriptors ([T, 25] for eGeMAPSv02, [T, 26] for emobase, one row per 10 ms
    frame) or functionals ([1, 88] eGeMAPSv02, [1, 988] emobase, [1, 6373] ComParE_2016) of
    the whole clip."""

    input = "audio"
    input_keys = ("samples",)

    @dataclass(frozen=True)
    class Config:
        feature_set: Literal["eGeMAPSv02", "emobase", "ComParE_2016"] = "eGeMAPSv02"
        level: Literal["functionals", "lld"] = "functionals"

    @cached_property
    def smile(self):
        import opensmile

        level = {"functionals": opensmile.FeatureLevel.Functionals, "lld": opensmile.FeatureLevel.LowLevelDescriptors}
        return opensmile.Smile(feature_set=opensmile.FeatureSet[self.config.feature_set], feature_level=level[self.config.level])

    @classmethod
    def weights_origin_for(cls, config: Config) -> str:
        from importlib.metadata import version  # not opensmile itself: a second of imports

        return f"opensmile {version('opensmile')} {config.feature_set} {config.level}"

    def extract(self, entry: Entry) -> Features:
        frame = self.smile.process_signal(entry.arrays["samples"], int(entry.attrs["sample_rate"]))
        data = frame.to_numpy(np.float32)
        starts = frame.index.get_level_values("start").total_seconds().to_numpy()
        ends = frame.index.get_level_values("end").total_seconds().to_numpy()
        # Window centres, so LLD rows line up with spectrogram frames and video timestamps;
        # the median window length, because openSMILE clips the last window at the signal end.
        timestamps = starts + np.median(ends - starts) / 2
        return Features(np.nan_to_num(data), timestamps, np.ones(len(data), np.uint8))
