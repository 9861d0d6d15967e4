"""The confusion matrix, and the metrics computed from it: IoU, mIoU, Dice, accuracy, ..."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from distengine.metrics.inputs import pair, predicted_classes
from distengine.metrics.metric import Metric
from distengine.metrics.metrics_lambda import MetricsLambda
from distengine.metrics.state import no_examples

NORMALISATIONS = (None, "samples", "recall", "precision")


class ConfusionMatrix(Metric):
    """Counts of (true class, predicted class); rows are true classes.

    ``y_pred`` holds scores (N, C, ...) and ``y`` labels (N, ...); labels
    outside ``[0, num_classes)`` (e.g. an ignore label 255) are skipped.
    ``average``: None (counts, int64), ``"samples"`` (divided by the
    number of examples, i.e. of rows of ``y_pred``, as PyTorch-Ignite
    does), ``"recall"`` (rows sum to 1) or ``"precision"`` (columns sum
    to 1). Counting uses ``index_add_`` on integer cell codes: deterministic
    on every device, allowed under ``torch.use_deterministic_algorithms``.

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
        skip_unrolling: bool = True,
    ) -> None:
        super().__init__(output_transform, device, skip_unrolling)
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                f"Argument num_classes needs to be > 1: num_classes must be an int >= 2, "
                f"got {num_classes!r}"
            )
        if average not in NORMALISATIONS:
            raise ValueError(f"average must be one of {NORMALISATIONS}, got {average!r}")
        self.num_classes = num_classes
        self.average = average
        # the c * c cells, row-major, between two bins for skipped labels (below 0, c and up)
        self.add_state("matrix", torch.zeros(num_classes * num_classes + 2, dtype=torch.int64))
        self.add_state("n", torch.tensor(0))  # examples (rows of y_pred), counted on the host

    def update(self, output: Any) -> None:
        y_pred, y = pair(output, "ConfusionMatrix")
        self._follow(y_pred)
        c = self.num_classes
        if y_pred.dim() >= 2 and y_pred.shape[1] != c:
            raise ValueError(
                f"y_pred does not have correct number of classes: {y_pred.shape[1]} vs {c} "
                f"(ConfusionMatrix(num_classes={c}))"
            )
        if y_pred.dim() != y.dim() + 1:
            raise ValueError(
                f"y_pred must have shape (batch_size, num_classes (currently set to {c}), ...) "
                "and y must have shape of (batch_size, ...), but given "
                f"{tuple(y_pred.shape)} and {tuple(y.shape)} (ConfusionMatrix(num_classes={c}))"
            )
        if y_pred.shape[:1] + y_pred.shape[2:] != y.shape:
            raise ValueError(
                f"y and y_pred must have compatible shapes: y_pred {tuple(y_pred.shape)} should "
                f"be y {tuple(y.shape)} with the classes as dim 1 (ConfusionMatrix({c}))"
            )
        # cell target * c + pred, shifted by one; a label outside [0, c) lands in a bin
        cells = predicted_classes(y_pred).reshape(-1).add(y.reshape(-1), alpha=c)
        cells = cells.add_(1).clamp_(0, c * c + 1)
        self.matrix.index_add_(0, cells, torch.ones_like(cells))
        self.tally("n", y_pred.shape[0])

    def compute(self) -> torch.Tensor:
        if int(self.n) == 0:
            raise no_examples("Confusion matrix")
        matrix = self.matrix[1:-1].view(self.num_classes, self.num_classes)
        if self.average is None:
            return matrix.clone()  # not a view of the state that later updates change
        m = matrix.double()
        if self.average == "samples":
            return m / self.n
        dim = 1 if self.average == "recall" else 0
        return m / m.sum(dim=dim, keepdim=True).clamp_min(1e-15)


def _checked(cm: Any, averages: tuple[str | None, ...], what: str) -> ConfusionMatrix:
    if not isinstance(cm, ConfusionMatrix):
        raise TypeError(
            f"Argument cm should be instance of ConfusionMatrix, but given {type(cm)}: "
            f"{what} needs a ConfusionMatrix"
        )
    if cm.average not in averages:
        either = " or ".join(repr(a) for a in averages)
        raise ValueError(
            f"ConfusionMatrix should have average attribute either {either}, but given "
            f"{cm.average!r}: {what} needs a ConfusionMatrix with average in {averages}"
        )
    return cm


def _check_ignore(cm: ConfusionMatrix, ignore_index: int | None) -> None:
    if ignore_index is not None and not (
        isinstance(ignore_index, int)
        and not isinstance(ignore_index, bool)
        and 0 <= ignore_index < cm.num_classes
    ):
        raise ValueError(
            f"ignore_index should be integer and in the range of [0, {cm.num_classes}), but "
            f"given {ignore_index} (or None)"
        )


def _drop(values: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    if ignore_index is None:
        return values
    keep = [i for i in range(len(values)) if i != ignore_index]
    return values[keep]


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return num / den.clamp_min(1e-15)


def IoU(cm: ConfusionMatrix, ignore_index: int | None = None) -> MetricsLambda:  # noqa: N802
    """Per-class intersection over union, ``tp / (tp + fp + fn)``, from a confusion matrix.

    ``cm`` counts (``average=None``) or is normalised by samples; a class
    never seen nor predicted scores 0.

    Example::

        IoU(ConfusionMatrix(num_classes=21), ignore_index=0).attach(evaluator, "iou")
    """
    _checked(cm, (None, "samples"), "IoU")
    _check_ignore(cm, ignore_index)

    def iou(matrix: torch.Tensor) -> torch.Tensor:
        m = matrix.double()
        tp = m.diag()
        return _drop(_ratio(tp, m.sum(0) + m.sum(1) - tp), ignore_index)

    return MetricsLambda(iou, cm)


def JaccardIndex(cm: ConfusionMatrix, ignore_index: int | None = None) -> MetricsLambda:  # noqa: N802
    """The Jaccard index per class: the same as :func:`IoU`.

    Example::

        JaccardIndex(ConfusionMatrix(num_classes=3)).attach(evaluator, "jaccard")
    """
    return IoU(cm, ignore_index)


def mIoU(cm: ConfusionMatrix, ignore_index: int | None = None) -> MetricsLambda:  # noqa: N802
    """Mean IoU over classes (``ignore_index`` left out), a 0-d float64 tensor as in Ignite
    (``engine.state.metrics`` gets a float).

    Example::

        mIoU(ConfusionMatrix(num_classes=21), ignore_index=0).attach(evaluator, "miou")
    """
    return MetricsLambda(lambda per_class: per_class.mean(), IoU(cm, ignore_index))


def DiceCoefficient(cm: ConfusionMatrix, ignore_index: int | None = None) -> MetricsLambda:  # noqa: N802
    """Per-class Dice, ``2 tp / (2 tp + fp + fn)``, from a confusion matrix.

    Example::

        DiceCoefficient(ConfusionMatrix(num_classes=3)).attach(evaluator, "dice")
    """
    _checked(cm, (None, "samples"), "DiceCoefficient")
    _check_ignore(cm, ignore_index)

    def dice(matrix: torch.Tensor) -> torch.Tensor:
        m = matrix.double()
        return _drop(_ratio(2 * m.diag(), m.sum(0) + m.sum(1)), ignore_index)

    return MetricsLambda(dice, cm)


def cmAccuracy(cm: ConfusionMatrix) -> MetricsLambda:  # noqa: N802
    """Accuracy from a confusion matrix: the diagonal's share of all counted examples.

    Example::

        cmAccuracy(ConfusionMatrix(num_classes=3)).attach(evaluator, "accuracy")
    """
    _checked(cm, (None, "samples"), "cmAccuracy")

    def accuracy(matrix: torch.Tensor) -> torch.Tensor:
        m = matrix.double()
        return _ratio(m.diag().sum(), m.sum())

    return MetricsLambda(accuracy, cm)


def cmPrecision(cm: ConfusionMatrix, average: bool = True) -> MetricsLambda:  # noqa: N802
    """Per-class precision from a confusion matrix, or its mean over classes (``average``).

    A class never predicted scores 0 (and counts in the mean), as in PyTorch-Ignite.

    Example::

        cmPrecision(ConfusionMatrix(num_classes=3), average=False).attach(evaluator, "precision")
    """
    _checked(cm, (None, "samples", "precision"), "cmPrecision")
    return _per_class_mean(cm, 0, average)


def cmRecall(cm: ConfusionMatrix, average: bool = True) -> MetricsLambda:  # noqa: N802
    """Per-class recall from a confusion matrix, or its mean over classes (``average``).

    Example::

        cmRecall(ConfusionMatrix(num_classes=3)).attach(evaluator, "recall")
    """
    _checked(cm, (None, "samples", "recall"), "cmRecall")
    return _per_class_mean(cm, 1, average)


def _per_class_mean(cm: ConfusionMatrix, dim: int, average: bool) -> MetricsLambda:
    if not isinstance(average, bool):
        raise ValueError(f"average must be True or False, got {average!r}")

    def per_class(matrix: torch.Tensor) -> Any:
        m = matrix.double()
        values = _ratio(m.diag(), m.sum(dim))
        return values.mean() if average else values

    return MetricsLambda(per_class, cm)
