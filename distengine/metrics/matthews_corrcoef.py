"""Matthews correlation coefficient: scikit-learn's ``matthews_corrcoef`` over an epoch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from distengine.metrics.epoch_metric import EpochMetric, as_numpy


def matthews_corrcoef_compute_fn(y_preds: torch.Tensor, y_targets: torch.Tensor) -> float:
    """scikit-learn's ``matthews_corrcoef(y_targets, y_preds)``; (N, C) scores (and one-hot
    targets) count by their argmax, as in Ignite."""
    from sklearn.metrics import matthews_corrcoef

    if y_preds.dim() == 1 and y_targets.dim() == 2:
        raise ValueError(
            "Incoherent types between input y_pred and stored predictions: "
            "y_pred is 1D while y_target is 2D"
        )
    if y_preds.dim() == 2:
        y_preds = y_preds.argmax(1)
    if y_targets.dim() == 2:
        y_targets = y_targets.argmax(1)
    return float(matthews_corrcoef(as_numpy(y_targets), as_numpy(y_preds)))


class MatthewsCorrCoef(EpochMetric):
    """The Matthews correlation coefficient of predicted and true labels, as PyTorch-Ignite's.

    ``y_pred`` holds class labels (N,) or scores (N, C), ``y`` labels (N,) or
    one-hot (N, C); every rank's examples are gathered, then each rank computes
    the same value.

    Example::

        MatthewsCorrCoef(output_transform=lambda out: (out[0].argmax(1), out[1])).attach(ev, "mcc")
    """

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        check_compute_fn: bool = False,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(
            matthews_corrcoef_compute_fn, output_transform, check_compute_fn, device, skip_unrolling
        )
