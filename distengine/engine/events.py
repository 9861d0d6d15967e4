"""Events an :class:`~distengine.engine.Engine` fires, and filters on them.

Every event is a member of an :class:`EventEnum`. Calling a member returns the
same event with a filter, and ``|`` joins events into an :class:`EventsList`::

    @trainer.on(Events.ITERATION_COMPLETED(every=100))
    def log(engine): ...

    @trainer.on(Events.STARTED | Events.EPOCH_COMPLETED(once=[2, 5]))
    def save(): ...

Custom events are members of a user's ``EventEnum`` subclass (or plain strings),
registered with ``engine.register_events`` and fired with ``engine.fire_event``.
Every event, filtered or not, is a :class:`CallableEventWithFilter` (PyTorch-Ignite's
name for it).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Iterator, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any, Union

from distengine.engine.signature import check_signature

if TYPE_CHECKING:
    from distengine.engine.engine import Engine

EventFilter = Callable[["Engine", int], bool]


class CallableEventWithFilter:
    """An event and its filter (``None``: every firing passes): what a handler is added for.

    The common base of every :class:`EventEnum` member (no filter) and of the
    :class:`FilteredEvent` that calling a member makes; PyTorch-Ignite's name,
    for ``isinstance`` checks. An event and the same event with a filter
    compare equal, as in Ignite.

    Example::

        assert isinstance(Events.STARTED, CallableEventWithFilter)
        assert isinstance(Events.EPOCH_COMPLETED(every=2), CallableEventWithFilter)
        assert Events.EPOCH_COMPLETED(every=2) == Events.EPOCH_COMPLETED
    """

    __slots__ = ()

    def __or__(self, other: AnyEvent) -> EventsList:
        return EventsList([self]) | other  # type: ignore[list-item]


class EventEnum(CallableEventWithFilter, Enum):
    """Base class of event enumerations; subclass it for custom events.

    Example::

        class BackpropEvents(EventEnum):
            BACKWARD_STARTED = "backward_started"

        engine.register_events(*BackpropEvents)
        engine.fire_event(BackpropEvents.BACKWARD_STARTED)
    """

    def __call__(
        self,
        event_filter: EventFilter | None = None,
        every: int | None = None,
        once: int | Sequence[int] | None = None,
        before: int | None = None,
        after: int | None = None,
    ) -> FilteredEvent:
        """This event, fired only when the filter passes (see :func:`make_filter`)."""
        return FilteredEvent(self, make_filter(event_filter, every, once, before, after))

    @property
    def event(self) -> EventEnum:
        """The unfiltered event (itself); mirrors :attr:`FilteredEvent.event`."""
        return self

    @property
    def filter(self) -> None:
        """No filter: every firing passes."""
        return None


class Events(EventEnum):
    """The events every engine fires, in the order of one run.

    ``STARTED``, then per epoch ``EPOCH_STARTED``, per iteration
    ``GET_BATCH_STARTED``, ``GET_BATCH_COMPLETED``, ``ITERATION_STARTED``,
    ``ITERATION_COMPLETED``; ``EPOCH_COMPLETED``; finally ``COMPLETED``.
    ``DATALOADER_STOP_ITERATION`` fires when the data ends and is restarted,
    ``TERMINATE_SINGLE_EPOCH`` / ``TERMINATE`` after ``terminate_epoch()`` /
    ``terminate()`` (or ``max_iters`` reached inside an epoch), ``INTERRUPT``
    after ``interrupt()``, and ``EXCEPTION_RAISED`` (with the exception) on an
    error. Without data (``run(epoch_length=n)``) the three data events do not fire.
    """

    STARTED = "started"
    EPOCH_STARTED = "epoch_started"
    GET_BATCH_STARTED = "get_batch_started"
    GET_BATCH_COMPLETED = "get_batch_completed"
    ITERATION_STARTED = "iteration_started"
    ITERATION_COMPLETED = "iteration_completed"
    DATALOADER_STOP_ITERATION = "dataloader_stop_iteration"
    EXCEPTION_RAISED = "exception_raised"
    TERMINATE_SINGLE_EPOCH = "terminate_single_epoch"
    TERMINATE = "terminate"
    INTERRUPT = "interrupt"
    EPOCH_COMPLETED = "epoch_completed"
    COMPLETED = "completed"


class FilteredEvent(CallableEventWithFilter):
    """An event with a filter ``(engine, count) -> bool``; made by calling an event.

    ``count`` is the engine's counter for the event: ``state.iteration`` for
    iteration events, ``state.epoch`` for epoch and run events, and for
    custom events the ``state`` attribute given to ``register_events(...,
    event_to_attr=)``, else the number of firings so far.
    """

    __slots__ = ("event", "filter")

    def __init__(self, event: EventEnum, event_filter: EventFilter) -> None:
        self.event = event
        self.filter = event_filter

    @property
    def name(self) -> str:
        """The event's name (``"EPOCH_COMPLETED"``)."""
        return self.event.name

    @property
    def value(self) -> Any:
        """The event's value (``"epoch_completed"``)."""
        return self.event.value

    def __call__(self, *args: Any, **kwargs: Any) -> FilteredEvent:
        raise ValueError(f"{self!r} already has a filter; an event takes one filter call")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CallableEventWithFilter):
            return self.event is getattr(other, "event", other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.event)

    def __repr__(self) -> str:
        return f"{self.event!r} with filter {self.filter!r}"


AnyEvent = Union[EventEnum, FilteredEvent, "EventsList"]


class EventsList:
    """Several events that trigger the same handler: ``Events.STARTED | Events.COMPLETED``."""

    def __init__(self, events: Sequence[EventEnum | FilteredEvent] = ()) -> None:
        self._events: list[EventEnum | FilteredEvent] = []
        for event in events:
            self._append(event)

    def _append(self, event: AnyEvent) -> None:
        if isinstance(event, EventsList):
            self._events.extend(event)
        elif isinstance(event, (EventEnum, FilteredEvent)):
            self._events.append(event)
        else:
            raise TypeError(
                f"Argument event should be Events or CallableEventWithFilter, got {event!r}"
            )

    def __or__(self, other: AnyEvent) -> EventsList:
        joined = EventsList(self._events)
        joined._append(other)
        return joined

    def __iter__(self) -> Iterator[EventEnum | FilteredEvent]:
        return iter(self._events)

    def __len__(self) -> int:
        return len(self._events)

    def __getitem__(self, index: int) -> EventEnum | FilteredEvent:
        return self._events[index]

    def __repr__(self) -> str:
        return " | ".join(map(repr, self._events))


def make_filter(
    event_filter: EventFilter | None = None,
    every: int | None = None,
    once: int | Sequence[int] | None = None,
    before: int | None = None,
    after: int | None = None,
) -> EventFilter:
    """Build the filter for ``Events.X(...)``, with PyTorch-Ignite's semantics.

    Accepted: ``event_filter`` alone; ``once`` (an int or a list) alone;
    ``every`` and/or ``before``/``after`` (exclusive bounds) together.
    ``every=k`` alone fires at multiples of k; with ``after=a`` and/or
    ``before=b`` it fires at ``a + 1, a + 1 + k, ...`` below ``b`` (``after``
    defaults to 0, so ``every=5, before=25`` fires at 1, 6, 11, 16, 21).
    ``every`` and ``once`` must be positive ints, ``before``/``after`` ints >= 0.
    These built-in filters depend on the count only and carry ``next_firing(count)``,
    the next count they pass (None: never), which the engine's board uses to agree on
    running values just before a handler reads them.
    """
    given = {
        k: v
        for k, v in dict(
            event_filter=event_filter, every=every, once=once, before=before, after=after
        ).items()
        if v is not None
    }
    alone = event_filter is not None or once is not None
    if not given or (alone and len(given) > 1):
        raise ValueError(
            "Only one of the input arguments should be specified, except before, after and "
            "every (which combine): event_filter, once, or every/before/after; got "
            f"{sorted(given) or 'none'}"
        )
    if alone:
        if event_filter is not None:
            if not callable(event_filter):
                raise TypeError(
                    "Argument event_filter should be a callable (engine, count) -> bool, "
                    f"got {event_filter!r}"
                )
            check_signature(event_filter, "event_filter", ("engine", "event"))
            return event_filter
        return _once_filter(once)
    _check_int("every", every, minimum=1)
    _check_int("before", before, minimum=0)
    _check_int("after", after, minimum=0)
    return _range_filter(every, before, after)


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


def _check_int(name: str, value: Any, minimum: int) -> None:
    if value is not None and not _is_int(value, minimum):
        bound = "than zero" if minimum == 1 else "or equal to zero"
        raise ValueError(
            f"Argument {name} should be integer and greater {bound} (an int >= {minimum}), "
            f"got {value!r}"
        )


def _once_filter(once: int | Sequence[int]) -> EventFilter:
    iterable = isinstance(once, Iterable) and not isinstance(once, str)
    values = list(once) if iterable else [once]
    if not values or not all(_is_int(value, 1) for value in values):
        raise ValueError(
            "Argument once should either be a positive integer or a list of positive integers, "
            f"got {once!r}"
        )
    wanted = frozenset(values)

    def once_filter(engine: Engine, count: int) -> bool:
        return count in wanted

    once_filter.__qualname__ = f"once={sorted(wanted)}"
    once_filter.next_firing = lambda count: min((w for w in wanted if w > count), default=None)  # type: ignore[attr-defined]
    return once_filter


def _range_filter(every: int | None, before: int | None, after: int | None) -> EventFilter:
    lo = after if after is not None else 0
    hi = before if before is not None else float("inf")
    step = every or 1
    if every is not None and before is None and after is None:

        def every_filter(engine: Engine, count: int) -> bool:
            return count % step == 0

        every_filter.__qualname__ = f"every={every}"
        every_filter.next_firing = lambda count: (count // step + 1) * step  # type: ignore[attr-defined]
        return every_filter

    def range_filter(engine: Engine, count: int) -> bool:
        return lo < count < hi and (count - lo - 1) % step == 0

    def next_firing(count: int) -> int | None:
        first = max(count + 1, lo + 1)
        first += (step - (first - lo - 1) % step) % step
        return first if first < hi else None

    range_filter.__qualname__ = f"every={every}, after={after}, before={before}"
    range_filter.next_firing = next_firing  # type: ignore[attr-defined]
    return range_filter
