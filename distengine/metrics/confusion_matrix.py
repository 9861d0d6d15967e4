"""The confusion matrix, and IoU, mIoU and Dice computed from it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from distengine.metrics.inputs import pair, predicted_classes
from distengine.metrics.metric import Metric
from distengine.metrics.metrics_lambda import MetricsLambda
from distengine.metrics.state import NotComputableError

NORMALISATIONS = (None, "samples", "recall", "precision")


class ConfusionMatrix(Metric):
    """Counts of (true class, predicted class); rows are true classes.

    ``y_pred`` holds scores (N, C, ...) and ``y`` labels (N, ...); labels
    outside ``[0, num_classes)`` (e.g. an ignore label 255) are skipped.
    ``average``: None (counts), ``"samples"`` (divide by the total),
    ``"recall"`` (rows sum to 1) or ``"precision"`` (columns sum to 1).

    Example::

        cm = ConfusionMatrix(num_classes=21)
        mIoU(cm, ignore_index=0).attach(evaluator, "miou")
    """

    def __init__(
        self,
        num_classes: int,
        average: str | None = None,
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__(output_transform, device)
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if average not in NORMALISATIONS:
            raise ValueError(f"average must be one of {NORMALISATIONS}, got {average!r}")
        self.num_classes = num_classes
        self.average = average
        # float64 counts are exact up to 2**53 and take histc's output without a cast
        self.add_state("matrix", torch.zeros(num_classes * num_classes, dtype=torch.float64))

    def update(self, output: Any) -> None:
        y_pred, y = pair(output, "ConfusionMatrix")
        self._follow(y_pred)
        c = self.num_classes
        if (
            y_pred.dim() != y.dim() + 1
            or y_pred.shape[1] != c
            or (y_pred.shape[:1] + y_pred.shape[2:] != y.shape)
        ):
            raise ValueError(
                f"ConfusionMatrix(num_classes={c}) expects y_pred (N, {c}, ...) and y (N, ...), "
                f"got {tuple(y_pred.shape)} and {tuple(y.shape)}"
            )
        pred, target = predicted_classes(y_pred), y
        if y.dim() > 1:
            pred, target = pred.reshape(-1), target.reshape(-1)
        # cell index target * c + pred; histc drops labels outside [0, c) (e.g. 255, -100)
        cells = pred.add(target, alpha=c).float()
        self.matrix += torch.histc(cells, bins=c * c, min=-0.5, max=c * c - 0.5)

    def compute(self) -> torch.Tensor:
        matrix = self.matrix.view(self.num_classes, self.num_classes)
        if int(matrix.sum()) == 0:
            raise NotComputableError("ConfusionMatrix needs at least one example")
        if self.average is None:
            return matrix.round().long()
        m = matrix
        if self.average == "samples":
            return m / m.sum()
        dim = 1 if self.average == "recall" else 0
        return m / m.sum(dim=dim, keepdim=True).clamp_min(1e-15)


def _check_counts(cm: ConfusionMatrix) -> None:
    if not isinstance(cm, ConfusionMatrix) or cm.average is not None:
        raise ValueError("expects a ConfusionMatrix with average=None (raw counts)")


def _drop(values: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    if ignore_index is None:
        return values
    keep = [i for i in range(len(values)) if i != ignore_index]
    return values[keep]


def IoU(cm: ConfusionMatrix, ignore_index: int | None = None) -> MetricsLambda:  # noqa: N802
    """Per-class intersection over union, ``tp / (tp + fp + fn)``, from a confusion matrix."""
    _check_counts(cm)

    def iou(matrix: torch.Tensor) -> torch.Tensor:
        m = matrix.double()
        tp = m.diag()
        union = m.sum(0) + m.sum(1) - tp
        return _drop(tp / union.clamp_min(1e-15), ignore_index)

    return MetricsLambda(iou, cm)


def mIoU(cm: ConfusionMatrix, ignore_index: int | None = None) -> MetricsLambda:  # noqa: N802
    """Mean IoU over classes (``ignore_index`` left out)."""
    return MetricsLambda(lambda per_class: per_class.mean().item(), IoU(cm, ignore_index))


def DiceCoefficient(cm: ConfusionMatrix, ignore_index: int | None = None) -> MetricsLambda:  # noqa: N802
    """Per-class Dice, ``2 tp / (2 tp + fp + fn)``, from a confusion matrix."""
    _check_counts(cm)

    def dice(matrix: torch.Tensor) -> torch.Tensor:
        m = matrix.double()
        return _drop(2 * m.diag() / (m.sum(0) + m.sum(1)).clamp_min(1e-15), ignore_index)

    return MetricsLambda(dice, cm)
