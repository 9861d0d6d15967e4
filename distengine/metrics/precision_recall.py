"""Precision, Recall and the F-beta score, from shared per-class counts."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Any

import torch

from distengine.metrics.inputs import (
    binary_error,
    class_last,
    classified,
    derived,
    hits,
    non_binary,
    predicted_classes,
)
from distengine.metrics.metric import Metric
from distengine.metrics.metrics_lambda import MetricsLambda
from distengine.metrics.state import no_examples

AVERAGES = (False, None, True, "micro", "macro", "weighted", "samples")
KINDS = ("binary", "multiclass", "multilabel")


def _check_average(average: Any) -> None:
    if not (average is None or isinstance(average, bool) or average in AVERAGES[3:]):
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")


class _ClassCounts(Metric):
    """Per-class true positives, predicted positives and actual positives.

    Binary data counts as two classes (0 and 1). Labels outside the classes
    (an ignore label such as -100 or 255) are skipped, as ``ConfusionMatrix``
    skips them. With ``num_classes`` the counts have a fixed shape and
    reduce with the other metrics in one collective; without it their shape
    comes from the first update, which costs a second, small collective round.
    """

    name = "metric"

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        average: bool | str | None = False,
        is_multilabel: bool = False,
        num_classes: int | None = None,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(output_transform, device, skip_unrolling)
        _check_average(average)
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
        for kind in KINDS:  # rows seen, by kind of data (host counts: no device work)
            self.add_state(f"rows_{kind}", torch.tensor(0))
        self.add_state("invalid", torch.tensor(0))  # values other than 0/1 where only those fit
        if self.average == "samples":
            self.add_state("sample_total", torch.tensor(0.0, dtype=torch.float64))

    def reset(self) -> None:
        super().reset()
        self._kind, self._checked_shapes = None, None
        self._updated = False  # Ignite's flag: an update went through since the reset

    @property
    def _type(self) -> str | None:
        """Ignite's name for the kind of data seen: binary, multiclass or multilabel."""
        return self._kind

    @property
    def _average(self) -> bool | str | None:
        """Ignite's name for ``average`` (``True`` reads ``"macro"``)."""
        return self.average

    def update(self, output: Any) -> None:
        self._check_and_count(output)
        self._updated = True

    def _check_and_count(self, output: Any) -> None:
        y_pred, y, kind = classified(self, output, self.is_multilabel, self.name)
        self._follow(y_pred)
        if kind != "multilabel" and self.average == "samples":
            raise ValueError(f"{self.name}: average='samples' needs multilabel data, got {kind}")
        n_classes = 2 if kind == "binary" else y_pred.shape[1]
        self._check_classes(kind, n_classes, y_pred)
        if self.counts is None:
            self.counts = torch.zeros(3 * n_classes, dtype=torch.int64, device=y_pred.device)
        if kind == "multilabel":
            self._count_multilabel(y_pred, y)
        else:
            key = ("class_count_index", kind, y.data_ptr(), y._version, tuple(y.shape))
            index, weight = derived(y_pred, key, lambda: _count_index(kind, y_pred, y))
            self.counts.index_add_(0, index, weight)
            self.tally(f"rows_{kind}", y.numel())
            if kind == "binary":
                self.invalid += non_binary(y_pred)
                if y.is_floating_point():
                    self.invalid += non_binary(y)

    def _check_classes(self, kind: str, n_classes: int, y_pred: torch.Tensor) -> None:
        if self.num_classes is not None and n_classes != self.num_classes:
            raise ValueError(
                f"{self.name}: {kind} data has {n_classes} classes (y_pred of shape "
                f"{tuple(y_pred.shape)}), num_classes is {self.num_classes}"
            )
        if self.counts is not None and self.counts.shape[0] != 3 * n_classes:
            raise ValueError(
                f"{self.name}: the number of classes changed from {self.counts.shape[0] // 3} to "
                f"{n_classes} (y_pred of shape {tuple(y_pred.shape)}); call reset() in between"
            )

    def _count_multilabel(self, y_pred: torch.Tensor, y: torch.Tensor) -> None:
        p, t = class_last(y_pred), class_last(y)
        self.invalid += non_binary(p) + non_binary(t)
        p, t = p.to(torch.int64), t.to(torch.int64)
        hits = p * t
        self.counts += torch.cat((hits.sum(0), p.sum(0), t.sum(0)))
        self.tally("rows_multilabel", p.shape[0])
        if self.average == "samples":
            self.sample_total += self._per_sample(hits.sum(1), p.sum(1), t.sum(1)).sum()

    @abstractmethod
    def _per_sample(self, tp: torch.Tensor, pp: torch.Tensor, ap: torch.Tensor) -> torch.Tensor:
        """The metric of each multilabel row (for ``average="samples"``)."""

    def _rows(self) -> tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(kind, tp, pp, ap) over all ranks; errors for no data, mixed kinds, non-0/1 values."""
        totals = torch.stack([getattr(self, f"rows_{k}") for k in KINDS] + [self.invalid])
        *rows, invalid = totals.tolist()
        kinds = [kind for kind, n in zip(KINDS, rows) if n > 0]
        if not kinds:
            raise no_examples(self.name)
        if len(kinds) > 1:
            raise ValueError(f"{self.name} was fed different kinds of data on the ranks: {kinds}")
        if invalid:
            raise binary_error(self.name, invalid)
        tp, pp, ap = self.counts.double().view(3, -1)
        return kinds[0], tp, pp, ap

    def _finish(
        self, kind: str, per_class: torch.Tensor, micro: torch.Tensor, support: torch.Tensor
    ) -> Any:
        if self.average is False:
            return per_class[1] if kind == "binary" else per_class
        if self.average is None:
            return per_class
        if self.average == "micro":
            return micro.item()
        if self.average == "macro":
            return per_class.mean().item()
        if self.average == "weighted":
            return ((per_class * support).sum() / support.sum().clamp_min(1)).item()
        return (self.sample_total / self.rows_multilabel).item()


def _count_index(
    kind: str, y_pred: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each example adds to the flat (tp, pp, ap) counts, and what it adds.

    Labels outside the classes add nothing; binary predictions other than 0/1
    are clamped here (so indices stay in range) and reported by ``invalid``.
    """
    target = y.reshape(-1)
    if kind == "multiclass":
        n_classes, pred = y_pred.shape[1], predicted_classes(y_pred).reshape(-1)
        hit = hits(y_pred, y).reshape(-1)  # shared with Accuracy; never true for a skipped label
    else:
        n_classes, pred = 2, y_pred.reshape(-1).to(torch.int64).clamp(0, 1)
        hit = pred == target
    safe = target.clamp(0, n_classes - 1)
    valid = safe == target  # labels outside the classes count nowhere
    if kind == "binary":
        hit = hit & valid
    safe = safe.to(torch.int64)
    index = torch.cat((safe, pred + n_classes, safe + 2 * n_classes))
    return index, torch.cat((hit, valid, valid)).to(torch.int64)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))


class Precision(_ClassCounts):
    """tp / (tp + fp) for binary, multiclass and multilabel data, as PyTorch-Ignite computes it.

    ``average``: ``False`` (per class; binary data: the positive class),
    ``None`` (per class, both classes for binary data), ``"micro"``,
    ``"macro"`` or ``True``, ``"weighted"`` (by support), ``"samples"``
    (multilabel: the mean of each row's precision). Binary data counts as
    two classes in every average, as in Ignite and scikit-learn. Labels
    outside ``[0, C)`` (ignore labels such as -100 or 255) are skipped.
    Binary and multilabel inputs must hold 0/1 values (else ``compute``
    raises ValueError). ``num_classes`` (optional) fixes the shape of the
    counts: one collective fewer.

    Example::

        Precision(average="macro", num_classes=10).attach(evaluator, "precision")
    """

    name = "Precision"

    def _per_sample(self, tp: torch.Tensor, pp: torch.Tensor, ap: torch.Tensor) -> torch.Tensor:
        return _ratio(tp.double(), pp.double())

    def compute(self) -> Any:
        kind, tp, pp, ap = self._rows()
        return self._finish(kind, _ratio(tp, pp), _ratio(tp.sum(), pp.sum()), ap)


class Recall(_ClassCounts):
    """tp / (tp + fn); arguments and averages as for :class:`Precision`.

    Example::

        Recall(average=False).attach(evaluator, "recall_per_class")
    """

    name = "Recall"

    def _per_sample(self, tp: torch.Tensor, pp: torch.Tensor, ap: torch.Tensor) -> torch.Tensor:
        return _ratio(tp.double(), ap.double())

    def compute(self) -> Any:
        kind, tp, pp, ap = self._rows()
        return self._finish(kind, _ratio(tp, ap), _ratio(tp.sum(), ap.sum()), ap)


class FbetaScore(_ClassCounts):
    """The F-beta score from one set of counts (made by :func:`Fbeta`).

    ``average=True`` is PyTorch-Ignite's: the mean of the per-class scores
    that ``Precision(average=False)`` gives, so binary data gives the
    positive class's score. Strings average as scikit-learn does.
    """

    name = "Fbeta"

    def __init__(self, beta: float = 1.0, average: bool | str | None = True, **kwargs: Any) -> None:
        super().__init__(average=average, **kwargs)
        if not beta > 0:
            raise ValueError(f"Beta should be a positive integer or float, got {beta!r}")
        self.beta2 = float(beta) ** 2
        self._mean_of_per_class = average is True

    def _per_sample(self, tp: torch.Tensor, pp: torch.Tensor, ap: torch.Tensor) -> torch.Tensor:
        return self._f(_ratio(tp.double(), pp.double()), _ratio(tp.double(), ap.double()))

    def compute(self) -> Any:
        kind, tp, pp, ap = self._rows()
        per_class = self._f(_ratio(tp, pp), _ratio(tp, ap))
        if self._mean_of_per_class and kind == "binary":
            return per_class[1].item()
        micro = self._f(_ratio(tp.sum(), pp.sum()), _ratio(tp.sum(), ap.sum()))
        return self._finish(kind, per_class, micro, ap)

    def _f(self, p: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return _ratio((1 + self.beta2) * p * r, self.beta2 * p + r)


def Fbeta(  # noqa: N802 - named like the function users know from PyTorch-Ignite
    beta: float = 1.0,
    average: bool | str | None = True,
    precision: Precision | None = None,
    recall: Recall | None = None,
    output_transform: Callable[[Any], Any] | None = None,
    device: str | torch.device | None = None,
    *,
    is_multilabel: bool = False,
    num_classes: int | None = None,
    skip_unrolling: bool = False,
) -> Metric:
    """The F-beta score, ``(1 + b^2) p r / (b^2 p + r)``, per class or averaged.

    As in PyTorch-Ignite, ``average=True`` is the mean of the per-class
    scores (binary data: the positive class's score) and ``False`` the
    per-class scores. distengine also takes :class:`Precision`'s averages
    as strings (``"macro"``, ``"micro"``, ``"weighted"``, ``"samples"``,
    and ``None``), which average as scikit-learn's ``fbeta_score`` does.

    Without ``precision``/``recall`` it keeps one set of counts (no extra
    state, no extra collective). Given a per-class Precision or Recall
    (``average=False`` or ``None``), it is computed from them (the one not
    given is made like the given one); ``output_transform`` and ``device``
    must then be None, as in Ignite.

    Example::

        Fbeta(beta=1.0).attach(evaluator, "f1")
    """
    if not beta > 0:
        raise ValueError(f"Beta should be a positive integer or float, got {beta!r}")
    if precision is None and recall is None:
        return FbetaScore(
            beta,
            average,
            output_transform=output_transform or (lambda output: output),
            is_multilabel=is_multilabel,
            num_classes=num_classes,
            device=device,
            skip_unrolling=skip_unrolling,
        )
    return _fbeta_of(beta, average, precision, recall, output_transform, device)


def _fbeta_of(
    beta: float,
    average: Any,
    precision: Precision | None,
    recall: Recall | None,
    output_transform: Any,
    device: Any,
) -> MetricsLambda:
    """F-beta from per-class Precision and Recall metrics (one may be made here)."""
    if output_transform is not None or device is not None:
        raise ValueError("with precision or recall given, output_transform and device must be None")
    if not (isinstance(average, bool) or average == "macro"):
        raise ValueError(
            f"with precision/recall given, average must be True, 'macro' or False, got {average!r}"
        )
    given = precision if precision is not None else recall
    for metric, cls in ((precision, Precision), (recall, Recall)):
        per_class = isinstance(metric, cls) and metric.average in (False, None)
        if metric is not None and not per_class:
            raise ValueError(
                f"Input {cls.__name__.lower()} metric should have average=False: Fbeta needs a "
                f"{cls.__name__} with average=False or None, got {metric!r}"
            )
    kwargs = dict(
        output_transform=given._output_transform,
        is_multilabel=given.is_multilabel,
        num_classes=given.num_classes,
        device=given._device,
    )
    precision = precision or Precision(average=given.average, **kwargs)
    recall = recall or Recall(average=given.average, **kwargs)
    b2 = float(beta) ** 2

    def f(p: torch.Tensor, r: torch.Tensor) -> Any:
        per_class = _ratio((1 + b2) * p * r, b2 * p + r)
        return per_class.mean().item() if average else per_class

    return MetricsLambda(f, precision, recall)
