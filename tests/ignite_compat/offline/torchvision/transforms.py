"""The transforms Ignite's examples compose, on uint8 arrays (height, width[, channels])."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch


class Compose:
    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: Any) -> Any:
        for t in self.transforms:
            x = t(x)
        return x


class ToTensor:
    """uint8 (H, W[, C]) -> float (C, H, W) in [0, 1], as torchvision's."""

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        array = image[:, :, None] if image.ndim == 2 else image
        return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float() / 255.0


class Normalize:
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        return (tensor - self.mean) / self.std


class Pad:
    def __init__(self, padding: int, fill: int = 0) -> None:
        self.padding, self.fill = padding, fill

    def __call__(self, image: np.ndarray) -> np.ndarray:
        p = self.padding
        widths = [(p, p), (p, p)] + [(0, 0)] * (image.ndim - 2)
        return np.pad(image, widths, constant_values=self.fill)


class RandomCrop:
    def __init__(self, size: int, fill: int = 0) -> None:
        self.size, self.fill = size, fill

    def __call__(self, image: np.ndarray) -> np.ndarray:
        top = int(torch.randint(0, image.shape[0] - self.size + 1, ()).item())
        left = int(torch.randint(0, image.shape[1] - self.size + 1, ()).item())
        return image[top : top + self.size, left : left + self.size]


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return image[:, ::-1] if torch.rand(()).item() < self.p else image
