"""Pointwise regression errors: mean squared, mean absolute, root mean squared (per sample)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Any

import torch

from distengine.metrics.inputs import pair
from distengine.metrics.metric import Metric
from distengine.metrics.state import no_examples


class _ErrorMean(Metric):
    """``error(y_pred - y)`` summed over each sample's elements, averaged over the samples.

    As PyTorch-Ignite computes it: the sum over every element divided by the
    number of samples (``y.shape[0]``), so for outputs of shape ``(N, D)`` the
    value is ``D`` times the mean over the elements (``torch``'s
    ``mse_loss``); for ``(N,)`` outputs both are the same. ``y`` may hold the
    same values as ``y_pred`` in a shape that differs only by dimensions of
    size 1 (``(N,)`` against ``(N, 1)``).
    """

    name = "error"

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(output_transform, device, skip_unrolling)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64))
        # the number of samples, beside total: one collective
        self.add_state("n", torch.tensor(0.0, dtype=torch.float64))

    @abstractmethod
    def error(self, diff: torch.Tensor) -> torch.Tensor:
        """The pointwise error of ``y_pred - y``."""

    def update(self, output: Any) -> None:
        y_pred, y = pair(output, self.name)
        self._follow(y_pred)
        if y.dim() == 0:
            raise ValueError(f"{self.name} expects a batch (N, ...) of outputs, got 0-d tensors")
        samples = y.shape[0]  # Ignite's count, before any reshape
        if y_pred.shape != y.shape:
            if _squeezed(y_pred.shape) != _squeezed(y.shape):
                raise ValueError(
                    f"{self.name} expects y_pred and y of the same shape (or shapes that differ "
                    f"by dimensions of size 1), got {tuple(y_pred.shape)} and {tuple(y.shape)}"
                )
            y = y.reshape(y_pred.shape)
        self.total += self.error(y_pred.double() - y.double()).sum()
        self.tally("n", samples)

    def _mean(self) -> torch.Tensor:
        if int(self.n) == 0:
            raise no_examples(self.name)
        return self.total / self.n


def _squeezed(shape: torch.Size) -> tuple[int, ...]:
    return tuple(size for size in shape if size != 1)


class MeanSquaredError(_ErrorMean):
    """``(y_pred - y) ** 2`` summed per sample, averaged over samples (PyTorch-Ignite's value).

    For ``(N, D)`` outputs this is ``D`` times the element-wise mean (see
    ``_ErrorMean``); divide by ``D`` for the mean over elements.

    Example::

        MeanSquaredError().attach(evaluator, "mse")
    """

    name = "MeanSquaredError"

    def error(self, diff: torch.Tensor) -> torch.Tensor:
        return diff.square()

    def compute(self) -> float:
        return self._mean().item()


class MeanAbsoluteError(_ErrorMean):
    """``|y_pred - y|`` summed per sample, averaged over samples (PyTorch-Ignite's value).

    Example::

        MeanAbsoluteError().attach(evaluator, "mae")
    """

    name = "MeanAbsoluteError"

    def error(self, diff: torch.Tensor) -> torch.Tensor:
        return diff.abs()

    def compute(self) -> float:
        return self._mean().item()


class RootMeanSquaredError(MeanSquaredError):
    """Square root of :class:`MeanSquaredError` (so, as in PyTorch-Ignite, per sample).

    Example::

        RootMeanSquaredError().attach(evaluator, "rmse")
    """

    name = "RootMeanSquaredError"

    def compute(self) -> float:
        return self._mean().sqrt().item()
