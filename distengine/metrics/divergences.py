"""Entropy, mutual information and the KL and JS divergences of predicted distributions.

As PyTorch-Ignite's: ``y_pred`` (and ``y``) hold logits of shape (B, C) or
(B, C, ...) (every position counts as an example); softmax is applied here.
Sums stay in float64 on the data's device, reduced with the engine's metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from distengine.metrics.inputs import pair
from distengine.metrics.metric import Metric
from distengine.metrics.state import no_examples

Tensor = torch.Tensor


def _rows(t: Tensor, name: str) -> Tensor:
    """(B, C, ...) logits as (B * ..., C) rows."""
    if t.dim() == 1:
        raise ValueError(f"{name} must be in the shape of (B, C) or (B, C, ...), got {t.shape}.")
    return t.movedim(1, -1).reshape(-1, t.shape[1]) if t.dim() >= 3 else t


class _Mean(Metric):
    name = "metric"

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(output_transform, device, skip_unrolling)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64))
        self.add_state("n", torch.tensor(0.0, dtype=torch.float64))

    def _count(self, total: Tensor, rows: int) -> None:
        self.total.add_(total.to(torch.float64))
        self.tally("n", rows)

    def _n(self) -> float:
        n = float(self.n)
        if n == 0:
            raise no_examples(self.name)
        return n


class Entropy(_Mean):
    """Mean entropy of ``softmax(y_pred)``, as Ignite's.

    Example::

        Entropy().attach(evaluator, "entropy")
    """

    name = "Entropy"

    def update(self, output: Any) -> None:
        if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
            y_pred = output[0].detach()  # y is not read (it may be None), as in Ignite
        else:
            y_pred = pair(output, self.name)[0]
        y_pred = _rows(y_pred, "y_pred")
        self._follow(y_pred)
        prob, log_prob = F.softmax(y_pred, dim=1), F.log_softmax(y_pred, dim=1)
        self._count(-(prob * log_prob).sum(), prob.shape[0])
        self._update_more(prob)

    def _update_more(self, prob: Tensor) -> None:
        """What a subclass keeps besides the entropy."""

    def compute(self) -> float:
        return (self.total / self._n()).item()


class MutualInformation(Entropy):
    """Mutual information between inputs and predictions, ``H(mean p) - mean H(p)``, as Ignite's.

    Example::

        MutualInformation().attach(evaluator, "mutual_information")
    """

    name = "MutualInformation"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_state("probabilities", None)  # (C,), shaped by the first batch

    def _update_more(self, prob: Tensor) -> None:
        summed = prob.sum(0).to(torch.float64)
        self.probabilities = summed if self.probabilities is None else self.probabilities + summed

    def compute(self) -> float:
        n = self._n()
        marginal = self.probabilities / n
        information = -(marginal * marginal.log()).sum() - self.total / n
        return float(information.clamp(min=0.0).item())


class KLDivergence(_Mean):
    """Mean ``KL(softmax(y) || softmax(y_pred))`` per example, as Ignite's.

    Example::

        KLDivergence().attach(evaluator, "kl")
    """

    name = "KLDivergence"

    def update(self, output: Any) -> None:
        y_pred, y = pair(output, self.name)
        if y_pred.shape != y.shape:
            raise ValueError(
                f"y_pred and y must be in the same shape, got {y_pred.shape} != {y.shape}."
            )
        y_pred, y = _rows(y_pred, "y_pred"), _rows(y, "y")
        self._follow(y_pred)
        self._count(self._divergence(y_pred, y), y_pred.shape[0])

    def _divergence(self, y_pred: Tensor, y: Tensor) -> Tensor:
        log_p, log_q = F.log_softmax(y_pred, dim=1), F.log_softmax(y, dim=1)
        return F.kl_div(log_p, log_q, log_target=True, reduction="sum")

    def compute(self) -> float:
        return (self.total / self._n()).item()


class JSDivergence(KLDivergence):
    """Mean Jensen-Shannon divergence of ``softmax(y_pred)`` and ``softmax(y)``, as Ignite's.

    Example::

        JSDivergence().attach(evaluator, "js")
    """

    name = "JSDivergence"

    def _divergence(self, y_pred: Tensor, y: Tensor) -> Tensor:
        m_log = ((F.softmax(y_pred, dim=1) + F.softmax(y, dim=1)) / 2).log()
        log_p, log_q = F.log_softmax(y_pred, dim=1), F.log_softmax(y, dim=1)
        return F.kl_div(m_log, log_p, log_target=True, reduction="sum") + F.kl_div(
            m_log, log_q, log_target=True, reduction="sum"
        )

    def compute(self) -> float:
        return (self.total / (self._n() * 2)).item()
