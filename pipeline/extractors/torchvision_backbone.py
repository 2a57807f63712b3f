"""Frozen torchvision image backbones (ResNet-50, VGG-16) over the aligned RGB face crops,
with weights the user supplies: ImageNet from torch's cache, or e.g. VGGFace2 checkpoints."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.extractors import EXTRACTORS, Extractor, Features
from pipeline.extractors.checkpoints import load_backbone_weights, locate_checkpoint
from pipeline.extractors.mini_xception import file_sha256
from pipeline.store import Entry

Architecture = Literal["resnet50", "vgg16"]

ARCHITECTURES = ("resnet50", "vgg16")


def standard_weights(arch: str) -> tuple:
    """torchvision's ImageNet weights, newest first: their file names are what
    torchvision.models.*(weights=...) leaves in torch's hub cache. (torchvision is imported
    here, not at module level: every stage that validates params imports this registry.)"""
    import torchvision

    return {
        "resnet50": (torchvision.models.ResNet50_Weights.IMAGENET1K_V2, torchvision.models.ResNet50_Weights.IMAGENET1K_V1),
        "vgg16": (torchvision.models.VGG16_Weights.IMAGENET1K_V1,),
    }[arch]

# The checkpoint's classifier is not loaded (VGGFace2 models have 8631 identities, ImageNet
# 1000 classes); features are the penultimate layer.
CLASSIFIER_PREFIXES = {"resnet50": ("fc.",), "vgg16": ("classifier.6.",)}

# ImageNet statistics on RGB in [0, 1]; VGGFace2 models (Cao et al. 2018, and their PyTorch
# conversions) take BGR in [0, 255] minus the data set's mean, unscaled.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
VGGFACE2_MEAN_BGR = (91.4953, 103.8827, 131.0912)


def build_backbone(arch: str) -> tuple[nn.Module, int]:
    """(torchvision model whose forward returns penultimate-layer features, feature size)."""
    import torchvision

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


def normalize(rgb_uint8: Tensor, size: int, normalization: str) -> Tensor:
    """[N,H,W,3] uint8 RGB -> [N,3,size,size] float, normalised as the weights expect."""
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
class TorchvisionBackbone(Extractor):
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

    def __init__(self, config: Config, device: str = "cpu", batch_size: int = 64) -> None:
        super().__init__(config, device, batch_size)
        self.input_keys = self.input_keys_for({"crop": config.crop})
        self.checkpoint = locate_checkpoint(
            config.checkpoint, (w.url for w in standard_weights(config.arch)), f"torchvision_backbone {config.arch}"
        )
        self.model, self.dim = build_backbone(config.arch)
        load_backbone_weights(self.model, self.checkpoint, CLASSIFIER_PREFIXES[config.arch])
        self.model.eval().to(device)

    @cached_property
    def weights_sha256(self) -> str:
        return file_sha256(self.checkpoint)

    @property
    def weights_origin(self) -> str:
        standard = {Path(w.url).name: w for w in standard_weights(self.config.arch)}
        known = standard.get(self.checkpoint.name)
        source = f"torchvision {self.config.arch} {known.name} ({known.url})" if known else f"user checkpoint for torchvision {self.config.arch}"
        return f"{source}; loaded from {self.checkpoint}"

    @torch.inference_mode()
    def extract(self, entry: Entry) -> Features:
        crops, mask = entry.arrays[self.config.crop], entry.arrays["mask"].astype(bool)
        output = np.zeros((len(crops), self.dim), np.float32)
        visible = np.flatnonzero(mask)
        for start in range(0, len(visible), self.batch_size):
            rows = visible[start : start + self.batch_size]
            batch = normalize(torch.from_numpy(crops[rows]).to(self.device), self.config.input_size, self.config.normalization)
            with torch.autocast("cuda", enabled=self.device.startswith("cuda")):
                features = self.model(batch)
            output[rows] = features.float().cpu().numpy()
        return Features(output, entry.arrays["timestamps"], mask.astype(np.uint8))
