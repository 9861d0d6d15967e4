"""Regression metrics that are sums over the examples (or their mean over the samples).

Each keeps float64 sums on the data's device and a host count of samples:
no sync per batch, one collective with the engine's other metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from distengine.metrics.metric import Metric
from distengine.metrics.regression.base import regression_pair
from distengine.metrics.state import NotComputableError, no_examples

Tensor = torch.Tensor


class _Sums(Metric):
    """Sums of ``terms(y_pred, y)`` over the examples; ``finish`` makes the value of them."""

    name = "metric"
    sums: tuple[str, ...] = ("total",)
    #: ``y == 0`` makes the value undefined (a relative error): compute raises, as Ignite does.
    refuses_zero_y = False
    #: Without examples: ``compute`` raises (else a plain sum is 0.0, as in Ignite).
    needs_examples = True
    #: What the error says there are none of (Ignite's words).
    counted = "example"

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(output_transform, device, skip_unrolling)
        for name in self.sums:
            self.add_state(name, torch.tensor(0.0, dtype=torch.float64))
        self.add_state("n", torch.tensor(0.0, dtype=torch.float64))
        if self.refuses_zero_y:
            self.add_state("zeros", torch.tensor(0))

    def terms(self, y_pred: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        """Each sum's per-example terms (float64)."""
        raise NotImplementedError

    def finish(self, n: float, *sums: Tensor) -> float:
        """The value from the number of samples and the sums."""
        return (sums[0] / n).item()

    def update(self, output: Any) -> None:
        y_pred, y = regression_pair(output, self.name)
        self._follow(y_pred)
        # terms in the inputs' dtype, as Ignite computes them; sums in float64
        for name, term in zip(self.sums, self.terms(y_pred, y)):
            getattr(self, name).add_(term.sum(dtype=torch.float64))
        if self.refuses_zero_y:
            self.zeros += (y == 0).sum()  # checked at compute: no sync per batch
        self.tally("n", y.shape[0])

    def compute(self) -> float:
        n = float(self.n)
        if self.refuses_zero_y and int(self.zeros):
            raise NotComputableError("The ground truth has 0.")
        if n == 0 and self.needs_examples:
            raise no_examples(self.name, self.counted)
        return self.finish(n, *(getattr(self, name) for name in self.sums))


class _Total(_Sums):
    needs_examples = False

    def finish(self, n: float, *sums: Tensor) -> float:
        return sums[0].item()


class CanberraMetric(_Total):
    """Sum of ``|y - y_pred| / (|y_pred| + |y|)``, as Ignite's.

    Example::

        CanberraMetric().attach(evaluator, "canberra")
    """

    name = "CanberraMetric"

    def terms(self, y_pred: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        return ((y - y_pred).abs() / (y_pred.abs() + y.abs() + 1e-15),)


class ManhattanDistance(_Total):
    """Sum of ``|y - y_pred|``, as Ignite's. Example: ``ManhattanDistance().attach(ev, "l1")``."""

    name = "ManhattanDistance"

    def terms(self, y_pred: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        return ((y - y_pred).abs(),)


class WaveHedgesDistance(_Total):
    """Sum of ``|y - y_pred| / max(y_pred, y)``, as Ignite's.

    Example::

        WaveHedgesDistance().attach(evaluator, "wave_hedges")
    """

    name = "WaveHedgesDistance"

    def terms(self, y_pred: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        return ((y - y_pred).abs() / (torch.maximum(y_pred, y) + 1e-30),)


class FractionalAbsoluteError(_Sums):
    """Mean of ``2 |y - y_pred| / (|y_pred| + |y|)``, as Ignite's.

    Example::

        FractionalAbsoluteError().attach(evaluator, "fae")
    """

    name = "FractionalAbsoluteError"

    def terms(self, y_pred: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        return (2 * (y - y_pred).abs() / (y_pred.abs() + y.abs()),)


class FractionalBias(_Sums):
    """Mean of ``2 (y - y_pred) / (y_pred + y)``, as Ignite's.

    Example::

        FractionalBias().attach(evaluator, "fractional_bias")
    """

    name = "FractionalBias"

    def terms(self, y_pred: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        return (2 * (y - y_pred) / (y_pred + y + 1e-30),)


class MeanError(_Sums):
    """Mean of ``y - y_pred``, as Ignite's. Example: ``MeanError().attach(evaluator, "me")``."""

    name = "MeanError"

    def terms(self, y_pred: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        return (y - y_pred,)


class MeanNormalizedBias(_Sums):
    """Mean of ``(y - y_pred) / y``, as Ignite's; a ``y`` of 0 makes ``compute`` raise.

    Example::

        MeanNormalizedBias().attach(evaluator, "mnb")
    """

    name = "MeanNormalizedBias"
    refuses_zero_y = True

    def terms(self, y_pred: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        return ((y - y_pred) / y,)


class MeanAbsoluteRelativeError(_Sums):
    """Mean of ``|y_pred - y| / |y|``, as Ignite's; a ``y`` of 0 makes ``compute`` raise.

    Example::

        MeanAbsoluteRelativeError().attach(evaluator, "mare")
    """

    name = "MeanAbsoluteRelativeError"
    refuses_zero_y = True
    counted = "sample"

    def terms(self, y_pred: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        return ((y_pred - y).abs() / y.abs(),)


class GeometricMeanAbsoluteError(_Sums):
    """``exp(mean(log |y - y_pred|))``, as Ignite's.

    Example::

        GeometricMeanAbsoluteError().attach(evaluator, "gmae")
    """

    name = "GeometricMeanAbsoluteError"

    def terms(self, y_pred: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        return ((y - y_pred).abs().log(),)

    def finish(self, n: float, *sums: Tensor) -> float:
        return (sums[0] / n).exp().item()


class R2Score(_Sums):
    """The coefficient of determination, ``1 - SSE / SST``, as Ignite's.

    Example::

        R2Score().attach(evaluator, "r2")
    """

    name = "R2Score"
    sums = ("squared_errors", "y_sum", "y_squares")

    def terms(self, y_pred: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        return ((y_pred - y).square(), y, y.square())

    def finish(self, n: float, *sums: Tensor) -> float:
        squared_errors, y_sum, y_squares = (s.item() for s in sums)
        return 1 - squared_errors / (y_squares - y_sum**2 / n)


class PearsonCorrelation(_Sums):
    """Pearson's r between ``y_pred`` and ``y``, as Ignite's (``eps`` bounds the denominator).

    Example::

        PearsonCorrelation().attach(evaluator, "pearson")
    """

    name = "PearsonCorrelation"
    sums = ("p", "y", "pp", "yy", "py")

    def __init__(
        self,
        eps: float = 1e-8,
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__(output_transform, device)
        self.eps = eps

    def terms(self, y_pred: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        return (y_pred, y, y_pred.square(), y.square(), y_pred * y)

    def finish(self, n: float, *sums: Tensor) -> float:
        p, y, pp, yy, py = sums
        cov = py / n - p * y / (n * n)
        p_var = (pp / n - (p / n) ** 2).clamp(min=0.0)
        y_var = (yy / n - (y / n) ** 2).clamp(min=0.0)
        return float((cov / (p_var * y_var).sqrt().clamp(min=self.eps)).item())


class MaximumAbsoluteError(Metric):
    """The largest ``|y_pred - y|``, as Ignite's.

    Example::

        MaximumAbsoluteError().attach(evaluator, "max_ae")
    """

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(output_transform, device, skip_unrolling)
        self.add_state("largest", torch.tensor(-1.0, dtype=torch.float64), reduce="max")
        self.add_state("n", torch.tensor(0.0, dtype=torch.float64))

    def update(self, output: Any) -> None:
        y_pred, y = regression_pair(output, "MaximumAbsoluteError")
        self._follow(y_pred)
        if y.numel():
            largest = (y_pred.double() - y.double()).abs().max()
            self.largest = torch.maximum(self.largest, largest)
        self.tally("n", y.shape[0])

    def compute(self) -> float:
        if float(self.n) == 0:
            raise no_examples("MaximumAbsoluteError")
        return self.largest.item()
