"""The mean of an engine's outputs over the examples seen."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from distengine.metrics.metric import Metric
from distengine.metrics.state import no_examples


class Average(Metric):
    """Mean of the outputs, as PyTorch-Ignite's ``Average``: a number, a 0-d or a 1-d tensor
    is one example, a tensor ``(N, ...)`` of 2 or more dimensions is ``N`` examples
    (so a 1-d output is averaged element by element over the batches).

    ``compute`` returns a float64 tensor (0-d for numbers and 0-d outputs);
    ``engine.state.metrics`` gets a float for a 0-d value.

    Example::

        Average(output_transform=lambda out: out["grad_norm"]).attach(trainer, "grad_norm")
    """

    required_output_keys = None  # a mapping output must be picked from by output_transform

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(output_transform, device, skip_unrolling)
        self.add_state("total", None)  # shaped by the first output
        self.add_state("n", torch.tensor(0.0, dtype=torch.float64))  # beside total: one collective

    def update(self, output: Any) -> None:
        value = output.detach() if isinstance(output, torch.Tensor) else torch.tensor(output)
        self._follow(value)
        value = value.double()
        if value.dim() <= 1:
            total, n = value, 1
        else:
            total, n = value.sum(0), value.shape[0]
        self.total = total if self.total is None else self.total + total
        self.tally("n", n)

    def compute(self) -> Any:
        if self.total is None or int(self.n) == 0:
            raise no_examples("Average")
        return self.total / self.n
