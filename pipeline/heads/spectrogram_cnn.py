"""VGG-style 2D CNN over spectrogram segments, then a BLSTM over the segments (the MSFF
audio branch). The spectrogram store's frames are cut into overlapping segments of
``segment`` frames; each segment is an image (time x frequency) for the CNN, and the
sequence of segment embeddings goes through a bidirectional LSTM and attention pooling.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from pipeline.heads import HEADS
from pipeline.heads.neural import TemporalHead
from pipeline.layers import AttentionPool, blstm_over_visible


def vgg_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),  # ceil: narrow inputs (few features) still pool to >= 1
    )


def segment_frames(x: Tensor, mask: Tensor, length: int, hop: int) -> tuple[Tensor, Tensor]:
    """[B, T, F] -> [B, S, length, F] overlapping segments; a segment is visible when at
    least half its frames are (a clip shorter than one segment is zero-padded to one)."""
    missing = max(0, length - x.shape[1])
    remainder = (max(x.shape[1], length) - length) % hop
    pad = missing + ((hop - remainder) % hop if remainder else 0)
    x = nn.functional.pad(x, (0, 0, 0, pad))
    frames_visible = nn.functional.pad(mask.float(), (0, pad))
    segments = x.unfold(1, length, hop).transpose(2, 3)  # [B, S, length, F]
    visible = frames_visible.unfold(1, length, hop).mean(-1)
    # A short clip's only segment counts when it has any visible frame.
    return segments, visible > 0 if visible.shape[1] == 1 else visible >= 0.5


@HEADS.register("vgg_blstm")
class VggBlstmHead(TemporalHead):
    @dataclass(frozen=True)
    class Config:
        segment: int = 64        # frames per segment (64 x 10 ms = 0.64 s)
        hop: int = 32
        channels: list[int] = field(default_factory=lambda: [16, 32, 64])
        hidden: int = 64         # LSTM units per direction
        dropout: float = 0.3

    def __init__(self, input_dim: int, config: Config) -> None:
        super().__init__()
        self.config = config
        widths = [1, *config.channels]
        self.cnn = nn.Sequential(*(vgg_block(a, b) for a, b in zip(widths, widths[1:])), nn.AdaptiveAvgPool2d((1, 4)))
        # Channels-last convolutions run 2.3x faster forward and backward on CPU (oneDNN's
        # layout) for these narrow layers; load_state_dict keeps the layout.
        self.cnn.to(memory_format=torch.channels_last)
        self.segment_dim = config.channels[-1] * 4
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(self.segment_dim, config.hidden, batch_first=True, bidirectional=True)
        self.embed_dim = 2 * config.hidden
        self.pool = AttentionPool(self.embed_dim)

    def encode(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        segments, visible = segment_frames(x * mask.unsqueeze(-1), mask, self.config.segment, self.config.hop)
        batch, count = visible.shape
        embedded = segments.new_zeros(batch, count, self.segment_dim)
        if visible.any():
            # Only visible segments go through the CNN: padding is most of a batch of short clips.
            images = segments[visible].unsqueeze(1).contiguous(memory_format=torch.channels_last)  # [N, 1, length, F]
            embedded[visible] = self.cnn(images).flatten(1)
        return blstm_over_visible(self.lstm, self.dropout(embedded), visible)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.pool(*self.encode(x, mask))
