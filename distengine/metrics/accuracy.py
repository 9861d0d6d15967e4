"""Accuracy for binary, multiclass and multilabel classification."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from distengine.metrics.inputs import binary_error, class_last, classified, hits, non_binary
from distengine.metrics.metric import Metric
from distengine.metrics.state import no_examples


class Accuracy(Metric):
    """Fraction of correct predictions.

    Multiclass: ``y_pred`` holds scores (N, C, ...), ``y`` labels (N, ...).
    Binary: ``y_pred`` and ``y`` hold 0/1 of the same shape (or ``y_pred``
    (N, 1, ...)). Multilabel (``is_multilabel=True``): a sample counts when
    all its labels match. Binary and multilabel values other than 0/1 make
    ``compute`` raise ValueError, as PyTorch-Ignite's update does.

    Example::

        Accuracy().attach(evaluator, "accuracy")
    """

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        is_multilabel: bool = False,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(output_transform, device, skip_unrolling)
        self.is_multilabel = is_multilabel
        self._kind: str | None = None
        self._checked_shapes: tuple | None = None
        self.add_state("correct", torch.tensor(0))
        self.add_state("total", torch.tensor(0))
        self.add_state("invalid", torch.tensor(0))  # binary/multilabel values other than 0/1

    def reset(self) -> None:
        super().reset()
        self._kind, self._checked_shapes = None, None

    @property
    def _type(self) -> str | None:
        """Ignite's name for the kind of data seen: binary, multiclass or multilabel."""
        return self._kind

    def update(self, output: Any) -> None:
        y_pred, y, kind = classified(self, output, self.is_multilabel, "Accuracy")
        self._follow(y_pred)
        if kind == "multiclass":
            correct = hits(y_pred, y)
        elif kind == "binary":
            y_pred = y_pred.reshape(y.shape)
            correct = y_pred.to(y.dtype) == y
            self.invalid += non_binary(y_pred) + non_binary(y)
        else:
            correct = (class_last(y_pred).to(y.dtype) == class_last(y)).all(1)
            self.invalid += non_binary(y_pred) + non_binary(y)
        self.correct += correct.sum()
        self.tally("total", correct.numel())

    def compute(self) -> float:
        correct, total, invalid = torch.stack([self.correct, self.total, self.invalid]).tolist()
        if total == 0:
            raise no_examples("Accuracy")
        if invalid:
            raise binary_error("Accuracy", invalid)
        return correct / total
