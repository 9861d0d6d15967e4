"""Stop every rank when any rank's output holds NaN or infinity."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import torch

from distengine.distributed import all_reduce, get_world_size
from distengine.engine import Engine


def _finite(value: Any) -> torch.Tensor:
    """A 0-d bool tensor: every number in ``value`` (tensors, numbers, nested) is finite."""
    if isinstance(value, torch.Tensor):
        return torch.isfinite(value).all()
    if isinstance(value, numbers.Number):
        return torch.tensor(bool(torch.isfinite(torch.tensor(float(value)))))
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        flags = [_finite(v).cpu() for v in value]
        return torch.stack(flags).all() if flags else torch.tensor(True)
    return torch.tensor(True)


class TerminateOnNan:
    """On ``ITERATION_COMPLETED``: if any rank's output is not finite, all ranks terminate.

    With several ranks this costs one tiny all-reduce per iteration (the
    ranks must agree, or some would wait forever in the next collective).

    Example::

        trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan())
    """

    def __init__(self, output_transform: Callable[[Any], Any] = lambda output: output) -> None:
        self.output_transform = output_transform

    def __call__(self, engine: Engine) -> None:
        bad = int(not bool(_finite(self.output_transform(engine.state.output))))
        if get_world_size() > 1:
            bad = all_reduce(bad, "max")
        if bad:
            engine.state.terminated_on_nan = True
            engine.terminate()
