"""Keeping an epoch's outputs (Ignite's EpochOutputStore)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from distengine.engine import Engine, Events


class EpochOutputStore:
    """Keeps the (transformed) output of each iteration of the current epoch in :attr:`data`.

    Emptied at each ``EPOCH_STARTED``; with ``attach(engine, name)`` the
    list is also put on ``engine.state.<name>`` at ``EPOCH_COMPLETED``. On
    several ranks each rank keeps the outputs of its own batches (gather
    them with ``idist.all_gather`` where you need them all). Everything is
    kept in memory. Saved in a checkpoint (its :meth:`state_dict`), an epoch
    resumed in the middle keeps the outputs it had.

    Example::

        store = EpochOutputStore(output_transform=lambda out: out[0])  # y_pred only
        store.attach(evaluator, "predictions")
        evaluator.run(val_loader)
        evaluator.state.predictions     # [y_pred of batch 1, y_pred of batch 2, ...]
    """

    def __init__(self, output_transform: Callable[[Any], Any] = lambda x: x) -> None:
        if not callable(output_transform):
            raise TypeError(f"output_transform must be callable, got {output_transform!r}")
        self.data: list[Any] = []
        self.output_transform = output_transform
        self.name: str | None = None

    def reset(self) -> None:
        """Empty :attr:`data`."""
        self.data = []

    def update(self, engine: Engine) -> None:
        """Append the transformed ``engine.state.output``."""
        self.data.append(self.output_transform(engine.state.output))

    def store(self, engine: Engine) -> None:
        """Put :attr:`data` on ``engine.state.<name>``."""
        setattr(engine.state, self.name, self.data)  # type: ignore[arg-type]

    def attach(self, engine: Engine, name: str | None = None) -> None:
        """Empty on ``EPOCH_STARTED``, append on ``ITERATION_COMPLETED``, store under ``name``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        if name:
            self.name = name
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.store)

    def state_dict(self) -> dict[str, Any]:
        """The outputs kept so far (tensors and plain values load with ``weights_only=True``)."""
        return {"data": list(self.data)}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.data = list(state_dict["data"])
