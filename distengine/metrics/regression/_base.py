"""PyTorch-Ignite's private base of regression metrics (``ignite.metrics.regression._base``),
for users' metrics written on it: ``update`` checks ``(y_pred, y)`` and calls ``_update``.

Example::

    from distengine.metrics.regression._base import _BaseRegression

    class SumOfErrors(_BaseRegression):
        def reset(self):
            self._sum = 0.0

        def _update(self, output):          # (N,) tensors, checked
            y_pred, y = output
            self._sum += (y - y_pred).abs().sum().item()

        def compute(self):
            return self._sum
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch

from distengine.metrics.metric import Metric
from distengine.metrics.regression.base import regression_pair
from distengine.metrics.regression.gathered import _median as _torch_median

__all__ = ["_BaseRegression", "_torch_median"]


class _BaseRegression(Metric):  # noqa: N801 - PyTorch-Ignite's name
    """A regression metric whose ``_update`` gets ``(y_pred, y)`` as (N,) tensors, checked as
    Ignite checks them ((N,) or (N, 1), one shape, floating)."""

    def update(self, output: Any) -> None:
        self._update(regression_pair(output, type(self).__name__))

    @abstractmethod
    def _update(self, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Accumulate one checked batch."""
