"""The trainable model: one temporal head per branch and, with several branches, a fusion.

A single-branch classifier and a cross-modal fusion model are the same class, so the train
and fusion stages share one training loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pipeline.fusion.cross_modal import FUSIONS
from pipeline.heads import HEADS


@dataclass(frozen=True)
class BranchSpec:
    name: str
    input_dim: int
    head: str
    head_config: Any


class Standardize(nn.Module):
    """Per-dimension standardisation with statistics of the training part of a fold."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, frames: Tensor) -> None:
        self.mean.copy_(frames.mean(0))
        self.std.copy_(frames.std(0).clamp(min=1e-4))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class MultiBranchClassifier(nn.Module):
    def __init__(self, branches: list[BranchSpec], num_classes: int, fusion: str | None = None, fusion_config: Any = None) -> None:
        super().__init__()
        if len(branches) > 1 and fusion is None:
            raise ValueError("several branches need a fusion")
        self.names = [b.name for b in branches]
        self.standardize = nn.ModuleDict({b.name: Standardize(b.input_dim) for b in branches})
        self.heads = nn.ModuleDict({b.name: HEADS.get(b.head)(b.input_dim, b.head_config) for b in branches})
        dims = [self.heads[b.name].embed_dim for b in branches]
        # Stands in for a modality the clip does not have, so fusion sees a learned "absent" signal.
        self.absent = nn.ParameterDict({b.name: nn.Parameter(torch.zeros(d)) for b, d in zip(branches, dims)})
        self.fusion = FUSIONS.get(fusion)(dims, fusion_config) if fusion is not None else None
        out_dim = self.fusion.out_dim if self.fusion is not None else dims[0]
        self.classifier = nn.Linear(out_dim, num_classes)

    def head_input(self, name: str, x: Tensor, mask: Tensor) -> Tensor:
        # A head with raw_input (a fine-tuned CNN on pixels) gets its inputs unstandardised.
        x = x if getattr(self.heads[name], "raw_input", False) else self.standardize[name](x)
        return x * mask.unsqueeze(-1)

    def encode(self, name: str, inputs: dict[str, tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        x, mask = inputs[name]
        return self.heads[name].encode(self.head_input(name, x, mask), mask)

    def sequences(self, inputs: dict[str, tuple[Tensor, Tensor]]) -> list[tuple[Tensor, Tensor]]:
        """Every branch's per-step encoding; a clip without the modality becomes one step
        holding the branch's absent embedding."""
        result = []
        for name in self.names:
            steps, step_mask = self.encode(name, inputs)
            absent_row = ~step_mask.any(1)
            if absent_row.any():
                first_step = torch.zeros_like(step_mask)
                first_step[:, 0] = True
                steps = torch.where((absent_row[:, None] & first_step).unsqueeze(-1), self.absent[name], steps)
                step_mask = torch.where(absent_row[:, None], first_step, step_mask)
            result.append((steps, step_mask))
        return result

    def embed(self, inputs: dict[str, tuple[Tensor, Tensor]]) -> Tensor:
        if self.fusion is not None and self.fusion.sequential:
            return self.fusion(self.sequences(inputs))
        embeddings = []
        for name in self.names:
            x, mask = inputs[name]
            embedding = self.heads[name](self.head_input(name, x, mask), mask)
            present = mask.any(1, keepdim=True)
            embeddings.append(torch.where(present, embedding, self.absent[name].expand_as(embedding)))
        return self.fusion(embeddings) if self.fusion is not None else embeddings[0]

    def forward(self, inputs: dict[str, tuple[Tensor, Tensor]]) -> Tensor:
        return self.classifier(self.embed(inputs))

    def predict_steps(self, inputs: dict[str, tuple[Tensor, Tensor]]) -> Tensor:
        """Per-step outputs [B, T, outputs] for the continuous task, every branch on the same
        T-step grid. A head that pools frames is brought back to the grid (nearest step); a step
        without the modality reads the branch's absent embedding. Clip-level fusions (concat,
        fbp) fuse step by step; sequence fusions fuse over time."""
        length = next(iter(inputs.values()))[0].shape[1]
        steps = []
        for name in self.names:
            encoded, step_mask = self.encode(name, inputs)
            if encoded.shape[1] != length:
                nearest = torch.arange(length, device=encoded.device) * encoded.shape[1] // length
                encoded, step_mask = encoded[:, nearest], step_mask[:, nearest]
            steps.append((torch.where(step_mask.unsqueeze(-1), encoded, self.absent[name]), step_mask))
        if self.fusion is None:
            fused = steps[0][0]
        elif self.fusion.sequential:
            fused, _ = self.fusion.fuse_steps(steps)
        else:
            batch = steps[0][0].shape[0]
            fused = self.fusion([x.reshape(batch * length, -1) for x, _ in steps]).reshape(batch, length, -1)
        return self.classifier(fused)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build a fresh model: picklable, so folds can train in workers."""

    branches: list[BranchSpec]
    num_classes: int
    fusion: str | None = None
    fusion_config: Any = None

    def build(self) -> MultiBranchClassifier:
        return MultiBranchClassifier(self.branches, self.num_classes, self.fusion, self.fusion_config)


def branch_spec(name: str, head_type: str, head_options: dict[str, Any], input_dim: int) -> BranchSpec:
    """The spec of branch ``name`` from its params, options validated against the head's Config."""
    return BranchSpec(name, input_dim, head_type, HEADS.config(head_type, head_options, f"branches.{name}.head.options"))

