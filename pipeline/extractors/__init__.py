"""Feature extractors: frozen models and signal transforms from an input store (aligned
faces or decoded audio) to a [time, dim] feature array with timestamps and a mask.

Adding one: subclass :class:`Extractor`, give it a ``Config`` dataclass and an ``input``,
decorate it with ``@EXTRACTORS.register("name")`` and import its module below. The extract
stage and params validation find it by name; no stage code changes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from pipeline.registry import Registry
from pipeline.store import Entry


@dataclass
class Features:
    data: np.ndarray        # [T, D] float32
    timestamps: np.ndarray  # [T] seconds
    mask: np.ndarray        # [T] uint8, 0 where the frame carries no information


class Extractor:
    input: ClassVar[str]          # "faces" or "audio": the store the extractor reads
    input_keys: ClassVar[tuple[str, ...]]  # datasets it reads from an input entry
    registry_name: ClassVar[str]
    Config: ClassVar[type]

    def __init__(self, config: Any, device: str = "cpu", batch_size: int = 64) -> None:
        self.config = config
        self.device = device
        self.batch_size = batch_size

    @property
    def weights_sha256(self) -> str:
        return ""

    @property
    def weights_origin(self) -> str:
        return ""

    def identity(self) -> dict[str, Any]:
        """What the features depend on: changing any of it invalidates stored entries."""
        return {
            "extractor": self.registry_name,
            "config": asdict(self.config),
            "weights_sha256": self.weights_sha256,
        }

    def extract(self, entry: Entry) -> Features:
        raise NotImplementedError


EXTRACTORS: Registry[type[Extractor]] = Registry("extractor")


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# Importing the modules registers their extractors.
from pipeline.extractors import acoustic, face_cnn, spectrogram  # noqa: E402,F401
from pipeline.extractors import face_geometry, facex_mobilenet, torchvision_backbone, video3d  # noqa: E402,F401
