"""Small models for the default job (digits: 64 features or 1x8x8 images, 10 classes)."""

from __future__ import annotations

import torch
from torch import nn

from launch.recipe.data import DIGITS_FEATURES

#: The digits have 10 classes: a classifier with fewer outputs fails on its first batch.
DIGITS_CLASSES = 10


def _refuse_below(least: int, what: str, **values: int) -> None:
    for name, value in values.items():
        if value < least:
            raise ValueError(f"model.{name}={value!r}: expected {what}")


def check_mlp(in_features: int = 64, hidden: int = 128, num_classes: int = 10) -> None:
    """Refuse :func:`mlp` arguments that cannot build or train it (a ValueError naming the key).

    The launcher calls it before any rank starts (see ``launch.config.targets``).
    """
    _refuse_below(1, "a positive int", in_features=in_features, hidden=hidden)
    if in_features != DIGITS_FEATURES:  # a Linear of another width fails on the first batch
        raise ValueError(
            f"model.in_features={in_features!r}: expected {DIGITS_FEATURES} (the digits have "
            f"{DIGITS_FEATURES} features)"
        )
    _refuse_below(DIGITS_CLASSES, "10 or more (the digits have 10)", num_classes=num_classes)


def check_small_cnn(num_classes: int = 10) -> None:
    """Refuse :func:`small_cnn` arguments that cannot train it (a ValueError naming the key)."""
    _refuse_below(DIGITS_CLASSES, "10 or more (the digits have 10)", num_classes=num_classes)


def check_transformer(
    width: int = 256, depth: int = 4, heads: int = 4, tokens: int = 8, num_classes: int = 10
) -> None:
    """Refuse :func:`transformer` arguments that cannot build or train it (a ValueError naming
    the key): sizes below 1, ``heads`` not dividing ``width``, ``tokens`` not dividing 64."""
    _refuse_below(1, "a positive int", width=width, depth=depth, heads=heads)
    _refuse_below(DIGITS_CLASSES, "10 or more (the digits have 10)", num_classes=num_classes)
    if tokens < 1 or 64 % tokens:
        raise ValueError(f"model.tokens={tokens!r}: expected a divisor of 64 (8 or 64)")
    if width % heads:
        raise ValueError(
            f"model.heads={heads!r}: expected a divisor of model.width={width!r} "
            "(each head attends over width / heads features)"
        )


def mlp(in_features: int = 64, hidden: int = 128, num_classes: int = 10) -> nn.Module:
    """A two-layer perceptron."""
    check_mlp(in_features, hidden, num_classes)
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
    check_small_cnn(num_classes)
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
        check_transformer(width, depth, heads, tokens, num_classes)
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


# What the launcher checks before any rank starts (``launch.config.targets.check_target``).
mlp.check_arguments = check_mlp
small_cnn.check_arguments = check_small_cnn
transformer.check_arguments = check_transformer
