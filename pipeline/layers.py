"""Torch layers shared by heads, fusions and the model: masked pooling, masked statistics,
the per-fold input standardisation. Nothing here imports a head, a fusion or an extractor,
so any of them can use these without importing the others."""
from __future__ import annotations

import torch
from torch import Tensor, nn


def masked_mean_std(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    weights = mask.unsqueeze(-1).float()
    count = weights.sum(1).clamp(min=1.0)
    mean = (x * weights).sum(1) / count
    var = (((x - mean.unsqueeze(1)) ** 2) * weights).sum(1) / count
    return mean, (var + 1e-6).sqrt() * (weights.sum(1) > 0)


def masked_average_pool(x: Tensor, mask: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Average every ``size`` consecutive frames over their visible ones."""
    pad = (-x.shape[1]) % size
    x = nn.functional.pad(x, (0, 0, 0, pad))
    weights = nn.functional.pad(mask.float(), (0, pad))
    batch, length, dim = x.shape
    total = (x * weights.unsqueeze(-1)).view(batch, length // size, size, dim).sum(2)
    count = weights.view(batch, length // size, size).sum(2)
    return total / count.clamp(min=1).unsqueeze(-1), count > 0


class AttentionPool(nn.Module):
    """Softmax attention over frames; learns which frames carry the emotion."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        scores = self.score(x).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1).nan_to_num(0.0)  # all-masked rows -> zeros
        return (weights.unsqueeze(-1) * x).sum(1)


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


class Standardize(nn.Module):
    """Per-dimension standardisation with statistics of the training part of a fold (kept
    as buffers, so a fold's checkpoint carries them)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, frames: Tensor) -> None:
        self.mean.copy_(frames.mean(0))
        self.std.copy_(frames.std(0).clamp(min=1e-4))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std
