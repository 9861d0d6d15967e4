"""When an attached metric resets, updates and publishes: PyTorch-Ignite's metric usages.

A usage names three events: ``STARTED`` (reset), ``ITERATION_COMPLETED``
(update with the engine's output) and ``COMPLETED`` (compute and publish in
``engine.state.metrics``). ``Metric.attach(engine, name, usage=...)`` takes
a usage object or its name.

Example::

    from distengine.metrics import Accuracy, BatchFiltered, RunningBatchWise

    Accuracy().attach(trainer, "acc_so_far", usage=RunningBatchWise())
    Accuracy().attach(trainer, "acc_every_10th", usage=BatchFiltered(every=10))
"""

from __future__ import annotations

from typing import Any

from distengine.engine import Events
from distengine.engine.events import EventEnum, FilteredEvent

__all__ = [
    "BatchFiltered",
    "BatchWise",
    "EpochWise",
    "MetricUsage",
    "RunningBatchWise",
    "RunningEpochWise",
    "SingleEpochRunningBatchWise",
]

#: Events a usage may name, by role; the metric group fires its work on these only.
RESET_EVENTS = (Events.STARTED, Events.EPOCH_STARTED, Events.ITERATION_STARTED)
UPDATE_EVENTS = (Events.ITERATION_COMPLETED, Events.EPOCH_COMPLETED)
COMPLETE_EVENTS = (Events.ITERATION_COMPLETED, Events.EPOCH_COMPLETED)


class MetricUsage:
    """The events at which a metric resets (``STARTED``), updates and publishes (``COMPLETED``).

    Subclass it, or use one of the usages below. ``iteration_completed`` may
    carry a filter (``Events.ITERATION_COMPLETED(every=5)``).

    Example::

        usage = MetricUsage(Events.EPOCH_STARTED, Events.EPOCH_COMPLETED,
                            Events.ITERATION_COMPLETED(every=2))
        Accuracy().attach(evaluator, "acc_on_even_batches", usage=usage)
    """

    usage_name: str = "custom"

    def __init__(
        self,
        started: EventEnum,
        completed: EventEnum,
        iteration_completed: EventEnum | FilteredEvent,
    ) -> None:
        _check_event("started", started, RESET_EVENTS, filtered=False)
        _check_event("completed", completed, COMPLETE_EVENTS, filtered=False)
        _check_event("iteration_completed", iteration_completed, UPDATE_EVENTS, filtered=True)
        self._started = started
        self._completed = completed
        self._iteration_completed = iteration_completed

    @property
    def STARTED(self) -> EventEnum:  # noqa: N802 - PyTorch-Ignite's name
        """The event that resets the metric."""
        return self._started

    @property
    def COMPLETED(self) -> EventEnum:  # noqa: N802
        """The event that computes the metric and publishes it."""
        return self._completed

    @property
    def ITERATION_COMPLETED(self) -> EventEnum | FilteredEvent:  # noqa: N802
        """The event (possibly filtered) that updates the metric with the engine's output."""
        return self._iteration_completed

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _check_event(role: str, event: Any, allowed: tuple, filtered: bool) -> None:
    base = event.event if isinstance(event, FilteredEvent) else event
    if base not in allowed or (isinstance(event, FilteredEvent) and not filtered):
        kinds = ", ".join(e.name for e in allowed)
        extra = " (optionally filtered)" if filtered else " (unfiltered)"
        raise ValueError(
            f"a metric usage's {role} event must be one of {kinds}{extra}, got {event!r}"
        )


class EpochWise(MetricUsage):
    """Reset at each epoch's start, update every iteration, publish at the epoch's end (default).

    Example: ``Accuracy().attach(evaluator, "acc", usage=EpochWise())``.
    """

    usage_name = "epoch_wise"

    def __init__(self) -> None:
        super().__init__(Events.EPOCH_STARTED, Events.EPOCH_COMPLETED, Events.ITERATION_COMPLETED)


class RunningEpochWise(MetricUsage):
    """Reset when the run starts; update and publish at each epoch's end (never reset between).

    Example: ``metric.attach(trainer, "m", usage=RunningEpochWise())``.
    """

    usage_name = "running_epoch_wise"

    def __init__(self) -> None:
        super().__init__(Events.STARTED, Events.EPOCH_COMPLETED, Events.EPOCH_COMPLETED)


class BatchWise(MetricUsage):
    """The value of each batch: reset, update and publish every iteration.

    Example: ``Accuracy().attach(trainer, "batch_acc", usage=BatchWise())``.
    """

    usage_name = "batch_wise"

    def __init__(self) -> None:
        super().__init__(
            Events.ITERATION_STARTED, Events.ITERATION_COMPLETED, Events.ITERATION_COMPLETED
        )


class RunningBatchWise(MetricUsage):
    """Reset when the run starts, publish after every iteration: the value over all batches so far.

    Example: ``Accuracy().attach(trainer, "acc_so_far", usage=RunningBatchWise())``.
    """

    usage_name = "running_batch_wise"

    def __init__(self) -> None:
        super().__init__(Events.STARTED, Events.ITERATION_COMPLETED, Events.ITERATION_COMPLETED)


class SingleEpochRunningBatchWise(MetricUsage):
    """Reset at each epoch's start, publish after every iteration: the epoch's value so far.

    distengine's own name for it is ``"running"``.

    Example: ``Accuracy().attach(trainer, "acc", usage=SingleEpochRunningBatchWise())``.
    """

    usage_name = "single_epoch_running_batch_wise"

    def __init__(self) -> None:
        super().__init__(
            Events.EPOCH_STARTED, Events.ITERATION_COMPLETED, Events.ITERATION_COMPLETED
        )


class BatchFiltered(MetricUsage):
    """Epoch-wise, but updated only on the iterations a filter lets through.

    Takes the arguments of ``Events.ITERATION_COMPLETED(...)``.

    Example::

        Accuracy().attach(trainer, "acc", usage=BatchFiltered(every=10))
    """

    usage_name = "batch_filtered"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        filtered = Events.ITERATION_COMPLETED(*args, **kwargs)
        super().__init__(Events.EPOCH_STARTED, Events.EPOCH_COMPLETED, filtered)


_BY_NAME: dict[str, type[MetricUsage]] = {
    cls.usage_name: cls
    for cls in (
        EpochWise,
        RunningEpochWise,
        BatchWise,
        RunningBatchWise,
        SingleEpochRunningBatchWise,
    )
}
_BY_NAME["running"] = SingleEpochRunningBatchWise  # distengine's name since 0.1


def as_usage(usage: str | MetricUsage) -> MetricUsage:
    """The usage object for a usage or its name; a clear error for anything else."""
    if isinstance(usage, MetricUsage):
        return usage
    if isinstance(usage, str) and usage in _BY_NAME:
        return _BY_NAME[usage]()
    if isinstance(usage, str):
        raise ValueError(
            "usage should be '(Running)EpochWise.usage_name' or "
            f"'((SingleEpoch)Running)BatchWise.usage_name' (one of {sorted(_BY_NAME)}) "
            f"or a MetricUsage, got {usage!r}"
        )
    raise TypeError(
        f"Unhandled usage type {type(usage)}: usage must be a usage name or a MetricUsage"
    )
