"""Cross-modal fusion of clip embeddings, selected by the top-level param ``fusion``.

A fusion module takes one [B, E_i] embedding per modality and returns [B, out_dim]. A
missing modality arrives as a learned "absent" embedding (see
:class:`pipeline.models.MultiBranchClassifier`), so every fusion predicts clips with one
side missing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from pipeline.registry import Registry


class Fusion(nn.Module):
    registry_name: ClassVar[str]
    out_dim: int

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
