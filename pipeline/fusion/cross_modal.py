"""Cross-modal fusion, selected by the top-level param ``fusion``.

A clip-level fusion (concat, fbp) takes one [B, E_i] embedding per modality and returns
[B, out_dim]; a sequence fusion (cross_attention, leader_follower) takes each modality's
per-step sequence and mask. A missing modality arrives as a learned "absent" embedding (or
a one-step sequence of it; see :class:`pipeline.models.MultiBranchModel`), so every
fusion predicts clips with one side missing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from pipeline.layers import AttentionPool
from pipeline.registry import Registry


class Fusion(nn.Module):
    registry_name: ClassVar[str]
    out_dim: int
    sequential: ClassVar[bool] = False  # True: reads per-step sequences, see SequenceFusion

    def forward(self, embeddings: list[Tensor]) -> Tensor:
        raise NotImplementedError


FUSIONS: Registry[type[Fusion]] = Registry("fusion")


@FUSIONS.register("concat")
class ConcatFusion(Fusion):
    """Concatenation followed by a shared hidden layer."""

    @dataclass(frozen=True)
    class Config:
        hidden: int = 64
        dropout: float = 0.3

    def __init__(self, input_dims: list[int], config: Config) -> None:
        super().__init__()
        self.out_dim = config.hidden
        self.mlp = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(sum(input_dims), config.hidden), nn.ReLU())

    def forward(self, embeddings: list[Tensor]) -> Tensor:
        return self.mlp(torch.cat(embeddings, dim=1))


@FUSIONS.register("fbp")
class FactorizedBilinearPooling(Fusion):
    """Factorized bilinear pooling of two modalities (EmotiW 2019 audio-video).

    z = sum over k factors of (U x) * (V y), reshaped [out_dim, factors]; then signed square
    root (power normalisation) and L2 normalisation, which keep the product's heavy-tailed
    values from dominating the classifier.
    """

    @dataclass(frozen=True)
    class Config:
        factors: int = 4
        out_dim: int = 64
        dropout: float = 0.3

    def __init__(self, input_dims: list[int], config: Config) -> None:
        super().__init__()
        if len(input_dims) != 2:
            raise ValueError(f"fbp fuses exactly two modalities, got {len(input_dims)}; use concat for more")
        self.factors = config.factors
        self.out_dim = config.out_dim
        self.project_x = nn.Linear(input_dims[0], config.factors * config.out_dim)
        self.project_y = nn.Linear(input_dims[1], config.factors * config.out_dim)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, embeddings: list[Tensor]) -> Tensor:
        x, y = embeddings
        joint = self.dropout(self.project_x(x) * self.project_y(y))
        pooled = joint.view(-1, self.out_dim, self.factors).sum(-1)
        pooled = torch.sign(pooled) * torch.sqrt(pooled.abs() + 1e-8)
        return nn.functional.normalize(pooled, dim=1)


@dataclass(frozen=True)
class AttentionFusionConfig:
    dim: int = 64      # every modality is projected to this size before attention
    heads: int = 4
    dropout: float = 0.3


class SequenceFusion(Fusion):
    """A fusion over time: reads every modality's per-step sequence (the heads' ``encode``)
    with its mask, instead of one pooled embedding per modality."""

    sequential: ClassVar[bool] = True

    def fuse_steps(self, sequences: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        """Fused per-step representation [B, T, out_dim] and its mask (the continuous task
        predicts from it)."""
        raise NotImplementedError

    def forward(self, sequences: list[tuple[Tensor, Tensor]]) -> Tensor:
        steps, mask = self.fuse_steps(sequences)
        return self.pool(steps, mask)


def _attend(attention: nn.MultiheadAttention, query: Tensor, key: Tensor, key_mask: Tensor) -> Tensor:
    # A row whose keys are all masked would give NaN; such rows are replaced by the absent
    # token upstream, so every row has at least one key, but guard against it anyway.
    blocked = ~key_mask.bool()
    blocked = blocked & key_mask.any(1, keepdim=True)
    attended, _ = attention(query, key, key, key_padding_mask=blocked, need_weights=False)
    return attended


@FUSIONS.register("cross_attention")
class CrossModalAttention(SequenceFusion):
    """Each modality attends to the other over time (group emotion, audio-visual VGAF work):
    the audio steps query the visual steps and the visual steps query the audio steps, with
    residual connections and layer norm; each side is attention-pooled and the two are
    concatenated."""

    Config = AttentionFusionConfig

    def __init__(self, input_dims: list[int], config: Config) -> None:
        super().__init__()
        if len(input_dims) != 2:
            raise ValueError(f"cross_attention fuses exactly two modalities, got {len(input_dims)}")
        self.project = nn.ModuleList(nn.Linear(d, config.dim) for d in input_dims)
        self.attend = nn.ModuleList(nn.MultiheadAttention(config.dim, config.heads, dropout=config.dropout, batch_first=True) for _ in input_dims)
        self.norm = nn.ModuleList(nn.LayerNorm(config.dim) for _ in input_dims)
        self.pools = nn.ModuleList(AttentionPool(config.dim) for _ in input_dims)
        self.dropout = nn.Dropout(config.dropout)
        self.out_dim = 2 * config.dim

    def attended(self, sequences: list[tuple[Tensor, Tensor]]) -> list[tuple[Tensor, Tensor]]:
        projected = [(project(x), mask) for project, (x, mask) in zip(self.project, sequences)]
        result = []
        for side in range(2):
            (query, query_mask), (other, other_mask) = projected[side], projected[1 - side]
            attended = _attend(self.attend[side], query, other, other_mask)
            result.append((self.norm[side](query + self.dropout(attended)), query_mask))
        return result

    def fuse_steps(self, sequences: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        # Per step of the first modality: itself attended by the second, and the second's
        # pooled summary (the two sides have different time axes).
        (first, first_mask), (second, second_mask) = self.attended(sequences)
        summary = self.pools[1](second, second_mask).unsqueeze(1).expand_as(first)
        return torch.cat([first, summary], dim=-1), first_mask

    def forward(self, sequences: list[tuple[Tensor, Tensor]]) -> Tensor:
        sides = self.attended(sequences)
        return torch.cat([pool(x, mask) for pool, (x, mask) in zip(self.pools, sides)], dim=1)


@FUSIONS.register("leader_follower")
class LeaderFollowerAttention(SequenceFusion):
    """Leader-follower attentive fusion (continuous emotion, Aff-Wild2): the first branch in
    ``cross_modal.branches`` (visual) leads; each follower (audio) is read through attention
    with the leader's steps as queries, and the attended followers are concatenated with the
    leader at every leader step."""

    Config = AttentionFusionConfig

    def __init__(self, input_dims: list[int], config: Config) -> None:
        super().__init__()
        if len(input_dims) < 2:
            raise ValueError("leader_follower needs a leader and at least one follower")
        self.project = nn.ModuleList(nn.Linear(d, config.dim) for d in input_dims)
        self.attend = nn.ModuleList(
            nn.MultiheadAttention(config.dim, config.heads, dropout=config.dropout, batch_first=True) for _ in input_dims[1:]
        )
        self.dropout = nn.Dropout(config.dropout)
        self.out_dim = config.dim * len(input_dims)
        self.pooling = AttentionPool(self.out_dim)

    def fuse_steps(self, sequences: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        (leader, leader_mask), followers = sequences[0], sequences[1:]
        leader = self.project[0](leader)
        parts = [leader]
        for project, attention, (follower, follower_mask) in zip(self.project[1:], self.attend, followers):
            parts.append(self.dropout(_attend(attention, leader, project(follower), follower_mask)))
        return torch.cat(parts, dim=-1), leader_mask

    def pool(self, steps: Tensor, mask: Tensor) -> Tensor:
        return self.pooling(steps, mask)
