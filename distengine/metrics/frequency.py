"""How many items (tokens, examples) the ranks process per second, together."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from distengine.distributed import get_world_size
from distengine.metrics.metric import Metric

if TYPE_CHECKING:
    from distengine.engine import Engine
    from distengine.engine.events import EventEnum

__all__ = ["Frequency"]


def _now() -> float:
    return time.perf_counter()


class Frequency(Metric):
    """Items per second since the epoch started, over all ranks: the output (a number of
    items, e.g. ``output_transform=lambda out: out["ntokens"]``) summed over iterations and
    ranks, divided by the ranks' mean elapsed time.

    ``attach(engine, name, event_name=Events.ITERATION_COMPLETED)`` publishes it as an int
    at ``event_name`` (a filtered event such as ``ITERATION_COMPLETED(every=10)`` too); with
    several ranks each publication is one collective, on every rank.

    Example::

        wps = Frequency(output_transform=lambda out: out["ntokens"])
        wps.attach(trainer, "wps", event_name=Events.ITERATION_COMPLETED(every=50))
    """

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(output_transform, device, skip_unrolling)
        self.add_state("_n", torch.tensor(0))
        self.add_state("_elapsed", torch.tensor(0.0, dtype=torch.float64))
        self._start = _now()

    def reset(self) -> None:
        super().reset()
        self._start = _now()

    def update(self, output: Any) -> None:
        self.tally("_n", int(output))
        self._elapsed = torch.tensor(_now() - self._start, dtype=torch.float64)

    def compute(self) -> float:
        return float(self._n) / float(self._elapsed) * get_world_size()

    def completed(self, engine: Engine, name: str) -> None:
        """Publish the frequency (an int) in ``engine.state.metrics[name]``."""
        engine.state.metrics[name] = int(self.compute())

    def attach(  # type: ignore[override] - PyTorch-Ignite's signature
        self, engine: Engine, name: str, event_name: EventEnum | Any = None
    ) -> None:
        """Reset at each epoch's start, count each iteration, publish at ``event_name``
        (``ITERATION_COMPLETED`` when None)."""
        from distengine.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        event = Events.ITERATION_COMPLETED if event_name is None else event_name
        engine.add_event_handler(event, self.completed, name)
