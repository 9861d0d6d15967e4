"""How an engine stores and calls event handlers."""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from distengine.engine.events import EventEnum, EventFilter, Events
from distengine.engine.signature import check_signature

if TYPE_CHECKING:
    from distengine.engine.engine import Engine

#: Arguments an event passes to its handlers before the user's own.
EVENT_ARGS: dict[EventEnum, int] = {Events.EXCEPTION_RAISED: 1}


def observer(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark an EXCEPTION_RAISED handler as one that only observes (e.g. cleans up).

    An exception is swallowed when an EXCEPTION_RAISED handler is registered
    (the handler decides, as in PyTorch-Ignite), unless every such handler is
    an observer: then it is re-raised after them.

    Example::

        @observer
        def close_files(engine, error): ...
    """
    fn.__distengine_observer__ = True
    return fn


def is_observer(fn: Callable[..., Any]) -> bool:
    return bool(getattr(fn, "__distengine_observer__", False))


class HandlerRecord:
    """A handler as registered: the callable, its extra arguments and its filter."""

    __slots__ = ("fn", "args", "kwargs", "with_engine", "filter", "__weakref__")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        with_engine: bool,
        event_filter: EventFilter | None,
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.with_engine = with_engine
        self.filter = event_filter


def takes_engine(fn: Callable[..., Any], n_event_args: int, args: tuple, kwargs: dict) -> bool:
    """Whether ``fn`` wants the engine first; raise if it fits neither signature.

    A handler is called as ``fn(engine, *event_args, *args, **kwargs)`` or,
    when it takes no engine, ``fn(*event_args, *args, **kwargs)``.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have no signature: assume the engine
        return True
    event_args = (None,) * n_event_args
    for with_engine in (True, False):
        try:
            signature.bind(*((None,) if with_engine else ()), *event_args, *args, **kwargs)
            return with_engine
        except TypeError:
            continue
    raise ValueError(
        f"handler {getattr(fn, '__qualname__', fn)!r} has signature {signature}, which accepts "
        f"neither (engine, {n_event_args} event arg(s), *{args!r}, **{kwargs!r}) nor the same "
        "without the engine"
    )


def check_process_function(fn: Any) -> None:
    """``fn`` can be called as ``fn(engine, batch)``; else a ValueError naming its parameters."""
    if not callable(fn):
        raise ValueError(
            "Engine must be given a processing function in order to run: a callable "
            f"(engine, batch) -> output, got {fn!r}"
        )
    check_signature(fn, "process function", ("engine", "batch"))


class RemovableEventHandle:
    """What ``add_event_handler`` returns: removes the handler, also as a context manager.

    It holds the engine and the handler weakly (as PyTorch-Ignite's does):
    ``handle.engine()`` and ``handle.handler()`` give them, or None once the
    engine is gone or the handler removed.

    Example::

        with trainer.add_event_handler(Events.ITERATION_COMPLETED, log):
            trainer.run(data)          # ``log`` is removed afterwards
    """

    def __init__(self, engine: Engine, entries: list[tuple[EventEnum, HandlerRecord]]) -> None:
        self._engine = weakref.ref(engine)
        self._entries = [(event, weakref.ref(record)) for event, record in entries]

    @property
    def engine(self) -> Callable[[], Engine | None]:
        """A weak reference to the engine: call it for the engine (None once it is gone)."""
        return self._engine

    @property
    def handler(self) -> Callable[[], Callable[..., Any] | None]:
        """A weak reference to the handler: call it for the handler (None once removed)."""
        return lambda: next((r.fn for r in self._records()), None)

    def _records(self) -> list[HandlerRecord]:
        return [record for _, ref in self._entries if (record := ref()) is not None]

    def remove(self) -> None:
        """Remove the handler from every event it was added to (no-op if already gone)."""
        engine = self._engine()
        if engine is None:
            return
        for event, ref in self._entries:
            record = ref()
            records = engine._handlers.get(event, [])
            if record is not None and record in records:
                records.remove(record)

    def __enter__(self) -> RemovableEventHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def handler_lists(engine: Engine) -> dict[EventEnum, list[HandlerRecord]]:
    """``engine``'s handlers by event: the live lists, in call order.

    For tools that time or wrap every handler (the time profilers): insert at
    0 to run first, append to run last, set ``record.fn`` to wrap one.

    Example::

        for event, records in handler_lists(trainer).items():
            print(event, [r.fn for r in records])
    """
    return engine._handlers
