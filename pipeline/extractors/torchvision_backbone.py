"""Frozen torchvision image backbones (ResNet-50, VGG-16) over the aligned RGB face crops,
with weights the user supplies: ImageNet from torch's cache, or e.g. VGGFace2 checkpoints.
torch and torchvision are imported only when a model is built or run."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipeline.extractors import EXTRACTORS
from pipeline.extractors.frame_model import FrameModel
from pipeline.extractors.weights import TORCHVISION, LocatedWeights, locate_weights

Architecture = Literal["resnet50", "vgg16"]

ARCHITECTURES = ("resnet50", "vgg16")

# The checkpoint's classifier is not loaded (VGGFace2 models have 8631 identities, ImageNet
# 1000 classes); features are the penultimate layer.
CLASSIFIER_PREFIXES = {"resnet50": ("fc.",), "vgg16": ("classifier.6.",)}

# ImageNet statistics on RGB in [0, 1]; VGGFace2 models (Cao et al. 2018, and their PyTorch
# conversions) take BGR in [0, 255] minus the data set's mean, unscaled.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
VGGFACE2_MEAN_BGR = (91.4953, 103.8827, 131.0912)


def build_backbone(arch: str) -> tuple[Any, int]:
    """(torchvision model whose forward returns penultimate-layer features, feature size)."""
    import torchvision
    from torch import nn

    if arch == "resnet50":
        model = torchvision.models.resnet50(weights=None)
        dim = model.fc.in_features
        model.fc = nn.Identity()  # avgpool output, 2048-d
    elif arch == "vgg16":
        model = torchvision.models.vgg16(weights=None)
        dim = model.classifier[6].in_features
        model.classifier[6] = nn.Identity()  # fc7 after ReLU (dropout is inactive in eval), 4096-d
    else:
        raise ValueError(f"unknown backbone {arch!r}; available: {list(ARCHITECTURES)}")
    return model, dim


def normalize(rgb_uint8, size: int, normalization: str):
    """[N,H,W,3] uint8 RGB tensor -> [N,3,size,size] float, normalised as the weights expect."""
    import torch
    import torch.nn.functional as F

    x = rgb_uint8.permute(0, 3, 1, 2).float()
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > size)
    if normalization == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        return (x / 255.0 - mean) / std
    if normalization == "vggface2":
        return x.flip(1) - torch.tensor(VGGFACE2_MEAN_BGR, device=x.device).view(1, 3, 1, 1)
    raise ValueError(f"unknown normalization {normalization!r}; use imagenet or vggface2")


@EXTRACTORS.register("torchvision_backbone")
class TorchvisionBackbone(FrameModel):
    """Penultimate-layer features of ResNet-50 (2048-d) or VGG-16 (4096-d, the VGG-Face
    architecture) per sampled frame, from the aligned RGB crop resized to ``input_size``."""

    input = "faces"
    input_keys = ("crop_rgb", "mask", "timestamps")

    @dataclass(frozen=True)
    class Config:
        arch: Architecture = "resnet50"
        # A local .pth (plain state_dict, or under 'state_dict' / 'model'); "" = torchvision's
        # ImageNet file in torch's hub cache ($TORCH_HOME/hub/checkpoints).
        checkpoint: str = ""
        normalization: Literal["imagenet", "vggface2"] = "imagenet"
        input_size: int = 224
        # Faces store key of the [T,H,W,3] uint8 crops (a larger aligned crop, if the store has one).
        crop: str = "crop_rgb"

    @classmethod
    def input_keys_for(cls, options: dict[str, Any]) -> tuple[str, ...]:
        """The datasets to read for these options (asked before the model is built)."""
        return (options.get("crop", cls.Config.crop), "mask", "timestamps")

    @classmethod
    def locate_weights(cls, config: Config) -> LocatedWeights:
        if config.arch not in TORCHVISION:
            raise ValueError(f"unknown backbone {config.arch!r}; available: {list(ARCHITECTURES)}")
        return locate_weights(TORCHVISION[config.arch], config.checkpoint, f"torchvision_backbone {config.arch}")

    @classmethod
    def weights_origin_for(cls, config: Config) -> str:
        return cls.locate_weights(config).origin(f"user checkpoint for torchvision {config.arch}")

    @property
    def checkpoint(self) -> Path:
        return self.located.path

    def crop_key(self) -> str:
        return self.config.crop

    def build_model(self, path: Path) -> tuple[Any, int]:
        from pipeline.extractors.checkpoints import load_backbone_weights

        model, dim = build_backbone(self.config.arch)
        load_backbone_weights(model, path, CLASSIFIER_PREFIXES[self.config.arch])
        return model, dim

    def preprocess(self, crops: np.ndarray) -> Any:
        import torch

        return normalize(torch.from_numpy(crops).to(self.device), self.config.input_size, self.config.normalization)
