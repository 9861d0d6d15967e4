"""The perplexity of a language model's predicted token distributions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from distengine.metrics.inputs import pair
from distengine.metrics.metric import Metric
from distengine.metrics.state import no_examples

__all__ = ["Perplexity"]


class Perplexity(Metric):
    """``exp`` of the mean cross-entropy per token: ``y_pred`` holds logits ``(N, C, ...)``,
    ``y`` the token ids ``(N, ...)``; tokens equal to ``ignore_index`` are not counted.

    The summed negative log-likelihood and the token count stay on the device and reduce
    across ranks with the engine's other metrics.

    Example::

        Perplexity().attach(evaluator, "ppl")
        evaluator.run([(logits.transpose(1, 2), token_ids)])   # (batch, vocab, length)
    """

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device | None = None,
        ignore_index: int = -100,
    ) -> None:
        super().__init__(output_transform, device)
        self._ignore_index = ignore_index
        self.add_state("_sum_of_nll", torch.tensor(0.0, dtype=torch.float64))
        self.add_state("_num_tokens", torch.tensor(0))

    def update(self, output: Any) -> None:
        y_pred, y = pair(output, "Perplexity")
        if y_pred.ndim < 2:
            raise ValueError(f"y_pred must be at least 2-dimensional (got shape: {y_pred.shape})")
        if y.ndim < 1:
            raise ValueError(f"y must be at least 1-dimensional (got shape: {y.shape})")
        if y_pred.ndim != y.ndim + 1:
            raise ValueError(
                "y_pred must have exactly one more dimension than y "
                f"(got y_pred={y_pred.ndim}D and y={y.ndim}D)."
            )
        if y_pred.shape[0] != y.shape[0] or y_pred.shape[2:] != y.shape[1:]:
            raise ValueError(
                f"y_pred and y have incompatible shapes: y_pred={y_pred.shape}, y={y.shape} "
                "(expected y_pred[0] == y[0] and y_pred[2:] == y[1:])."
            )
        self._follow(y_pred)
        nll = F.cross_entropy(y_pred, y, reduction="sum", ignore_index=self._ignore_index)
        self._sum_of_nll += nll.to(self._sum_of_nll)
        self._num_tokens += (y != self._ignore_index).sum().to(self._num_tokens.device)

    def compute(self) -> float:
        if int(self._num_tokens) == 0:
            raise no_examples("Perplexity")
        return torch.exp(self._sum_of_nll / self._num_tokens).item()
