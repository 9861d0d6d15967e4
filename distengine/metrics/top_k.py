"""Top-k categorical accuracy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from distengine.metrics.inputs import pair
from distengine.metrics.metric import Metric
from distengine.metrics.state import no_examples


class TopKCategoricalAccuracy(Metric):
    """Fraction of examples whose label is among the ``k`` highest scores.

    Example::

        TopKCategoricalAccuracy(k=5).attach(evaluator, "top5")
    """

    def __init__(
        self,
        k: int = 5,
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(output_transform, device, skip_unrolling)
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        self.k = k
        self.add_state("correct", torch.tensor(0))
        self.add_state("total", torch.tensor(0))

    def update(self, output: Any) -> None:
        y_pred, y = pair(output, "TopKCategoricalAccuracy")
        self._follow(y_pred)
        if y_pred.dim() != 2 or y.shape != y_pred.shape[:1] or y_pred.shape[1] < self.k:
            raise ValueError(
                f"TopKCategoricalAccuracy(k={self.k}) expects y_pred (N, C >= {self.k}) and "
                f"y (N,), got {tuple(y_pred.shape)} and {tuple(y.shape)}"
            )
        top = y_pred.topk(self.k, dim=1).indices
        self.correct += (top == y.unsqueeze(1)).sum()  # top-k indices are distinct
        self.tally("total", y.shape[0])

    def compute(self) -> float:
        if int(self.total) == 0:
            raise no_examples("TopKCategoricalAccuracy")
        return (self.correct.double() / self.total).item()
