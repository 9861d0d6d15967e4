"""The Hilbert-Schmidt Independence Criterion between ``y_pred`` and ``y``, batch by batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from distengine.metrics.inputs import pair
from distengine.metrics.kernels import gaussian_gram, squared_distances
from distengine.metrics.metric import Metric
from distengine.metrics.state import no_examples

__all__ = ["HSIC"]


class HSIC(Metric):
    """The mean over batches of the unbiased HSIC estimate (Song et al. 2012, eq. 5) of each
    batch's ``(y_pred, y)``: about 0 when they are independent, larger the more they depend.

    Each batch's rows are flattened; Gaussian kernels of bandwidth ``sigma_x`` and
    ``sigma_y``, or, when negative, the median squared distance of the batch. A batch of
    fewer than 4 samples is skipped (``ignore_invalid_batch=True``) or raises ValueError.
    The per-batch sums and the count of batches reduce across ranks with the engine's other
    metrics: on several ranks the value is the mean over every rank's batches.

    Example::

        HSIC().attach(evaluator, "hsic")
        evaluator.run([(x, torch.sin(x))])      # x: (batch, features)
        evaluator.state.metrics["hsic"]         # a float >= 0
    """

    def __init__(
        self,
        sigma_x: float = -1,
        sigma_y: float = -1,
        ignore_invalid_batch: bool = True,
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(output_transform, device, skip_unrolling)
        self.sigma_x = sigma_x
        self.sigma_y = sigma_y
        self.ignore_invalid_batch = ignore_invalid_batch
        self.add_state("_sum_of_hsic", torch.tensor(0.0, dtype=torch.float64))
        self.add_state("_num_batches", torch.tensor(0))

    def update(self, output: Any) -> None:
        x, y = pair(output, "HSIC")
        x, y = x.flatten(start_dim=1), y.flatten(start_dim=1)
        b = x.shape[0]
        if b < 4:
            if self.ignore_invalid_batch:
                return
            raise ValueError(f"HSIC needs batches of at least 4 samples, got only {b} samples.")
        self._follow(x)
        k = self._gram(x, self.sigma_x)
        l = self._gram(y, self.sigma_y)  # noqa: E741 - the paper's name
        kl = k @ l
        estimate = (
            kl.trace() + k.sum() * l.sum() / ((b - 1) * (b - 2)) - 2.0 * kl.sum() / (b - 2)
        ) / (b * (b - 3))
        self._sum_of_hsic += estimate.clamp(min=0.0).to(self._sum_of_hsic)
        self.tally("_num_batches", 1)

    @staticmethod
    def _gram(rows: torch.Tensor, sigma: float) -> torch.Tensor:
        """The kernel matrix of ``rows`` with a zero diagonal."""
        d2 = squared_distances(rows @ rows.T)
        variance = torch.quantile(d2, 0.5) if sigma < 0 else sigma**2
        return gaussian_gram(d2, variance).fill_diagonal_(0.0)

    def compute(self) -> float:
        if int(self._num_batches) == 0:
            raise no_examples("HSIC", "batch")
        return (self._sum_of_hsic / self._num_batches).item()
