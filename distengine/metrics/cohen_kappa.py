"""Cohen's kappa: agreement between predicted and true class labels beyond chance."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from distengine.metrics.inputs import pair
from distengine.metrics.metric import Metric
from distengine.metrics.state import NotComputableError, no_examples

WEIGHTS = (None, "linear", "quadratic")


class CohenKappa(Metric):
    """Cohen's kappa of class labels, as PyTorch-Ignite's (scikit-learn's
    ``cohen_kappa_score``), unweighted or with ``weights="linear"``/``"quadratic"``.

    ``y_pred`` and ``y`` hold class labels of shape (N,) or (N, 1). With
    ``num_classes`` the metric keeps a ``num_classes x num_classes`` table of
    counts (one small state, reduced with the engine's other metrics);
    without it, it keeps every label (gathered from the ranks at compute) and
    the classes are those seen.

    Example::

        CohenKappa(weights="quadratic", num_classes=5).attach(evaluator, "kappa")
    """

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        weights: str | None = None,
        check_compute_fn: bool = False,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
        num_classes: int | None = None,
    ) -> None:
        if weights not in WEIGHTS:
            raise ValueError(
                f"Kappa Weighting type must be None or linear or quadratic, got {weights!r}"
            )
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 2):
            raise ValueError(f"num_classes must be an int >= 2 or None, got {num_classes!r}")
        super().__init__(output_transform, device, skip_unrolling)
        self.weights, self.num_classes = weights, num_classes
        self.check_compute_fn = check_compute_fn  # taken for Ignite's signature; compute raises
        if num_classes is None:
            self.add_state("y_preds", reduce="cat")
            self.add_state("ys", reduce="cat")
        else:
            self.add_state("counts", torch.zeros(num_classes * num_classes, dtype=torch.int64))
            self.add_state("invalid", torch.tensor(0))  # labels outside [0, num_classes)

    def update(self, output: Any) -> None:
        y_pred, y = (_column(t) for t in pair(output, "CohenKappa"))
        self._follow(y_pred)
        if self.num_classes is None:
            for name, kept, t in (("y_pred", self.y_preds, y_pred), ("y", self.ys, y)):
                if t.dim() not in (1, 2):
                    raise ValueError(f"CohenKappa expects {name} of shape (N,) or (N, 1)")
                if kept and kept[-1].dtype != t.dtype:
                    raise ValueError(
                        f"Incoherent types between input {name} and stored "
                        f"{'predictions' if name == 'y_pred' else 'targets'}: "
                        f"{kept[-1].dtype} vs {t.dtype}"
                    )
            self.y_preds.append(y_pred.clone())
            self.ys.append(y.clone())
            return
        _check_labels(y_pred, y)
        y_pred, y = y_pred.long(), y.long()
        inside = (y_pred >= 0) & (y_pred < self.num_classes) & (y >= 0) & (y < self.num_classes)
        cell = torch.where(inside, self.num_classes * y + y_pred, 0)
        self.counts.index_add_(0, cell.to(self.counts.device), inside.long())
        self.invalid += (~inside).sum()  # on the device: checked at compute (no sync here)

    def compute(self) -> float:
        if self.num_classes is not None:
            if int(self.invalid):
                raise ValueError(
                    f"CohenKappa(num_classes={self.num_classes}) was fed {int(self.invalid)} "
                    f"label(s) outside [0, {self.num_classes})"
                )
            n = self.num_classes
            return _kappa(self.counts.view(n, n).double(), self.weights)
        if not isinstance(self.y_preds, torch.Tensor) or self.y_preds.numel() == 0:
            raise no_examples("CohenKappa")
        _check_labels(self.y_preds, self.ys)
        y_pred, y = self.y_preds.long(), self.ys.long()
        n = int(max(y_pred.max().item(), y.max().item())) + 1
        counts = torch.bincount(n * y + y_pred, minlength=n * n)
        return _kappa(counts.view(n, n).double(), self.weights)


def _column(t: torch.Tensor) -> torch.Tensor:
    return t.squeeze(-1) if t.dim() == 2 and t.shape[1] == 1 else t


def _check_labels(y_pred: torch.Tensor, y: torch.Tensor) -> None:
    if y_pred.dim() > 1 or y.dim() > 1:
        raise ValueError("multilabel-indicator is not supported")


def _kappa(conf: torch.Tensor, weights: str | None) -> float:
    """Kappa from a confusion table (rows: true labels), as scikit-learn computes it."""
    n = conf.sum()
    if n == 0:
        raise NotComputableError(
            "Confusion matrix must have at least one example before it can be computed "
            "(CohenKappa's is empty)"
        )
    row, col = conf.sum(1), conf.sum(0)
    if weights is None:
        observed, expected = conf.trace() / n, (row * col).sum() / (n * n)
    else:
        idx = torch.arange(conf.shape[0], dtype=conf.dtype, device=conf.device)
        distance = (idx[None] - idx[:, None]).abs()
        w = distance if weights == "linear" else distance**2
        w = w / w.max()
        observed = 1 - (w * conf).sum() / n
        expected = 1 - (w * row[:, None] * col[None] / n).sum() / n
    return ((observed - expected) / (1 - expected).clamp(min=1e-9)).item()
