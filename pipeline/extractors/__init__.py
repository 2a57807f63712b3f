"""Feature extractors: frozen models and signal transforms from an input store (aligned
faces or decoded audio) to a [time, dim] feature array with timestamps and a mask.

Adding one: subclass :class:`Extractor` (or :class:`~pipeline.extractors.frame_model.FrameModel`
for a network run on each face crop), give it a ``Config`` dataclass and an ``input``,
decorate it with ``@EXTRACTORS.register("name")`` and import its module below. The extract
stage and params validation find it by name; no stage code changes.

Importing this package (and so every extractor module) imports no deep-learning library:
a stage computes its entries' keys from the classes alone (:meth:`Extractor.identity_for`),
and torch is imported only where a model is built. Keep it so in new modules: import torch
inside the functions that need it, or put the networks in a module of their own.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from pipeline.extractors.weights import LocatedWeights
from pipeline.registry import Registry
from pipeline.store import Entry
from pipeline.store.lineage import FileHashes


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
    # Bump when the features change for the same config and weights (a fix, a new
    # preprocessing): every entry of this extractor, and what is derived from them, is redone.
    version: ClassVar[int] = 1

    def __init__(self, config: Any, device: str = "cpu", batch_size: int = 64) -> None:
        self.config = config
        self.device = device
        self.batch_size = batch_size

    @classmethod
    def locate_weights(cls, config: Any) -> LocatedWeights | None:
        """The weights file ``config`` selects (found, not loaded); None for an extractor without one."""
        return None

    @classmethod
    def identity_for(cls, config: Any, hashes: FileHashes | None = None) -> dict[str, Any]:
        """What the features depend on, without building the extractor: changing any of it
        makes stored entries stale. ``hashes`` caches the weights file's sha256."""
        located = cls.locate_weights(config)
        return {
            "extractor": cls.registry_name,
            "version": cls.version,
            "config": asdict(config),
            "weights_sha256": located.sha256(hashes) if located is not None else "",
        }

    @classmethod
    def weights_origin_for(cls, config: Any) -> str:
        """Where the weights come from and which file is used ("" without weights)."""
        located = cls.locate_weights(config)
        return located.origin(f"user weights for {cls.registry_name}") if located is not None else ""

    def identity(self) -> dict[str, Any]:
        return self.identity_for(self.config)

    @cached_property
    def weights_sha256(self) -> str:
        return self.identity()["weights_sha256"]

    @property
    def weights_origin(self) -> str:
        return self.weights_origin_for(self.config)

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
