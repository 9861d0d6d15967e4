"""MNIST- and CIFAR10-shaped data made on the fly: the label shows in the pixels."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np


def _size(train: bool) -> int:
    name, default = ("OFFLINE_TRAIN_SIZE", 128) if train else ("OFFLINE_TEST_SIZE", 64)
    return int(os.environ.get(name, default))


class _Synthetic:
    """``size`` samples of ``shape`` uint8 images; sample i is the same in every process."""

    shape: tuple[int, ...] = ()
    seed = 0

    def __init__(
        self,
        root: Any = ".",
        train: bool = True,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        download: bool = False,
    ) -> None:
        self.root, self.train = root, train
        self.transform, self.target_transform = transform, target_transform
        self.targets = [self._label(i) for i in range(_size(train))]
        self.classes = [str(c) for c in range(10)]

    def _label(self, index: int) -> int:
        return (index * 7 + (0 if self.train else 3)) % 10

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        rng = np.random.default_rng((self.seed, int(self.train), index))
        label = self.targets[index]
        image = rng.integers(0, 96, self.shape, dtype=np.uint8)
        rows = self.shape[0] // 10
        image[label * rows : (label + 1) * rows] += 150  # a bright band where the label says
        target = self.target_transform(label) if self.target_transform else label
        return (self.transform(image) if self.transform else image), target


class MNIST(_Synthetic):
    """28x28 grey images of 10 classes."""

    shape = (28, 28)
    seed = 1


class CIFAR10(_Synthetic):
    """32x32 colour images (height, width, channels) of 10 classes."""

    shape = (32, 32, 3)
    seed = 2
