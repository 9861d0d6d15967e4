"""Small models for the default job (digits: 64 features or 1x8x8 images, 10 classes)."""

from __future__ import annotations

import torch
from torch import nn


def mlp(in_features: int = 64, hidden: int = 128, num_classes: int = 10) -> nn.Module:
    """A two-layer perceptron."""
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, num_classes)
    )


class _ImageSequential(nn.Sequential):
    """A Sequential that reads (batch, 64) features as (batch, 1, 8, 8) images."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.view(x.shape[0], 1, 8, 8)
        return super().forward(x)


def small_cnn(num_classes: int = 10) -> nn.Module:
    """Two convolutions and a classifier, for 1x8x8 images (or the 64 features
    of ``data.image=false``, read as such images: ``model=cnn`` alone works)."""
    return _ImageSequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


class _Block(nn.Module):
    """Pre-norm self-attention and MLP, each with a residual connection."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.attn_norm(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.mlp_norm(x))


class DigitsTransformer(nn.Module):
    """A transformer encoder that reads an 8x8 digit as ``tokens`` rows of pixels.

    Input: (batch, 64) features (``data.image=false``); each of the ``tokens``
    tokens is a run of 64 / tokens pixels, embedded to ``width``, with a
    learned position. The blocks (a ModuleList) are what FSDP shards one by one.
    """

    def __init__(
        self,
        width: int = 256,
        depth: int = 4,
        heads: int = 4,
        tokens: int = 8,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        if 64 % tokens:
            raise ValueError(f"model.tokens={tokens!r}: expected a divisor of 64 (8 or 64)")
        self.tokens = tokens
        self.embed = nn.Linear(64 // tokens, width)
        self.position = nn.Parameter(torch.zeros(1, tokens, width))
        self.blocks = nn.ModuleList(_Block(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x.reshape(x.shape[0], self.tokens, -1)) + self.position
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h).mean(dim=1))


def transformer(
    width: int = 256, depth: int = 4, heads: int = 4, tokens: int = 8, num_classes: int = 10
) -> nn.Module:
    """A transformer over rows of pixels: about 3.2M parameters at the defaults, so
    ``dist.strategy=fsdp`` visibly halves each rank's share of model and optimizer on 2 ranks."""
    return DigitsTransformer(width, depth, heads, tokens, num_classes)
