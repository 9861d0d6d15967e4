"""Average precision: scikit-learn's ``average_precision_score`` over an epoch's examples."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from distengine.metrics.epoch_metric import EpochMetric, as_numpy


def average_precision_compute_fn(y_preds: torch.Tensor, y_targets: torch.Tensor) -> float:
    """scikit-learn's ``average_precision_score(y_targets, y_preds)``."""
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(as_numpy(y_targets), as_numpy(y_preds)))


class AveragePrecision(EpochMetric):
    """Average precision (area under the precision-recall curve), as PyTorch-Ignite's.

    ``y_pred`` holds scores or probabilities, ``y`` 0/1 labels, (N,) or (N, C)
    for multilabel; every rank's examples are gathered, then each rank
    computes the same value.

    Example::

        AveragePrecision(output_transform=lambda out: (out[0].sigmoid(), out[1])).attach(ev, "ap")
    """

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        check_compute_fn: bool = False,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(
            average_precision_compute_fn, output_transform, check_compute_fn, device, skip_unrolling
        )
