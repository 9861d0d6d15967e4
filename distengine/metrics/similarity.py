"""Mean cosine similarity and mean pairwise distance between ``y_pred`` and ``y``, as Ignite's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from distengine.metrics.inputs import pair
from distengine.metrics.metric import Metric
from distengine.metrics.state import no_examples


class _MeanOverRows(Metric):
    name = "metric"

    def __init__(self, output_transform: Callable[[Any], Any], device: Any, unroll: bool) -> None:
        super().__init__(output_transform, device, unroll)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64))
        self.add_state("n", torch.tensor(0.0, dtype=torch.float64))

    def values(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def update(self, output: Any) -> None:
        y_pred, y = pair(output, self.name)
        self._follow(y_pred)
        self.total.add_(self.values(y_pred, y).sum().to(torch.float64))
        self.tally("n", y.shape[0])

    def compute(self) -> float:
        if float(self.n) == 0:
            raise no_examples(self.name)
        return (self.total / self.n).item()


class CosineSimilarity(_MeanOverRows):
    """Mean cosine similarity of each example's ``y_pred`` and ``y`` (flattened), as Ignite's.

    Example::

        CosineSimilarity().attach(evaluator, "cosine")
    """

    name = "CosineSimilarity"

    def __init__(
        self,
        eps: float = 1e-8,
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(output_transform, device, skip_unrolling)
        self.eps = eps

    def values(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        a, b = y_pred.flatten(start_dim=1), y.flatten(start_dim=1)
        return F.cosine_similarity(a, b, dim=1, eps=self.eps)


class MeanPairwiseDistance(_MeanOverRows):
    """Mean p-norm distance between each example's ``y_pred`` and ``y``, as Ignite's.

    Example::

        MeanPairwiseDistance(p=2).attach(evaluator, "distance")
    """

    name = "MeanPairwiseDistance"

    def __init__(
        self,
        p: int = 2,
        eps: float = 1e-6,
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(output_transform, device, False)  # Ignite ignores skip_unrolling here
        self._p, self._eps = p, eps

    def values(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.pairwise_distance(y_pred, y, p=self._p, eps=self._eps)
