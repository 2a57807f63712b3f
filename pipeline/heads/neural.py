"""Neural temporal heads: encode a padded [B, T, D] feature sequence with its [B, T] mask into
one [B, E] clip embedding, and (``encode``) into a per-step representation. Masked frames
(padding, frames without a face) contribute nothing, and a clip whose frames are all masked
encodes to zeros.

Adding one: a subclass of :class:`TemporalHead` with a ``Config`` dataclass, decorated with
``@HEADS.register("name")``; a head without a per-step output sets ``per_step = False``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from pipeline.heads import HEADS
from pipeline.layers import AttentionPool, blstm_over_visible, masked_average_pool, masked_mean_std


class TemporalHead(nn.Module):
    """Base of the neural heads: trained inside the model by the fold loop, so they can sit
    in a cross-modal fusion. ``per_step``: ``encode`` gives a per-step output (sequence
    fusions and the continuous task need it). ``raw_input``: the head reads its features as
    stored, with neither the per-fold nor the per-speaker standardisation."""

    registry_name: ClassVar[str]
    neural: ClassVar[bool] = True
    per_step: ClassVar[bool] = True
    raw_input: ClassVar[bool] = False
    seeded: ClassVar[bool] = True  # initial weights, shuffling, dropout
    embed_dim: int

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        raise NotImplementedError

    def encode(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The per-step representation before pooling: ([B, T', embed_dim], mask [B, T']).
        Sequence fusions (cross-modal attention, leader-follower) and the continuous task read
        it; T' may be shorter than T when the head pools frames."""
        raise NotImplementedError(f"head {self.registry_name!r} has no per-step output")


@HEADS.register("stats")
class StatsHead(TemporalHead):
    """Mean and standard deviation over the visible frames, then an MLP."""

    @dataclass(frozen=True)
    class Config:
        hidden: int = 64
        dropout: float = 0.3

    def __init__(self, input_dim: int, config: Config) -> None:
        super().__init__()
        self.embed_dim = config.hidden
        self.mlp = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(2 * input_dim, config.hidden), nn.ReLU())

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        mean, std = masked_mean_std(x, mask)
        present = mask.any(1, keepdim=True).float()
        return self.mlp(torch.cat([mean, std], dim=1)) * present

    def encode(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        # Each step on its own: the statistics of a single frame (itself, standard deviation 0).
        steps = self.mlp(torch.cat([x, torch.zeros_like(x)], dim=-1))
        return steps * mask.unsqueeze(-1), mask


@HEADS.register("attention")
class AttentionHead(TemporalHead):
    """Per-frame projection and attention pooling (intra-modal attention, EmotiW 2019)."""

    @dataclass(frozen=True)
    class Config:
        hidden: int = 64
        dropout: float = 0.3

    def __init__(self, input_dim: int, config: Config) -> None:
        super().__init__()
        self.embed_dim = config.hidden
        self.project = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(input_dim, config.hidden), nn.ReLU())
        self.pool = AttentionPool(config.hidden)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.pool(*self.encode(x, mask))

    def encode(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return self.project(x), mask


@HEADS.register("blstm")
class BlstmHead(TemporalHead):
    """Bidirectional LSTM over the visible frames, attention-pooled (MSFF)."""

    @dataclass(frozen=True)
    class Config:
        hidden: int = 64
        layers: int = 1
        dropout: float = 0.3

    def __init__(self, input_dim: int, config: Config) -> None:
        super().__init__()
        self.embed_dim = 2 * config.hidden
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(input_dim, config.hidden, config.layers, batch_first=True, bidirectional=True)
        self.pool = AttentionPool(self.embed_dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.pool(*self.encode(x, mask))

    def encode(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return blstm_over_visible(self.lstm, self.dropout(x), mask)


class TemporalBlock(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilation: int, causal: bool, dropout: float) -> None:
        super().__init__()
        total = (kernel_size - 1) * dilation
        self.padding = (total, 0) if causal else (total // 2, total - total // 2)
        self.conv1 = nn.Conv1d(channels, channels, kernel_size, dilation=dilation)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size, dilation=dilation)
        # Whole channels dropped (spatial dropout): the usual TCN regulariser, and far
        # cheaper on the CPU than drawing a mask for every time step.
        self.dropout = nn.Dropout1d(dropout)

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """``keep`` [B, 1, T]: 1 at visible steps. Every convolution then reads zeros at masked
        steps and beyond a clip's end, as at the sequence edges, so a step's output never
        depends on masked steps nor on how far its batch is padded."""
        keep = keep if keep is not None else 1.0
        y = self.dropout(torch.relu(self.conv1(nn.functional.pad(x, self.padding)))) * keep
        y = self.dropout(torch.relu(self.conv2(nn.functional.pad(y, self.padding)))) * keep
        return torch.relu(x + y) * keep


@HEADS.register("tcn")
class TcnHead(TemporalHead):
    """Dilated temporal convolutions (dilation doubling per level), attention-pooled.

    Receptive field = 1 + 2 * (kernel_size - 1) * (2**levels - 1) frames, after ``pool``
    frames are averaged into one (e.g. pool 4 takes 10 ms audio frames to the 25 fps video rate).
    """

    @dataclass(frozen=True)
    class Config:
        channels: int = 64
        levels: int = 4
        kernel_size: int = 3
        causal: bool = False
        dropout: float = 0.2
        pool: int = 1

    def __init__(self, input_dim: int, config: Config) -> None:
        super().__init__()
        self.embed_dim = config.channels
        self.pool_size = config.pool
        self.input = nn.Conv1d(input_dim, config.channels, 1)
        self.blocks = nn.Sequential(
            *(TemporalBlock(config.channels, config.kernel_size, 2**level, config.causal, config.dropout) for level in range(config.levels))
        )
        self.pool = AttentionPool(config.channels)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.pool(*self.encode(x, mask))

    def encode(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        x = x * mask.unsqueeze(-1)
        if self.pool_size > 1:
            x, mask = masked_average_pool(x, mask, self.pool_size)
        keep = mask.unsqueeze(1).to(x.dtype)
        steps = self.input(x.transpose(1, 2)) * keep
        for block in self.blocks:
            steps = block(steps, keep)
        return steps.transpose(1, 2), mask


