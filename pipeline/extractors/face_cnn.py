"""Frozen face CNNs over the aligned crops of the faces store."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipeline.extractors import EXTRACTORS, Extractor, Features
from pipeline.extractors.frame_model import FrameModel
from pipeline.extractors.weights import FER2013, LocatedWeights, locate_weights
from pipeline.store import Entry

# Pretrained weights, torchvision style: ``weights: FER2013`` in params.
MINI_XCEPTION_WEIGHTS = {"FER2013": FER2013}

_GROUP_KEYS = ("tracks_crop_gray", "tracks_mask")


@EXTRACTORS.register("fer_mini_xception")
class FerMiniXception(FrameModel):
    """128-d embedding + 7 FER2013 logits per sampled frame, from the 64x64 gray crop.

    ``faces: main`` (default) embeds the clip's main subject; ``faces: mean`` (group emotion,
    VGAF style) averages the per-face outputs over the faces visible in each frame, from the
    per-track crops a faces store made with ``faces.max_faces > 1`` has.
    """

    input = "faces"
    input_keys = ("crop_gray", "mask", "timestamps")
    # 2: BatchNorm folded into the convolutions; outputs move by float rounding (<1e-5), which
    # a neural head downstream can amplify, so stores made before are re-extracted.
    version = 2

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

    @classmethod
    def locate_weights(cls, config: Config) -> LocatedWeights:
        try:
            weights = MINI_XCEPTION_WEIGHTS[config.weights]
        except KeyError:
            raise ValueError(f"unknown mini-Xception weights {config.weights!r}; available: {sorted(MINI_XCEPTION_WEIGHTS)}") from None
        located = locate_weights([weights], config.weights_path, "fer_mini_xception", "options.weights_path")
        return LocatedWeights(located.path, weights)  # a local file stands in for the named weights

    def build_model(self, path: Path) -> tuple[Any, int]:
        from pipeline.extractors.mini_xception import EMBEDDING_DIM, MiniXception, load_keras_weights

        classes = self.located.known.classes
        model = MiniXception(len(classes))
        load_keras_weights(model, path)
        return model.fold_batch_norm(), EMBEDDING_DIM + len(classes)  # frozen: never trained here

    def preprocess(self, crops: np.ndarray) -> Any:
        from pipeline.extractors.mini_xception import preprocess_gray64

        return preprocess_gray64(crops).to(self.device)

    def extract(self, entry: Entry) -> Features:
        if self.config.faces == "main":
            return super().extract(entry)
        missing = [key for key in _GROUP_KEYS if key not in entry.arrays]
        if missing:
            raise KeyError(f"{entry.clip_id}: faces: mean needs the per-track crops {missing}; set faces.max_faces > 1")
        crops, masks = entry.arrays["tracks_crop_gray"], entry.arrays["tracks_mask"].astype(bool)  # [T, F, ...]
        per_face = self.embed(crops.reshape(-1, *crops.shape[2:]), masks.reshape(-1)).reshape(*masks.shape, -1)
        count = masks.sum(1, keepdims=True)
        output = (per_face.sum(1) / np.maximum(count, 1)).astype(np.float32)
        return Features(output, entry.arrays["timestamps"], (count[:, 0] > 0).astype(np.uint8))


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
        from pipeline.extractors.mini_xception import preprocess_gray64

        crops, mask = entry.arrays["crop_gray"], entry.arrays["mask"].astype(bool)
        data = preprocess_gray64(crops).reshape(len(crops), -1).numpy() if len(crops) else np.zeros((0, 4096), np.float32)
        data[~mask] = 0.0
        return Features(np.ascontiguousarray(data, dtype=np.float32), entry.arrays["timestamps"], mask.astype(np.uint8))
