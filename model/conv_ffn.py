"""Feed-forward parts of the encoder block.

`ConvFeedForward` is the patent's: the class and distillation tokens are split
off, the patch tokens are lifted to d_ff, laid out on their 2-D grid, passed
through a stack of depthwise convolutions (local mixing a plain MLP lacks),
flattened back and projected to d_model; the special tokens are put back in
place unchanged. `MlpFeedForward` is the plain ViT MLP used by the ablation.
"""

from __future__ import annotations

import torch
from torch import nn


class DepthwiseStack(nn.Module):
    """`depth` residual depthwise conv + GELU layers on a (B, C, H, W) map."""

    def __init__(self, channels: int, depth: int, kernel: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels) for _ in range(depth)
        )
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.layers:
            x = x + self.act(conv(x))
        return x


class ConvFeedForward(nn.Module):
    def __init__(
        self, d_model: int, d_ff: int, grid: tuple[int, int], depth: int, kernel: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.grid = grid
        self.up = nn.Linear(d_model, d_ff)
        self.act = nn.GELU()
        self.convs = DepthwiseStack(d_ff, depth, kernel)
        self.down = nn.Linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls_tok, patches, dist_tok = x[:, :1], x[:, 1:-1], x[:, -1:]
        b, n, _ = patches.shape
        rows, cols = self.grid
        h = self.act(self.up(patches))  # (B, N, d_ff)
        # (B, d_ff, rows, cols) as a channels-last view: no copy, and the depthwise
        # convolutions run in that layout, so the way back is a view too
        h = h.reshape(b, rows, cols, -1).permute(0, 3, 1, 2)
        h = self.convs(h)
        h = h.permute(0, 2, 3, 1).reshape(b, n, -1)  # (B, N, d_ff)
        h = self.drop(self.down(h))
        return torch.cat([cls_tok, h, dist_tok], dim=1)


class MlpFeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
