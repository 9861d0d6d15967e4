"""The ROC curve, and the area under it computed from ranks (no scikit-learn needed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from distengine.metrics.epoch_metric import CurveMetric, EpochMetric, as_numpy
from distengine.metrics.state import NotComputableError


def _average_ranks(scores: torch.Tensor) -> torch.Tensor:
    """1-based ranks of ``scores`` with ties sharing their average rank."""
    order = scores.argsort()
    sorted_scores = scores[order]
    new_value = torch.ones_like(sorted_scores, dtype=torch.bool)
    new_value[1:] = sorted_scores[1:] != sorted_scores[:-1]
    group = new_value.cumsum(0) - 1
    positions = torch.arange(1, len(scores) + 1, dtype=torch.float64, device=scores.device)
    n_groups = int(group[-1]) + 1
    sums = torch.zeros(n_groups, dtype=torch.float64, device=scores.device).index_add(
        0, group, positions
    )
    counts = torch.zeros(n_groups, dtype=torch.float64, device=scores.device).index_add(
        0, group, torch.ones_like(positions)
    )
    ranks = torch.empty_like(positions)
    ranks[order] = (sums / counts)[group]
    return ranks


def binary_roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC AUC of one column: the Mann-Whitney U statistic over n_pos * n_neg."""
    positive = labels.reshape(-1) > 0
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise NotComputableError(
            "ROC AUC needs positive and negative examples: Only one class is present in y_true "
            f"({n_pos} positive, {n_neg} negative)"
        )
    ranks = _average_ranks(scores.reshape(-1).double())
    return ((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)).item()


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Binary ROC AUC, or its macro average over the columns of multilabel (N, C) data."""
    if scores.dim() == 1 or scores.shape[1] == 1:
        return binary_roc_auc(scores, labels)
    return (
        sum(binary_roc_auc(scores[:, c], labels[:, c]) for c in range(scores.shape[1]))
        / (scores.shape[1])
    )


class ROC_AUC(EpochMetric):  # noqa: N801 - the name users know from PyTorch-Ignite
    """Area under the ROC curve over all ranks' examples (binary, or multilabel macro).

    ``y_pred`` holds scores (any monotone scale), ``y`` 0/1 labels.

    Example::

        ROC_AUC(output_transform=lambda out: (out[0].sigmoid(), out[1])).attach(ev, "auc")
    """

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        check_compute_fn: bool = False,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(roc_auc, output_transform, check_compute_fn, device, skip_unrolling)


def roc_curve_compute_fn(y_preds: torch.Tensor, y_targets: torch.Tensor) -> tuple[Any, ...]:
    """scikit-learn's ``roc_curve``: false and true positive rates, thresholds."""
    from sklearn.metrics import roc_curve

    return roc_curve(as_numpy(y_targets), as_numpy(y_preds))


class RocCurve(CurveMetric):
    """``(fpr, tpr, thresholds)`` as float64 tensors, as PyTorch-Ignite's (binary ``y``).

    Example::

        RocCurve().attach(evaluator, "roc")      # state.metrics["roc"] = (fpr, tpr, thresholds)
    """

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        check_compute_fn: bool = False,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(
            roc_curve_compute_fn, output_transform, check_compute_fn, device, skip_unrolling
        )
