"""Small stand-ins for the model names the CIFAR10 example accepts (``--model``)."""

from __future__ import annotations

from torch import nn


def _small_convnet(num_classes: int = 1000) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    )


def resnet18(num_classes: int = 1000) -> nn.Module:
    """Not a ResNet: a two-layer convolutional network with the same call."""
    return _small_convnet(num_classes)


resnet34 = resnet50 = resnet18
