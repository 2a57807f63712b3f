"""Temporal heads: encode a padded [B, T, D] feature sequence with its [B, T] mask into one
[B, E] clip embedding. Masked frames (padding, frames without a face) contribute nothing,
and a clip whose frames are all masked encodes to zeros.

Adding one: a ``torch.nn.Module`` subclass of :class:`TemporalHead` with a ``Config``
dataclass, decorated with ``@HEADS.register("name")``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from pipeline.registry import Registry


class TemporalHead(nn.Module):
    registry_name: ClassVar[str]
    embed_dim: int

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        raise NotImplementedError

    def encode(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The per-step representation before pooling: ([B, T', embed_dim], mask [B, T']).
        Sequence fusions (cross-modal attention, leader-follower) and the continuous task read
        it; T' may be shorter than T when the head pools frames."""
        raise NotImplementedError(
            f"head {self.registry_name!r} has no per-step output; sequence fusions and the continuous "
            "task need one of: stats, attention, blstm, tcn, vgg_blstm"
        )


HEADS: Registry[type[TemporalHead]] = Registry("head")


def masked_mean_std(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    weights = mask.unsqueeze(-1).float()
    count = weights.sum(1).clamp(min=1.0)
    mean = (x * weights).sum(1) / count
    var = (((x - mean.unsqueeze(1)) ** 2) * weights).sum(1) / count
    return mean, (var + 1e-6).sqrt() * (weights.sum(1) > 0)


class AttentionPool(nn.Module):
    """Softmax attention over frames; learns which frames carry the emotion."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        scores = self.score(x).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1).nan_to_num(0.0)  # all-masked rows -> zeros
        return (weights.unsqueeze(-1) * x).sum(1)


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


def blstm_over_visible(lstm: nn.LSTM, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Run a batch-first LSTM over each row's visible steps only: masked steps (frames without
    a face) are dropped from the sequence rather than fed as zeros. Outputs are put back at
    their steps' positions (zeros at masked steps), so they stay aligned with time."""
    lengths = mask.sum(1)
    order = torch.argsort(~mask.bool(), dim=1, stable=True)
    compact = torch.gather(x, 1, order.unsqueeze(-1).expand_as(x))
    packed = nn.utils.rnn.pack_padded_sequence(compact, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
    output, _ = lstm(packed)
    output, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=True, total_length=x.shape[1])
    output = output * (torch.arange(x.shape[1], device=x.device).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1)
    placed = torch.zeros_like(output).scatter(1, order.unsqueeze(-1).expand_as(output), output)
    return placed, mask.bool()


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

    def forward(self, x: Tensor) -> Tensor:
        y = self.dropout(torch.relu(self.conv1(nn.functional.pad(x, self.padding))))
        y = self.dropout(torch.relu(self.conv2(nn.functional.pad(y, self.padding))))
        return torch.relu(x + y)


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
        return self.blocks(self.input(x.transpose(1, 2))).transpose(1, 2), mask


def masked_average_pool(x: Tensor, mask: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Average every ``size`` consecutive frames over their visible ones."""
    pad = (-x.shape[1]) % size
    x = nn.functional.pad(x, (0, 0, 0, pad))
    weights = nn.functional.pad(mask.float(), (0, pad))
    batch, length, dim = x.shape
    total = (x * weights.unsqueeze(-1)).view(batch, length // size, size, dim).sum(2)
    count = weights.view(batch, length // size, size).sum(2)
    return total / count.clamp(min=1).unsqueeze(-1), count > 0


def build_head(name: str, input_dim: int, config) -> TemporalHead:
    return HEADS.get(name)(input_dim, config)


# Importing the modules registers their heads.
from pipeline.heads import pooled, spectrogram_cnn  # noqa: E402,F401
from pipeline.heads import finetune  # noqa: E402,F401
