"""The average of a loss function over all examples."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from distengine.metrics.inputs import pair
from distengine.metrics.metric import Metric
from distengine.metrics.state import no_examples


class Loss(Metric):
    """Example-weighted mean of ``loss_fn(y_pred, y)`` (which must return a batch mean).

    The output may carry a third element, a dict of extra keyword arguments
    for ``loss_fn``. ``batch_size(y)`` gives the weight of a batch.

    Example::

        Loss(nn.CrossEntropyLoss()).attach(evaluator, "loss")
    """

    required_output_keys = ("y_pred", "y", "criterion_kwargs")  # from a mapping output

    def __init__(
        self,
        loss_fn: Callable[..., torch.Tensor],
        output_transform: Callable[[Any], Any] = lambda output: output,
        batch_size: Callable[[torch.Tensor], int] = len,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(output_transform, device, skip_unrolling)
        self.loss_fn = loss_fn
        self.batch_size = batch_size
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64))
        self.add_state("n", torch.tensor(0.0, dtype=torch.float64))  # beside total: one collective

    def update(self, output: Any) -> None:
        y_pred, y = pair(output, "Loss")
        self._follow(y_pred)
        kwargs = output[2] if len(output) > 2 else {}
        loss = self.loss_fn(y_pred, y, **kwargs)
        if loss.requires_grad:
            loss = loss.detach()
        if loss.dim() != 0:
            raise ValueError(
                f"Loss: loss_fn must return a scalar (batch mean), got shape {tuple(loss.shape)}"
            )
        n = self.batch_size(y)
        self.total.add_(loss, alpha=n)
        self.tally("n", n)

    def compute(self) -> float:
        if int(self.n) == 0:
            raise no_examples("Loss")
        return (self.total / self.n).item()
