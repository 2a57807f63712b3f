"""What a member is: its branches (a head on one feature store each) and, with several
branches, a cross-modal fusion (:class:`ModelSpec`, JSON-describable), and the torch model
built from it (:class:`MultiBranchModel`).

A single-branch model and a cross-modal fusion model are the same class, so the train and
fusion stages share one training loop. A member with one pooled (classical) head has no
torch model: :mod:`pipeline.training` fits the head itself.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pipeline.fusion.cross_modal import FUSIONS
from pipeline.heads import HEADS, capabilities
from pipeline.layers import Standardize


@dataclass(frozen=True)
class BranchSpec:
    name: str
    input_dim: int
    head: str
    head_config: Any

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "input_dim": self.input_dim, "head": self.head, "head_config": asdict(self.head_config)}

    @classmethod
    def from_description(cls, description: dict[str, Any]) -> "BranchSpec":
        head = description["head"]
        config = HEADS.config(head, description["head_config"], f"checkpoint branch {description['name']!r}")
        return cls(description["name"], int(description["input_dim"]), head, config)


class MultiBranchModel(nn.Module):
    def __init__(self, branches: list[BranchSpec], num_classes: int, fusion: str | None = None, fusion_config: Any = None) -> None:
        super().__init__()
        if len(branches) > 1 and fusion is None:
            raise ValueError("several branches need a fusion")
        not_neural = [f"{b.name} ({b.head})" for b in branches if not capabilities(b.head).neural]
        if not_neural:
            raise ValueError(f"branches {not_neural} have classical heads, which a torch model cannot hold")
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
        x = x if self.heads[name].raw_input else self.standardize[name](x)
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
    """Everything needed to build a fresh model: picklable, so folds can train in workers,
    and JSON-describable, so a checkpoint rebuilds it. ``outputs``: classes or dimensions."""

    branches: list[BranchSpec]
    outputs: int
    fusion: str | None = None
    fusion_config: Any = None

    @property
    def pooled(self) -> bool:
        """One branch with a classical head: fit as an estimator, not as a torch model."""
        return len(self.branches) == 1 and self.fusion is None and not capabilities(self.branches[0].head).neural

    def build(self) -> MultiBranchModel:
        return MultiBranchModel(self.branches, self.outputs, self.fusion, self.fusion_config)

    def describe(self) -> dict[str, Any]:
        return {"branches": [b.describe() for b in self.branches], "outputs": self.outputs, "fusion": self.fusion,
                "fusion_config": asdict(self.fusion_config) if self.fusion is not None else None}

    @classmethod
    def from_description(cls, description: dict[str, Any]) -> "ModelSpec":
        fusion = description.get("fusion")
        config = FUSIONS.config(fusion, description["fusion_config"] or {}, "checkpoint fusion") if fusion else None
        return cls([BranchSpec.from_description(b) for b in description["branches"]], int(description["outputs"]), fusion, config)


def branch_spec(name: str, head_type: str, head_options: dict[str, Any], input_dim: int) -> BranchSpec:
    """The spec of branch ``name`` from its params, options validated against the head's Config."""
    return BranchSpec(name, input_dim, head_type, HEADS.config(head_type, head_options, f"branches.{name}.head.options"))

