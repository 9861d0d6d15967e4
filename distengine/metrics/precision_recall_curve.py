"""The precision-recall curve: scikit-learn's ``precision_recall_curve`` over an epoch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from distengine.metrics.epoch_metric import CurveMetric, as_numpy


def precision_recall_curve_compute_fn(
    y_preds: torch.Tensor, y_targets: torch.Tensor
) -> tuple[Any, ...]:
    """scikit-learn's ``precision_recall_curve``: precisions, recalls, thresholds."""
    from sklearn.metrics import precision_recall_curve

    return precision_recall_curve(as_numpy(y_targets), as_numpy(y_preds))


class PrecisionRecallCurve(CurveMetric):
    """``(precision, recall, thresholds)`` as float64 tensors, as PyTorch-Ignite's (binary ``y``).

    Example::

        PrecisionRecallCurve().attach(evaluator, "pr_curve")
    """

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        check_compute_fn: bool = False,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(
            precision_recall_curve_compute_fn,
            output_transform,
            check_compute_fn,
            device,
            skip_unrolling,
        )
