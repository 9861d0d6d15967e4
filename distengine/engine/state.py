"""The run state an engine exposes to handlers as ``engine.state``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from distengine.engine.events import EventEnum, Events

#: Which counter each built-in event's filters look at.
EVENT_COUNTER: dict[EventEnum, str] = {
    Events.STARTED: "epoch",
    Events.EPOCH_STARTED: "epoch",
    Events.EPOCH_COMPLETED: "epoch",
    Events.TERMINATE_SINGLE_EPOCH: "epoch",
    Events.TERMINATE: "epoch",
    Events.COMPLETED: "epoch",
    Events.INTERRUPT: "iteration",
    Events.EXCEPTION_RAISED: "iteration",
    Events.GET_BATCH_STARTED: "iteration",
    Events.GET_BATCH_COMPLETED: "iteration",
    Events.ITERATION_STARTED: "iteration",
    Events.ITERATION_COMPLETED: "iteration",
    Events.DATALOADER_STOP_ITERATION: "iteration",
}


class State:
    """What a run has done so far, shared by the engine and its handlers.

    Attributes:
        iteration: iterations completed over the whole run (1-based while one runs).
        epoch: the current epoch (1-based while one runs).
        epoch_length: iterations per epoch; ``None`` until learned from data without ``len``.
        max_epochs: the run ends after this epoch (``None`` when ``max_iters`` is used).
        max_iters: the run ends after this iteration, if set.
        output: what the process function returned for the last batch.
        batch: the last batch.
        metrics: metric values by name, filled by attached metrics.
        dataloader: the data the engine runs over.
        seed: a seed for the user's use; the engine stores it in its state dict.
        times: seconds taken, by event name (``"EPOCH_COMPLETED"``, ``"COMPLETED"``).
        event_to_attr: which attribute counts each event, for its filters
            (custom events added by ``engine.register_events(..., event_to_attr=)``).

    Handlers may add attributes of their own: ``engine.state.best = 0.9``.

    Example::

        @trainer.on(Events.EPOCH_COMPLETED)
        def report(engine):
            print(engine.state.epoch, engine.state.metrics)
    """

    def __init__(self, **kwargs: Any) -> None:
        self.iteration = 0
        self.epoch = 0
        self.epoch_length: int | None = None
        self.max_epochs: int | None = None
        self.max_iters: int | None = None
        self.output: Any = None
        self.batch: Any = None
        self.metrics: dict[str, Any] = {}
        self.dataloader: Iterable[Any] | None = None
        self.seed: int | None = None
        self.times: dict[str, float | None] = {"EPOCH_COMPLETED": None, "COMPLETED": None}
        self.event_to_attr: dict[EventEnum, str] = dict(EVENT_COUNTER)
        for name, value in kwargs.items():
            setattr(self, name, value)

    def counter_for(self, event: EventEnum) -> str | None:
        """The attribute that counts ``event`` (``"iteration"``/``"epoch"``), if any."""
        return self.event_to_attr.get(event)

    def get_event_attrib_value(self, event: Any) -> int:
        """The counter of ``event`` (a filtered event counts as its base event).

        Example::

            engine.state.get_event_attrib_value(Events.ITERATION_COMPLETED)  # state.iteration
        """
        base = getattr(event, "event", event)
        attr = self.counter_for(base)
        if attr is None:
            raise RuntimeError(f"Unknown event name {event!r}: no state attribute counts it")
        return getattr(self, attr)

    def __repr__(self) -> str:
        shown = ("iteration", "epoch", "epoch_length", "max_epochs", "max_iters", "metrics")
        fields = [f"{k}: {getattr(self, k)!r}" for k in shown]
        kinds = ("dataloader", "output", "batch")  # as Ignite: their kinds, not their values
        fields += [f"{k}: {type(getattr(self, k)).__name__}" for k in kinds]
        return f"State({', '.join(fields)})"
