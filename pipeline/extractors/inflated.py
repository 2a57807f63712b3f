"""The mini-Xception inflated to 3D (I3D-style), the network of the ``video3d`` extractor's
``inflated_mini_xception`` architecture (:mod:`pipeline.extractors.video3d`)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.extractors.mini_xception import MiniXception, ResidualBlock, SeparableConv2d, _keras_same_padding


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
