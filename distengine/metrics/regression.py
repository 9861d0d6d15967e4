"""Pointwise regression errors: mean squared, mean absolute, root mean squared."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Any

import torch

from distengine.metrics.inputs import pair
from distengine.metrics.metric import Metric
from distengine.metrics.state import NotComputableError


class _ErrorMean(Metric):
    """Mean of ``error(y_pred - y)`` over all elements."""

    name = "error"

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(output_transform, device, skip_unrolling)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64))
        self.add_state("n", torch.tensor(0.0, dtype=torch.float64))  # beside total: one collective

    @abstractmethod
    def error(self, diff: torch.Tensor) -> torch.Tensor:
        """The pointwise error of ``y_pred - y``."""

    def update(self, output: Any) -> None:
        y_pred, y = pair(output, self.name)
        self._follow(y_pred)
        if y_pred.shape != y.shape:
            raise ValueError(
                f"{self.name} expects y_pred and y of the same shape, got "
                f"{tuple(y_pred.shape)} and {tuple(y.shape)}"
            )
        self.total += self.error(y_pred.double() - y.double()).sum()
        self.tally("n", y.numel())

    def _mean(self) -> torch.Tensor:
        if int(self.n) == 0:
            raise NotComputableError(f"{self.name} needs at least one example before compute()")
        return self.total / self.n


class MeanSquaredError(_ErrorMean):
    """Mean of ``(y_pred - y) ** 2``. Example: ``MeanSquaredError().attach(evaluator, "mse")``."""

    name = "MeanSquaredError"

    def error(self, diff: torch.Tensor) -> torch.Tensor:
        return diff.square()

    def compute(self) -> float:
        return self._mean().item()


class MeanAbsoluteError(_ErrorMean):
    """Mean of ``|y_pred - y|``. Example: ``MeanAbsoluteError().attach(evaluator, "mae")``."""

    name = "MeanAbsoluteError"

    def error(self, diff: torch.Tensor) -> torch.Tensor:
        return diff.abs()

    def compute(self) -> float:
        return self._mean().item()


class RootMeanSquaredError(MeanSquaredError):
    """Square root of the mean squared error: ``RootMeanSquaredError().attach(ev, "rmse")``."""

    name = "RootMeanSquaredError"

    def compute(self) -> float:
        return self._mean().sqrt().item()
