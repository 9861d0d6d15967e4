"""A schedule of a DataLoader's batch size, set once per event (Ignite's BatchSizeScheduler)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import BatchSampler, DataLoader

from distengine.engine import Engine, Events
from distengine.engine.events import EventEnum, EventsList, FilteredEvent
from distengine.handlers.scheduler_base import BaseParamScheduler, _check_count, record_history


def _check_batch_size(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"Batch size returned by {where} should be a positive integer, but given {value!r}"
        )
    return value


class BatchSizeScheduler(BaseParamScheduler):
    """Sets ``dataloader.batch_sampler.batch_size`` to ``scheduler_fn(event_index)`` on each call.

    The n-th call (``event_index`` n, from 0) applies ``scheduler_fn(n)``;
    attached to ``Events.EPOCH_STARTED`` (the default of :meth:`attach`),
    epoch n + 1 draws its batches with it. The size is per rank (each rank's
    loader gets the same value). Set in the middle of a pass over the data,
    a size takes effect where torch's BatchSampler reads it (its next batch;
    with ``drop_last=True`` or prefetching workers, later).

    Exact resume: the size in force is part of :meth:`state_dict`, and
    :meth:`load_state_dict` puts it back on the loader, so a trainer saved in
    the same checkpoint continues with the batches of the uninterrupted run.
    A pass that was drawn with another size than the loader has when the run
    resumes (a size changed in the middle of a pass) is refused by the engine
    with a ValueError that names both sizes. With ``save_history=True`` the
    sizes go to ``engine.state.param_history["batch_size"]``.

    Example::

        loader = DataLoader(dataset, batch_size=16, shuffle=True)
        scheduler = BatchSizeScheduler(loader, scheduler_fn=lambda e: 16 * 2 ** min(e, 3))
        scheduler.attach(trainer)                      # on every EPOCH_STARTED
        to_save = {"trainer": trainer, "batch_size": scheduler}
    """

    def __init__(
        self,
        dataloader: DataLoader,
        scheduler_fn: Callable[[int], int],
        save_history: bool = False,
    ) -> None:
        if not isinstance(dataloader, DataLoader):
            raise TypeError(
                "Argument dataloader should be torch.utils.data.DataLoader, "
                f"but given {type(dataloader).__name__}"
            )
        if not isinstance(getattr(dataloader, "batch_sampler", None), BatchSampler):
            raise ValueError(
                "Argument dataloader should have a BatchSampler (DataLoader(..., batch_size=n)), "
                f"but its batch_sampler is {type(dataloader.batch_sampler).__name__}"
            )
        if not callable(scheduler_fn):
            raise TypeError(
                f"Argument scheduler_fn should be callable, but given {type(scheduler_fn).__name__}"
            )
        super().__init__(param_name="batch_size", save_history=save_history)
        self.dataloader = dataloader
        self.scheduler_fn = scheduler_fn
        self._state_attrs.append("batch_size")

    @property
    def batch_size(self) -> int:
        """The loader's batch size now (saved in :meth:`state_dict`, put back on load)."""
        return self.dataloader.batch_sampler.batch_size  # type: ignore[union-attr]

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        sampler = self.dataloader.batch_sampler
        sampler.batch_size = _check_batch_size(value, "the state dict")  # type: ignore[union-attr]

    def get_param(self) -> int:
        """The size for the current ``event_index``: ``scheduler_fn(event_index)``."""
        return self.scheduler_fn(self.event_index)

    def __call__(self, engine: Engine | None = None) -> None:
        value = _check_batch_size(self.get_param(), "scheduler_fn")
        self.dataloader.batch_sampler.batch_size = value  # type: ignore[union-attr]
        if self.save_history:
            record_history(engine, self.param_name, value)  # type: ignore[arg-type]
        self.event_index += 1

    def attach(
        self,
        engine: Engine,
        event: EventEnum | FilteredEvent | EventsList = Events.EPOCH_STARTED,
    ) -> None:
        """Call this scheduler on ``event`` of ``engine`` (default: every ``EPOCH_STARTED``).

        Example: ``scheduler.attach(trainer, Events.EPOCH_STARTED(every=2))``.
        """
        engine.add_event_handler(event, self)

    @classmethod
    def simulate_values(cls, num_events: int, **scheduler_kwargs: Any) -> list[list[int]]:
        """``[[event_index, batch_size], ...]`` for ``num_events`` calls (needs ``scheduler_fn``).

        Example: ``BatchSizeScheduler.simulate_values(3, scheduler_fn=lambda e: 8 * (e + 1))``
        gives ``[[0, 8], [1, 16], [2, 24]]``.
        """
        _check_count(num_events)
        if "scheduler_fn" not in scheduler_kwargs:
            raise ValueError("Argument scheduler_kwargs must contain 'scheduler_fn'")
        fn = scheduler_kwargs["scheduler_fn"]
        return [[i, _check_batch_size(fn(i), "scheduler_fn")] for i in range(num_events)]
