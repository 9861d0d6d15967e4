"""The maximum mean discrepancy between the distributions of ``y_pred`` and ``y``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from distengine.metrics.inputs import pair
from distengine.metrics.kernels import gaussian_gram, squared_distances
from distengine.metrics.metric import Metric
from distengine.metrics.state import no_examples

__all__ = ["MaximumMeanDiscrepancy"]


class MaximumMeanDiscrepancy(Metric):
    """The maximum mean discrepancy (Gaussian kernel of variance ``var``) of two samples
    ``x = y_pred`` and ``y``, of the same shape ``(B, ...)``: the square root of the mean over
    batches of the unbiased per-batch estimates of ``E k(x, x') + E k(y, y') - 2 E k(x, y)``
    (clamped at 0).

    The per-batch sums and the count of batches reduce across ranks with the engine's other
    metrics: on several ranks the value is the one over every rank's batches.

    Example::

        MaximumMeanDiscrepancy(var=1.0).attach(evaluator, "mmd")
        evaluator.run([(generated, real)])      # (batch, features) each
        evaluator.state.metrics["mmd"]          # a float >= 0
    """

    def __init__(
        self,
        var: float = 1.0,
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(output_transform, device, skip_unrolling)
        self.var = var
        for name in ("_xx_sum", "_yy_sum", "_xy_sum"):
            self.add_state(name, torch.tensor(0.0, dtype=torch.float64))
        self.add_state("_num_batches", torch.tensor(0))

    def update(self, output: Any) -> None:
        x, y = pair(output, "MaximumMeanDiscrepancy")
        if x.shape != y.shape:
            raise ValueError(f"x and y must be in the same shape, got {x.shape} != {y.shape}.")
        if x.ndim == 1:
            raise ValueError(f"x must be in the shape of (B, ...), got {x.shape}.")
        x, y = x.flatten(start_dim=1), y.flatten(start_dim=1)
        self._follow(x)
        n = x.shape[0]
        gram_x, gram_y = x @ x.T, y @ y.T
        dxy = squared_distances(x @ y.T, gram_x.diag(), gram_y.diag())
        dxx, dyy = squared_distances(gram_x), squared_distances(gram_y)
        xx, yy, xy = (gaussian_gram(d2, self.var) for d2 in (dxx, dyy, dxy))
        pairs = n * (n - 1)  # a batch of one sample adds nan, as in PyTorch-Ignite
        self._xx_sum += ((xx.sum() - n) / pairs).to(self._xx_sum)
        self._yy_sum += ((yy.sum() - n) / pairs).to(self._yy_sum)
        self._xy_sum += (xy.sum() / (n * n)).to(self._xy_sum)
        self.tally("_num_batches", 1)

    def compute(self) -> float:
        if int(self._num_batches) == 0:
            raise no_examples("MaximumMeanDiscrepacy", "batch")  # Ignite's spelling
        mmd2 = (self._xx_sum + self._yy_sum - 2.0 * self._xy_sum).clamp(min=0.0)
        return (mmd2 / self._num_batches).sqrt().item()
