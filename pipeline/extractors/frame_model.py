"""The base of the extractors that run a frozen network on face crops: one weights file, a
model built from it, and the masked batch loop (only frames with a face go through the
network, ``batch_size`` at a time, under autocast on CUDA; the others keep zeros and stay
masked). torch is imported only when a model is built or run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.extractors import Extractor, Features
from pipeline.extractors.weights import LocatedWeights
from pipeline.store import Entry


class FrameModel(Extractor):
    """Subclasses say where their weights are (:meth:`locate_weights`), build the network
    (:meth:`build_model`, returning it and its output width), turn uint8 crops into its input
    (:meth:`preprocess`) and name the crops they read (:meth:`crop_key`). The network returns
    a tensor [N, dim] or a tuple of them, concatenated in order."""

    def __init__(self, config: Any, device: str = "cpu", batch_size: int = 64) -> None:
        super().__init__(config, device, batch_size)
        self.located: LocatedWeights = self.locate_weights(config)
        self.model, self.dim = self.build_model(self.located.path)
        self.model.eval().to(device)

    @property
    def weights_path(self) -> Path:
        return self.located.path

    def build_model(self, path: Path) -> tuple[Any, int]:
        raise NotImplementedError

    def preprocess(self, crops: np.ndarray) -> Any:
        """uint8 crops [N, ...] -> the network's input tensor on ``self.device``."""
        raise NotImplementedError

    def crop_key(self) -> str:
        return self.input_keys[0]

    def run_model(self, rows: np.ndarray, batch_of: Callable[[np.ndarray], Any], per_batch: int, output: np.ndarray) -> None:
        """``output[rows]`` = the network on ``batch_of(rows)``, ``per_batch`` rows at a time."""
        import torch

        with torch.inference_mode():
            for start in range(0, len(rows), per_batch):
                chunk = rows[start : start + per_batch]
                with torch.autocast("cuda", enabled=self.device.startswith("cuda")):
                    result = self.model(batch_of(chunk))
                if isinstance(result, tuple):
                    result = torch.cat(result, dim=1)
                output[chunk] = result.float().cpu().numpy()

    def embed(self, crops: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """[N, ...] uint8 crops -> [N, dim] float32, zeros where ``mask`` is false."""
        output = np.zeros((len(crops), self.dim), np.float32)
        self.run_model(np.flatnonzero(mask), lambda rows: self.preprocess(crops[rows]), self.batch_size, output)
        return output

    def extract(self, entry: Entry) -> Features:
        mask = entry.arrays["mask"].astype(bool)
        return Features(self.embed(entry.arrays[self.crop_key()], mask), entry.arrays["timestamps"], mask.astype(np.uint8))
