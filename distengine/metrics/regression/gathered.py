"""Regression metrics of all the epoch's examples at once (medians, rank correlations):
every rank's examples are gathered, then each rank computes the same value, as Ignite does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from distengine.metrics.epoch_metric import EpochMetric, as_numpy
from distengine.metrics.regression.base import regression_pair

Tensor = torch.Tensor


def _median(t: Tensor) -> float:
    """The median, the mean of the two middle values for an even count (as Ignite's)."""
    values = t.reshape(-1).double().sort().values
    n = values.numel()
    middle = values[(n - 1) // 2 : n // 2 + 1]
    return middle.mean().item()


def median_absolute_error_compute_fn(y_pred: Tensor, y: Tensor) -> float:
    return _median((y.view_as(y_pred) - y_pred).abs())


def median_relative_absolute_error_compute_fn(y_pred: Tensor, y: Tensor) -> float:
    y = y.view_as(y_pred)
    return _median((y - y_pred).abs() / (y - y.mean()).abs())


def median_absolute_percentage_error_compute_fn(y_pred: Tensor, y: Tensor) -> float:
    y = y.view_as(y_pred)
    return 100.0 * _median((y - y_pred).abs() / y.abs())


def geometric_mean_relative_absolute_error_compute_fn(y_pred: Tensor, y: Tensor) -> float:
    y, y_pred = y.double(), y_pred.double()
    return ((y - y_pred).abs() / (y - y.mean()).abs()).log().mean().exp().item()


def spearman_compute_fn(y_pred: Tensor, y: Tensor) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(as_numpy(y_pred.flatten()), as_numpy(y.flatten())).statistic)


def kendall_compute_fn(variant: str) -> Callable[[Tensor, Tensor], float]:
    if variant not in ("b", "c"):
        raise ValueError(f"variant accepts 'b' or 'c', got {variant!r}.")

    def tau(y_pred: Tensor, y: Tensor) -> float:
        from scipy.stats import kendalltau

        result = kendalltau(as_numpy(y_pred.flatten()), as_numpy(y.flatten()), variant=variant)
        return float(result.statistic)

    return tau


class _Gathered(EpochMetric):
    """An EpochMetric of ``compute_fn_of`` (checked on the first batch, as Ignite's)."""

    compute_fn_of: Callable[[Tensor, Tensor], float]
    checks_regression_inputs = False

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device | None = None,
        check_compute_fn: bool = True,
        skip_unrolling: bool = False,
        compute_fn: Callable[[Tensor, Tensor], float] | None = None,
    ) -> None:
        fn = compute_fn or type(self).compute_fn_of
        super().__init__(fn, output_transform, check_compute_fn, device, skip_unrolling)

    def update(self, output: Any) -> None:
        if self.checks_regression_inputs:
            regression_pair(output, type(self).__name__)
        super().update(output)


class MedianAbsoluteError(_Gathered):
    """Median of ``|y - y_pred|`` over the epoch, as Ignite's.

    Example::

        MedianAbsoluteError().attach(evaluator, "median_ae")
    """

    compute_fn_of = staticmethod(median_absolute_error_compute_fn)


class MedianRelativeAbsoluteError(_Gathered):
    """Median of ``|y - y_pred| / |y - mean(y)|`` over the epoch, as Ignite's.

    Example::

        MedianRelativeAbsoluteError().attach(evaluator, "median_rae")
    """

    compute_fn_of = staticmethod(median_relative_absolute_error_compute_fn)


class MedianAbsolutePercentageError(_Gathered):
    """100 times the median of ``|y - y_pred| / |y|`` over the epoch, as Ignite's.

    Example::

        MedianAbsolutePercentageError().attach(evaluator, "median_ape")
    """

    compute_fn_of = staticmethod(median_absolute_percentage_error_compute_fn)


class GeometricMeanRelativeAbsoluteError(_Gathered):
    """``exp(mean(log(|y - y_pred| / |y - mean(y)|)))`` over the epoch, as Ignite's.

    Example::

        GeometricMeanRelativeAbsoluteError().attach(evaluator, "gmrae")
    """

    compute_fn_of = staticmethod(geometric_mean_relative_absolute_error_compute_fn)
    checks_regression_inputs = True

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__(output_transform, device, check_compute_fn=False)


class SpearmanRankCorrelation(_Gathered):
    """Spearman's rank correlation (scipy's ``spearmanr``) over the epoch, as Ignite's.

    Example::

        SpearmanRankCorrelation().attach(evaluator, "spearman")
    """

    compute_fn_of = staticmethod(spearman_compute_fn)
    checks_regression_inputs = True

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        check_compute_fn: bool = True,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(output_transform, device, check_compute_fn, skip_unrolling)


class KendallRankCorrelation(_Gathered):
    """Kendall's tau (scipy's ``kendalltau``, ``variant`` "b" or "c") over the epoch, as Ignite's.

    Example::

        KendallRankCorrelation(variant="c").attach(evaluator, "kendall")
    """

    checks_regression_inputs = True

    def __init__(
        self,
        variant: str = "b",
        output_transform: Callable[[Any], Any] = lambda output: output,
        check_compute_fn: bool = True,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        tau = kendall_compute_fn(variant)
        super().__init__(output_transform, device, check_compute_fn, skip_unrolling, tau)
