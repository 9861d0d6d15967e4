"""Small models for the default job (digits: 64 features or 1x8x8 images, 10 classes)."""

from __future__ import annotations

from torch import nn


def mlp(in_features: int = 64, hidden: int = 128, num_classes: int = 10) -> nn.Module:
    """A two-layer perceptron."""
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, num_classes)
    )


def small_cnn(num_classes: int = 10) -> nn.Module:
    """Two convolutions and a classifier, for 1x8x8 images."""
    return nn.Sequential(
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
