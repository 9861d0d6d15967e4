"""A 2x2 confusion matrix per class of multilabel data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from distengine.metrics.inputs import binary_error, non_binary, pair
from distengine.metrics.metric import Metric
from distengine.metrics.state import NotComputableError

__all__ = ["MultiLabelConfusionMatrix"]

_INT_TYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


class MultiLabelConfusionMatrix(Metric):
    """For each of ``num_classes`` labels, the counts ``[[tn, fp], [fn, tp]]`` of 0/1 integer
    ``y_pred`` and ``y`` of shape ``(N, num_classes, ...)``: a ``(num_classes, 2, 2)`` int64
    tensor, or each matrix divided by its total (``normalized=True``).

    Counts stay on the device and reduce across ranks with the engine's other metrics; values
    other than 0 and 1 are counted there too and raise ValueError at ``compute`` (no host sync
    per batch; PyTorch-Ignite raises in ``update``).

    Example::

        MultiLabelConfusionMatrix(num_classes=3).attach(evaluator, "mlcm")
        evaluator.run([(torch.tensor([[1, 0, 1]]), torch.tensor([[1, 1, 0]]))])
        evaluator.state.metrics["mlcm"][0]   # tensor([[0, 0], [0, 1]]): class 0, one tp
    """

    def __init__(
        self,
        num_classes: int,
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device | None = None,
        normalized: bool = False,
        skip_unrolling: bool = False,
    ) -> None:
        if not isinstance(num_classes, int) or num_classes <= 1:
            raise ValueError(f"Argument num_classes needs to be > 1, got {num_classes!r}")
        super().__init__(output_transform, device, skip_unrolling)
        self.num_classes = num_classes
        self.normalized = normalized
        shape = (num_classes, 2, 2)
        self.add_state("confusion_matrix", torch.zeros(shape, dtype=torch.int64))
        self.add_state("_num_examples", torch.tensor(0))
        self.add_state("_invalid", torch.tensor(0))  # values other than 0/1

    def update(self, output: Any) -> None:
        y_pred, y = pair(output, "MultiLabelConfusionMatrix")
        self._check(y_pred, y)
        self._follow(y_pred)
        truth = y.transpose(0, 1).reshape(self.num_classes, -1).long()
        guess = y_pred.transpose(0, 1).reshape(self.num_classes, -1).long()
        tp = (truth * guess).sum(dim=1)
        fp = guess.sum(dim=1) - tp
        fn = truth.sum(dim=1) - tp
        tn = truth.shape[1] - tp - fp - fn
        counts = torch.stack([tn, fp, fn, tp], dim=1).reshape(-1, 2, 2)
        self.confusion_matrix += counts.to(self.confusion_matrix.device)
        self._invalid += (non_binary(y_pred) + non_binary(y)).to(self._invalid.device)
        self.tally("_num_examples", y.shape[0])

    def _check(self, y_pred: torch.Tensor, y: torch.Tensor) -> None:
        n = self.num_classes
        for name, t in (("y_pred", y_pred), ("y", y)):
            if t.ndim < 2:
                raise ValueError(
                    f"{name} must at least have shape (batch_size, num_classes (currently set "
                    f"to {n}), ...), got {tuple(t.shape)}"
                )
        if y_pred.shape[0] != y.shape[0]:
            raise ValueError(
                f"y_pred and y have different batch size: {y_pred.shape[0]} vs {y.shape[0]}"
            )
        for name, t in (("y_pred", y_pred), ("y", y)):
            if t.shape[1] != n:
                raise ValueError(
                    f"{name} does not have correct number of classes: {t.shape[1]} vs {n}"
                )
        if y.shape != y_pred.shape:
            raise ValueError(
                f"y and y_pred shapes must match: {tuple(y.shape)} vs {tuple(y_pred.shape)}."
            )
        for name, t in (("y_pred", y_pred), ("y", y)):
            if t.dtype not in _INT_TYPES:
                raise ValueError(f"{name} must be of any type: {_INT_TYPES}, got {t.dtype}")

    def compute(self) -> torch.Tensor:
        if int(self._num_examples) == 0:
            raise NotComputableError(
                "Confusion matrix must have at least one example before it can be computed."
            )
        if int(self._invalid):
            raise binary_error("MultiLabelConfusionMatrix", int(self._invalid))
        if self.normalized:
            matrix = self.confusion_matrix.to(self._double_dtype)
            return matrix / matrix.sum(dim=(1, 2))[:, None, None]
        return self.confusion_matrix
