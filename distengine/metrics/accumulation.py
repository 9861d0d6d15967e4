"""Accumulations of the engine's outputs over the examples: Ignite's ``VariableAccumulation``
(any op), its ``Average`` (distengine's :class:`~distengine.metrics.Average`) and
``GeometricAverage``.

``VariableAccumulation`` and ``GeometricAverage`` are written Ignite's way
(state in attributes, ``@sync_all_reduce``): their accumulator and count are
summed over ranks with the engine's other metrics.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import torch

from distengine.metrics.average import Average
from distengine.metrics.ignite_style import reinit__is_reduced, sync_all_reduce
from distengine.metrics.metric import Metric
from distengine.metrics.state import no_examples

__all__ = ["Average", "GeometricAverage", "VariableAccumulation"]


class VariableAccumulation(Metric):
    """``accumulator = op(accumulator, output)`` over the outputs, with their count.

    A tensor output of 2 or more dimensions counts ``shape[0]`` examples, anything else one;
    ``compute`` returns ``(accumulator, num_examples)`` summed over ranks, as in Ignite.

    Example::

        VariableAccumulation(lambda a, x: a + x.sum()).attach(evaluator, "total")
    """

    required_output_keys = None

    def __init__(
        self,
        op: Callable[[Any, Any], Any],
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device = "cpu",
        skip_unrolling: bool = False,
    ) -> None:
        if not callable(op):
            raise TypeError(f"Argument op should be a callable, but given {type(op)}")
        self._op = op
        super().__init__(output_transform, device, skip_unrolling)

    @reinit__is_reduced
    def reset(self) -> None:
        self.accumulator = torch.tensor(0.0, dtype=torch.float64, device=self._device)
        self.num_examples = 0

    @reinit__is_reduced
    def update(self, output: Any) -> None:
        if not isinstance(output, (numbers.Number, torch.Tensor)):
            raise TypeError(f"Output should be a number or torch.Tensor, but given {type(output)}")
        if isinstance(output, torch.Tensor):
            output = output.detach().to(self.accumulator)
        self.accumulator = self._op(self.accumulator, output)
        big = isinstance(output, torch.Tensor) and output.dim() > 1
        self.num_examples += output.shape[0] if big else 1

    @sync_all_reduce("accumulator", "num_examples")
    def compute(self) -> tuple[torch.Tensor, int]:
        return self.accumulator, self.num_examples


def _log_sum(a: torch.Tensor, x: Any) -> torch.Tensor:
    x = torch.log(x if isinstance(x, torch.Tensor) else torch.tensor(x))
    return a + (x.sum(dim=0) if x.dim() > 1 else x)


class GeometricAverage(VariableAccumulation):
    """``exp(mean(log(output)))`` over the examples, as Ignite's (a float for one value).

    Example::

        GeometricAverage(output_transform=lambda out: out["ratio"]).attach(evaluator, "gm")
    """

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device = "cpu",
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(_log_sum, output_transform, device, skip_unrolling)

    @sync_all_reduce("accumulator", "num_examples")
    def compute(self) -> float | torch.Tensor:
        if self.num_examples < 1:
            raise no_examples(type(self).__name__)
        value = torch.exp(self.accumulator / self.num_examples)
        return value.item() if value.numel() == 1 else value
