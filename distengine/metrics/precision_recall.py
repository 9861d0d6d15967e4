"""Precision, Recall and the F-beta score, from shared per-class counts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from distengine.metrics.inputs import class_last, classified, derived, hits, predicted_classes
from distengine.metrics.metric import Metric
from distengine.metrics.metrics_lambda import MetricsLambda
from distengine.metrics.state import NotComputableError

AVERAGES = (False, True, "micro", "macro", "weighted")


class _ClassCounts(Metric):
    """Per-class true positives, predicted positives and actual positives.

    With ``num_classes`` the counts have a fixed shape and reduce with the
    other metrics in one collective; without it their shape comes from the
    first update, which costs a second, small collective round.
    """

    name = "metric"

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        average: bool | str = False,
        is_multilabel: bool = False,
        num_classes: int | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__(output_transform, device)
        if average not in AVERAGES:
            raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 2):
            raise ValueError(f"num_classes must be an int >= 2 or None, got {num_classes!r}")
        self.average = "macro" if average is True else average
        self.is_multilabel = is_multilabel
        self.num_classes = num_classes
        self._kind: str | None = None
        self._checked_shapes: tuple | None = None
        default = torch.zeros(3 * num_classes, dtype=torch.int64) if num_classes else None
        # rows of (true positives, predicted positives, actual positives), flattened
        self.add_state("counts", default)

    def update(self, output: Any) -> None:
        y_pred, y, kind = classified(self, output, self.is_multilabel, self.name)
        self._follow(y_pred)
        if kind == "multiclass" and self.num_classes not in (None, y_pred.shape[1]):
            raise ValueError(
                f"{self.name}: y_pred has {y_pred.shape[1]} classes (shape "
                f"{tuple(y_pred.shape)}), num_classes is {self.num_classes}"
            )
        if kind == "multiclass":
            # Precision, Recall and Fbeta fed the same batch share the indices
            key = ("class_count_index", y.data_ptr(), y._version, tuple(y.shape))
            index, weight = derived(y_pred, key, lambda: _count_index(y_pred, y))
            if self.counts is None:
                self.counts = torch.zeros(3 * y_pred.shape[1], dtype=torch.int64, device=y.device)
            self.counts.index_add_(0, index, weight)
            return
        batch_counts = _label_counts(kind, y_pred, y)
        self.counts = batch_counts if self.counts is None else self.counts + batch_counts

    def _rows(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.counts is None or int(self.counts.sum()) == 0:
            raise NotComputableError(f"{self.name} needs at least one example before compute()")
        tp, pp, ap = self.counts.double().view(3, -1)
        return tp, pp, ap

    def _finish(self, per_class: torch.Tensor, micro: torch.Tensor, support: torch.Tensor) -> Any:
        if self._kind == "binary":
            return per_class[0].item()
        if self.average is False:
            return per_class
        if self.average == "micro":
            return micro.item()
        if self.average == "macro":
            return per_class.mean().item()
        return ((per_class * support).sum() / support.sum().clamp_min(1)).item()


def _count_index(y_pred: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each example adds to the flat (tp, pp, ap) counts, and what it adds."""
    n_classes = y_pred.shape[1]
    pred, target = predicted_classes(y_pred).reshape(-1), y.reshape(-1)
    index = torch.cat((target, pred + n_classes, target + 2 * n_classes))
    hit = hits(y_pred, y).reshape(-1).to(torch.int64)
    return index, torch.cat((hit, hit.new_ones(2 * hit.numel())))


def _label_counts(kind: str, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Flat (tp, pp, ap) counts of 0/1 predictions: one class (binary) or C (multilabel)."""
    if kind == "binary":
        p = y_pred.reshape(y.shape).to(torch.int64).reshape(-1, 1)
        t = y.to(torch.int64).reshape(-1, 1)
    else:
        p, t = class_last(y_pred).to(torch.int64), class_last(y).to(torch.int64)
    return torch.cat(((p * t).sum(0), p.sum(0), t.sum(0)))


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))


class Precision(_ClassCounts):
    """tp / (tp + fp), per class or averaged (``average``: False, micro, macro, weighted).

    Example::

        Precision(average="macro", num_classes=10).attach(evaluator, "precision")
    """

    name = "Precision"

    def compute(self) -> Any:
        tp, pp, ap = self._rows()
        return self._finish(_ratio(tp, pp), _ratio(tp.sum(), pp.sum()), ap)


class Recall(_ClassCounts):
    """tp / (tp + fn), per class or averaged (``average``: False, micro, macro, weighted).

    Example::

        Recall(average=False).attach(evaluator, "recall_per_class")
    """

    name = "Recall"

    def compute(self) -> Any:
        tp, pp, ap = self._rows()
        return self._finish(_ratio(tp, ap), _ratio(tp.sum(), ap.sum()), ap)


class FbetaScore(_ClassCounts):
    """The F-beta score from one set of counts (made by :func:`Fbeta`)."""

    name = "Fbeta"

    def __init__(self, beta: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta!r}")
        self.beta2 = float(beta) ** 2

    def compute(self) -> Any:
        tp, pp, ap = self._rows()
        p, r = _ratio(tp, pp), _ratio(tp, ap)
        mp, mr = _ratio(tp.sum(), pp.sum()), _ratio(tp.sum(), ap.sum())
        return self._finish(self._f(p, r), self._f(mp, mr), ap)

    def _f(self, p: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return _ratio((1 + self.beta2) * p * r, self.beta2 * p + r)


def Fbeta(  # noqa: N802 - named like the class users know from PyTorch-Ignite
    beta: float = 1.0,
    average: bool | str = "macro",
    precision: Precision | None = None,
    recall: Recall | None = None,
    output_transform: Callable[[Any], Any] = lambda output: output,
    is_multilabel: bool = False,
    num_classes: int | None = None,
    device: str | torch.device | None = None,
) -> Metric:
    """The F-beta score, ``(1 + b^2) p r / (b^2 p + r)``, per class or averaged.

    Without ``precision``/``recall`` it keeps one set of counts (no extra
    state, no extra collective). Given per-class (``average=False``)
    Precision and Recall, it is computed from them.

    Example::

        Fbeta(beta=1.0, average="macro").attach(evaluator, "f1")
    """
    if (precision is None) != (recall is None):
        raise ValueError("give both precision and recall, or neither")
    if precision is None:
        return FbetaScore(
            beta,
            output_transform=output_transform,
            average=average,
            is_multilabel=is_multilabel,
            num_classes=num_classes,
            device=device,
        )
    if precision.average is not False or recall.average is not False:
        raise ValueError("Fbeta needs Precision and Recall with average=False (per class)")
    b2 = float(beta) ** 2
    if average not in AVERAGES or average in ("micro", "weighted"):
        raise ValueError(
            f"with given precision/recall, average must be False or 'macro', got {average!r}"
        )

    def f(p, r):
        per_class = (
            _ratio((1 + b2) * p * r, b2 * p + r)
            if isinstance(p, torch.Tensor)
            else ((1 + b2) * p * r / (b2 * p + r) if (b2 * p + r) else 0.0)
        )
        return (
            per_class
            if average is False or not isinstance(per_class, torch.Tensor)
            else (per_class.mean().item())
        )

    return MetricsLambda(f, precision, recall)
