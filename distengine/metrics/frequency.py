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
    at ``event_name`` (a filtered event such as ``ITERATION_COMPLETED(every=10)`` too). With
    several ranks it is the sum of the ranks' own rates, agreed through the engine's board
    (``engine.board``: no collective of its own, so ranks that run different numbers of
    iterations never wait on each other): as of the iteration before a filtered
    ``event_name``, or of the board's last exchange (about every 0.5 s) on every iteration;
    nothing is published before the ranks' first agreement.

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
        self._items, self._seconds = 0, 0.0  # this rank's, on the host, for the board
        self._agreed: int | None = None

    def reset(self) -> None:
        super().reset()
        self._start = _now()
        self._items, self._seconds = 0, 0.0

    def update(self, output: Any) -> None:
        n = int(output)
        self.tally("_n", n)
        self._items, self._seconds = self._items + n, _now() - self._start
        self._elapsed = torch.tensor(self._seconds, dtype=torch.float64)

    def _local_rate(self) -> float | None:
        """This rank's items per second since the epoch started (None before its first)."""
        return self._items / self._seconds if self._seconds > 0 else None

    def _agree(self, mean: float | torch.Tensor) -> None:
        self._agreed = int(float(mean) * get_world_size())

    def compute(self) -> float:
        return float(self._n) / float(self._elapsed) * get_world_size()

    def completed(self, engine: Engine, name: str) -> None:
        """Publish the frequency (an int) in ``engine.state.metrics[name]``."""
        if get_world_size() <= 1:
            engine.state.metrics[name] = int(self.compute())
        elif self._agreed is not None:
            engine.state.metrics[name] = self._agreed

    def attach(  # type: ignore[override] - PyTorch-Ignite's signature
        self, engine: Engine, name: str, event_name: EventEnum | Any = None
    ) -> None:
        """Reset at each epoch's start, count each iteration, publish at ``event_name``
        (``ITERATION_COMPLETED`` when None)."""
        from distengine.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        if get_world_size() > 1:
            engine.board.value((self, name), None, self._local_rate, self._agree, name=name)
        event = Events.ITERATION_COMPLETED if event_name is None else event_name
        engine.add_event_handler(event, self.completed, name)
