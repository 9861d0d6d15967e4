"""Accuracy for binary, multiclass and multilabel classification."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from distengine.metrics.inputs import class_last, classified, hits
from distengine.metrics.metric import Metric
from distengine.metrics.state import NotComputableError


class Accuracy(Metric):
    """Fraction of correct predictions.

    Multiclass: ``y_pred`` holds scores (N, C, ...), ``y`` labels (N, ...).
    Binary: ``y_pred`` and ``y`` hold 0/1 of the same shape. Multilabel
    (``is_multilabel=True``): a sample counts when all its labels match.

    Example::

        Accuracy().attach(evaluator, "accuracy")
    """

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        is_multilabel: bool = False,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__(output_transform, device)
        self.is_multilabel = is_multilabel
        self._kind: str | None = None
        self._checked_shapes: tuple | None = None
        self.add_state("correct", torch.tensor(0))
        self.add_state("total", torch.tensor(0))

    def update(self, output: Any) -> None:
        y_pred, y, kind = classified(self, output, self.is_multilabel, "Accuracy")
        self._follow(y_pred)
        if kind == "multiclass":
            correct = hits(y_pred, y)
        elif kind == "binary":
            correct = y_pred.reshape(y.shape).to(y.dtype) == y
        else:
            correct = (class_last(y_pred).to(y.dtype) == class_last(y)).all(1)
        self.correct += correct.sum()
        self.tally("total", correct.numel())

    def compute(self) -> float:
        if int(self.total) == 0:
            raise NotComputableError("Accuracy needs at least one example before compute()")
        return (self.correct.double() / self.total).item()
