"""The event-driven engine: runs a process function over data and fires events."""

from __future__ import annotations

import logging
import time
import warnings
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from distengine.engine import run_control as rc
from distengine.engine.board import Board, same_length_everywhere
from distengine.engine.events import AnyEvent, EventEnum, Events, EventsList, FilteredEvent
from distengine.engine.handlers import (
    EVENT_ARGS,
    HandlerRecord,
    RemovableEventHandle,
    check_process_function,
    is_observer,
    takes_engine,
)
from distengine.engine.resume import DataFlow, capture_rng, data_length, is_one_shot
from distengine.engine.saved_state import SavedState
from distengine.engine.state import State

ProcessFunction = Callable[["Engine", Any], Any]

_END_OF_EPOCH = object()
_MID_ITERATION = (
    Events.GET_BATCH_STARTED,
    Events.GET_BATCH_COMPLETED,
    Events.DATALOADER_STOP_ITERATION,
    Events.ITERATION_STARTED,
)


def _readings_of(engine_ref: weakref.ref[Engine]) -> Callable[[int], int | None]:
    """The board's ``readers``: the engine's :meth:`Engine._next_reading`, held weakly."""

    def readers(after: int) -> int | None:
        engine = engine_ref()
        return engine._next_reading(after) if engine is not None else None

    return readers


class Engine(SavedState):
    """Runs ``process_function(engine, batch)`` over data, firing :class:`Events`.

    Only events that have handlers cost anything. Stopping follows
    PyTorch-Ignite: :meth:`terminate` ends the run (a later ``run()`` starts
    the next epoch on a new pass over the data), :meth:`interrupt` pauses it
    (a later ``run()`` goes on with the next batch), :meth:`terminate_epoch`
    ends the epoch. A run saved with :meth:`state_dict` at any iteration and
    restored with :meth:`load_state_dict` resumes batch for batch. Its state
    differs per rank (data position, generators, metrics), so a checkpoint
    keeps every rank's (``checkpoint_per_rank``).

    Example::

        def train_step(engine, batch):
            x, y = batch
            ...
            return loss.item()

        trainer = Engine(train_step)

        @trainer.on(Events.EPOCH_COMPLETED(every=2))
        def validate():
            evaluator.run(val_loader)

        trainer.run(train_loader, max_epochs=10)
    """

    #: Checkpoints save every rank's state (generators, data position) and give each its own.
    checkpoint_per_rank = True
    #: PyTorch-Ignite's switch: set it to False and :meth:`interrupt` raises a RuntimeError.
    interrupt_resume_enabled = True

    def __init__(self, process_function: ProcessFunction) -> None:
        check_process_function(process_function)
        self._process_function = process_function
        self._handlers: dict[EventEnum, list[HandlerRecord]] = {e: [] for e in Events}
        self._fire_counts: dict[EventEnum, int] = {}
        self.state = State()
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.last_event_name: EventEnum | None = None
        self._firing: EventEnum | None = None
        self.should_terminate: bool | str = False
        self.should_terminate_single_epoch: bool | str = False
        self.should_interrupt = False
        #: Names of ``state`` attributes kept in :meth:`state_dict` (PyTorch-Ignite's list).
        self.state_dict_user_keys: list[str] = []
        self._terminated = False  # the last run ended by terminate() (or max_iters) mid-epoch
        self._interrupted = False  # the last run was interrupted: run() goes on in place
        self._in_epoch = False
        self._epoch_start_iteration = 0
        self._flow: DataFlow | None = None
        self._next_data: Iterable[Any] | None = None  # set_data() outside a run
        self._running = False
        self._restored: dict[str, Any] | None = None
        self._pending_restore: tuple[dict[str, Any] | None, dict[str, Any]] | None = None
        self._empty_restart_at: int | None = None
        self._exhausted = False  # the data's pass ended; the next batch starts a new one
        self._statefuls: dict[str, Any] = {}
        #: The consensus board: per-iteration checks and running values agreed across ranks
        #: (see :mod:`distengine.engine.board`); handlers register on it, the run loop drives it.
        self.board = Board()
        self.board.readers = _readings_of(weakref.ref(self))  # no cycle: freed when unused

    @property
    def process_function(self) -> ProcessFunction:
        """The ``(engine, batch) -> output`` callable this engine runs (e.g. a TrainStep)."""
        return self._process_function

    @property
    def epoch_iteration(self) -> int:
        """Iterations done in the current epoch (1-based while an iteration runs)."""
        return self.state.iteration - self._epoch_start_iteration

    # ----------------------------------------------------------------- handlers
    def add_event_handler(
        self, event: AnyEvent, handler: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> RemovableEventHandle:
        """Call ``handler`` on ``event`` (filtered or a ``|`` list); returns a removable handle.

        ``handler`` is called as ``handler(engine, *args, **kwargs)`` or, if it
        takes no engine, ``handler(*args, **kwargs)``.
        """
        events = list(event) if isinstance(event, EventsList) else [event]
        entries = []
        for one in events:
            base = one.event if isinstance(one, FilteredEvent) else one
            if base not in self._handlers:
                raise ValueError(
                    f"Event {base!r} is not a valid event for this {type(self).__name__}: "
                    "register custom events first with engine.register_events(...)"
                )
            with_engine = takes_engine(handler, EVENT_ARGS.get(base, 0), args, kwargs)
            record = HandlerRecord(handler, args, kwargs, with_engine, getattr(one, "filter", None))
            self._handlers[base].append(record)
            entries.append((base, record))
            if base in (Events.ITERATION_COMPLETED, Events.ITERATION_STARTED):
                join_board = getattr(handler, "join_board", None)
                if callable(join_board):  # its board slot now, on every rank alike
                    join_board(self)
        return RemovableEventHandle(self, entries)

    def on(self, event: AnyEvent, *args: Any, **kwargs: Any) -> Callable[[Callable], Callable]:
        """Decorator form of :meth:`add_event_handler`: ``@engine.on(Events.STARTED)``."""

        def decorator(handler: Callable[..., Any]) -> Callable[..., Any]:
            self.add_event_handler(event, handler, *args, **kwargs)
            return handler

        return decorator

    def has_event_handler(self, handler: Callable[..., Any], event: AnyEvent | None = None) -> bool:
        """Whether ``handler`` is registered (for ``event``, or for any event).

        Handlers compare with ``==``, so a bound method such as ``metric.completed``
        is found even though each attribute access makes a new method object.
        """
        if event is None:
            return any(r.fn == handler for rs in self._handlers.values() for r in rs)
        base = event.event if isinstance(event, FilteredEvent) else event
        return any(r.fn == handler for r in self._handlers.get(base, []))

    def remove_event_handler(self, handler: Callable[..., Any], event: AnyEvent) -> None:
        """Remove every registration of ``handler`` (compared with ``==``) for ``event``;
        a ValueError if there is none."""
        base = event.event if isinstance(event, FilteredEvent) else event
        if base not in self._handlers:
            raise ValueError(
                f"Input event name {base!r} does not exist: not an Events member or a "
                "registered custom event"
            )
        records = self._handlers[base]
        kept = [r for r in records if r.fn != handler]
        if len(kept) == len(records):
            raise ValueError(f"Input handler {handler!r} is not registered for {base!r}")
        records[:] = kept

    def register_events(
        self, *events: EventEnum | str, event_to_attr: dict[Any, str] | None = None
    ) -> None:
        """Allow handlers on custom events: members of an :class:`EventEnum` subclass, or strings.

        ``event_to_attr`` names the ``state`` attribute that counts an event
        for its filters (you update it; it starts at 0); without it, filters
        count the event's firings. A string event takes no filter (as in Ignite).

        Example::

            engine.register_events(*TbpttEvents, event_to_attr={TbpttEvents.STEP: "step"})
            engine.register_events("backward_started")
            engine.add_event_handler("backward_started", log_grads)
        """
        if event_to_attr is not None and not isinstance(event_to_attr, dict):
            raise ValueError(f"event_to_attr must be a dict, got {type(event_to_attr).__name__}")
        for index, event in enumerate(events):
            if not isinstance(event, (EventEnum, str)):
                raise TypeError(
                    f"Value at {index} of event_names should be a str or EventEnum member, "
                    f"got {event!r}"
                )
        for event in events:
            self._handlers.setdefault(event, [])
            if event_to_attr and event in event_to_attr:
                attr = event_to_attr[event]
                self.state.event_to_attr[event] = attr
                if not hasattr(self.state, attr):
                    setattr(self.state, attr, 0)

    def has_registered_events(self, event: Any) -> bool:
        """Whether handlers may be added for ``event`` (built-in or registered)."""
        return getattr(event, "event", event) in self._handlers

    def fire_event(self, event: EventEnum | str) -> None:
        """Fire a registered custom event; its filters count how often it has fired."""
        if event not in self._handlers:
            raise ValueError(
                f"Event {event!r} is not a valid event for this {type(self).__name__}: "
                "register it with engine.register_events(...)"
            )
        self._fire_counts[event] = self._fire_counts.get(event, 0) + 1
        self._fire(event)

    def _fire(self, event: EventEnum, *event_args: Any) -> None:
        self.last_event_name = self._firing = event
        for record in tuple(self._handlers[event]):
            if record.filter is not None and not record.filter(self, self._count(event)):
                continue
            if record.with_engine:
                record.fn(self, *event_args, *record.args, **record.kwargs)
            else:
                record.fn(*event_args, *record.args, **record.kwargs)
        self._firing = None

    def _count(self, event: EventEnum) -> int:
        attr = self.state.counter_for(event)
        return getattr(self.state, attr, 0) if attr else self._fire_counts.get(event, 0)

    def _fire_checked(self, event: EventEnum, where: str) -> None:
        """Fire ``event`` (if it has handlers), then act on a stop a handler asked for."""
        if self._handlers[event]:
            self._fire(event)
            self._check_stop(where)

    def _check_stop(self, where: str) -> None:
        stop = rc.stop_for(self, where)
        if stop is not None:
            raise stop

    # ----------------------------------------------------------------- control
    def terminate(self, skip_completed: bool = False) -> None:
        """End the run right after the current event (as PyTorch-Ignite does).

        Fires ``TERMINATE`` then, unless ``skip_completed``, ``COMPLETED``;
        ``EPOCH_COMPLETED`` is not fired for an epoch cut short. Called in
        ``ITERATION_STARTED``, the batch is not processed. A later ``run()``
        starts the next epoch on a new pass over the data (the rest of the cut
        epoch is skipped); to stop and go on in place, use :meth:`interrupt`.
        :meth:`state_dict`, taken in ``TERMINATE`` or after the run returned,
        still holds the exact position: loaded into an engine, it resumes with
        the next batch.
        """
        self.should_terminate = "skip_completed" if skip_completed else True

    def terminate_epoch(self, skip_epoch_completed: bool = False) -> None:
        """End the current epoch right after the current event (inside an iteration).

        Fires ``TERMINATE_SINGLE_EPOCH`` then, unless ``skip_epoch_completed``,
        ``EPOCH_COMPLETED``; the next epoch starts on a new pass over the data.
        Called on ``STARTED`` or ``EPOCH_STARTED`` it is a RuntimeError.
        """
        self.should_terminate_single_epoch = (
            "skip_epoch_completed" if skip_epoch_completed else True
        )

    def interrupt(self) -> None:
        """Pause the run at the end of the current iteration; ``run()`` then goes on in place.

        Fires ``INTERRUPT`` and returns from ``run()`` (no ``COMPLETED``).
        The next ``run()`` continues with the next batch, without firing
        ``STARTED`` again, as if the run had never stopped. Called in
        ``STARTED``, ``EPOCH_STARTED`` or ``EPOCH_COMPLETED`` it pauses right
        after that event.

        Example::

            trainer.add_event_handler(Events.ITERATION_COMPLETED(once=100),
                                      lambda e: e.interrupt())
            trainer.run(loader, max_epochs=3)   # returns at iteration 100
            trainer.run(loader, max_epochs=3)   # iterations 101, 102, ...
        """
        if not self.interrupt_resume_enabled:
            raise RuntimeError(
                "Engine 'interrupt/resume' feature is disabled: interrupt() needs "
                f"{type(self).__name__}.interrupt_resume_enabled = True (the default)"
            )
        if self._firing in _MID_ITERATION:
            warnings.warn(
                f"interrupt() called in {self._firing.name} takes effect at the end of this "
                "iteration, after ITERATION_COMPLETED, as PyTorch-Ignite documents (its 0.5.5 "
                "code stops right after the event, before the batch is processed)",
                stacklevel=2,
            )
        self.should_interrupt = True

    def set_data(self, data: Iterable[Any]) -> None:
        """Run over ``data`` from the next batch on (a new pass over it); the epoch length stays.

        Outside a run, ``data`` is what the next ``run()`` without data runs
        over. A checkpoint saved after the switch resumes over the data
        passed to that ``run()``: pass ``data`` again.

        Example::

            @trainer.on(Events.ITERATION_COMPLETED(once=5000))
            def switch():
                trainer.set_data(fine_tuning_loader)
        """
        if not isinstance(data, Iterable):
            raise TypeError(
                f"Argument data should be iterable (a list, a DataLoader), got {data!r}"
            )
        self.state.dataloader = data
        self._flow = DataFlow(data)
        if not self._running:
            self._next_data = data

    # --------------------------------------------------------------------- run
    def run(
        self,
        data: Iterable[Any] | None = None,
        max_epochs: int | None = None,
        max_iters: int | None = None,
        epoch_length: int | None = None,
    ) -> State:
        """Run over ``data`` until ``max_epochs`` (default 1) or ``max_iters``.

        As in PyTorch-Ignite: a finished run starts anew; an unfinished one
        (interrupted, terminated or restored) goes on, with ``max_epochs`` /
        ``max_iters`` raising its limit; a limit below what the run reached,
        or a switch between the two kinds, is a ValueError (set
        ``engine.state.max_epochs = None`` first to start anew).
        ``epoch_length`` defaults to ``len(data)``; data without ``len``
        learns it at the end of its first pass. Without ``data`` (and no run
        to go on), ``epoch_length`` batches of None are processed per epoch.
        A one-shot iterator must hold enough batches for the whole run.

        An exception fires ``EXCEPTION_RAISED(engine, error)``; it is re-raised
        unless a handler (other than an :func:`observer`) is registered for it.
        """
        if data is not None and not isinstance(data, Iterable):
            raise TypeError(
                f"Argument data should be iterable (a list, a DataLoader), got {data!r}"
            )
        rc.check_run_args(max_epochs, epoch_length, max_iters)
        rc.apply_limits(self.state, max_epochs, max_iters)
        data, self._next_data = (data if data is not None else self._next_data), None
        interrupted = self._interrupted
        if self._goes_on():
            self._prepare_resume(data, epoch_length)
        else:
            interrupted = False
            self._prepare_fresh(data, max_epochs, epoch_length, max_iters)
        self._exhausted = self._exhausted and interrupted  # a new run starts a new iterator
        self._interrupted = self._terminated = False
        self.should_terminate = self.should_terminate_single_epoch = False
        self.should_interrupt = False
        self._running = True
        try:
            self._run_epochs(started=not interrupted)
            self._flow.park()  # type: ignore[union-attr]  # no idle loader workers left behind
        except Exception as error:
            self.board.drop()
            handlers = list(self._handlers[Events.EXCEPTION_RAISED])
            self._fire(Events.EXCEPTION_RAISED, error)
            if all(is_observer(record.fn) for record in handlers):
                raise
        finally:
            self._running = False
        return self.state

    def _goes_on(self) -> bool:
        """Whether ``run`` continues the current run (else it starts a new one)."""
        s = self.state
        if s.max_epochs is None and s.max_iters is None:
            return False  # never run, or reset by the user to start anew
        if self._interrupted:
            return True
        if self._terminated and self._in_epoch:  # Ignite: the cut epoch is not resumed
            self._in_epoch, self._pending_restore = False, None
            if self._flow is not None:
                self._flow.close()
        return not self._is_done()

    def is_done(self, max_epochs: int | None = None) -> bool:
        """Whether the run (or a restored one) has reached its end: ``run()`` would start anew.

        ``max_epochs`` asks about a longer run instead of the stored one.
        """
        s = self.state
        if self._interrupted:
            return False
        open_epoch = self._in_epoch and not self._terminated
        if max_epochs is not None:
            return not open_epoch and s.epoch >= max_epochs
        if s.max_iters is not None:
            return s.iteration >= s.max_iters
        return s.max_epochs is not None and not open_epoch and s.epoch >= s.max_epochs

    def _is_done(self) -> bool:
        s = self.state
        if s.max_iters is not None:
            return s.iteration >= s.max_iters
        return not self._in_epoch and s.max_epochs is not None and s.epoch >= s.max_epochs

    def _prepare_fresh(self, data: Iterable[Any] | None, max_epochs, epoch_length, max_iters):
        s = self.state
        if epoch_length is None:
            epoch_length = data_length(data) if data is not None else s.epoch_length
        if data is None and epoch_length is None:
            raise ValueError(
                "epoch_length should be provided if data is None: run(epoch_length=n) "
                "processes n batches of None per epoch"
            )
        s.iteration = s.epoch = 0
        s.max_iters = max_iters
        s.max_epochs = None if max_iters is not None else (max_epochs or 1)
        s.epoch_length = epoch_length
        if s.epoch_length == 0:
            rc.check_empty_shard(max_iters)
        s.dataloader, s.output, s.batch = data, None, None
        self._in_epoch = False
        self._flow = DataFlow(data if data is not None else rc.NoData(epoch_length))
        self._restored = self._pending_restore = None

    def _prepare_resume(self, data: Iterable[Any] | None, epoch_length: int | None) -> None:
        s = self.state
        if epoch_length is not None and s.epoch_length not in (None, epoch_length):
            raise ValueError(
                f"Argument epoch_length should be same as in the state: got {epoch_length}, "
                f"the resumed run's is {s.epoch_length}"
            )
        if data is None and self._restored is None and self._flow is not None:
            data = s.dataloader  # go on over the data in use
        if s.epoch_length is None:
            s.epoch_length = epoch_length if epoch_length is not None else data_length(data)
        if data is None and s.epoch_length is None:
            raise ValueError(
                "epoch_length should be provided if data is None: run(epoch_length=n) "
                "processes n batches of None per epoch"
            )
        source = data if data is not None else rc.NoData(s.epoch_length)  # type: ignore[arg-type]
        if self._restored is not None:
            s.dataloader, self._flow = data, DataFlow(source)
            rng = self._restored["rng"]  # None: this rank keeps its own generators (another world)
            self._pending_restore = (self._restored["data_position"], rng or capture_rng(data))
            self._restored = None
        elif self._flow is None or (data is not None and self._flow.data is not data):
            if self._interrupted and s.dataloader is not None:
                warnings.warn(
                    "run() after interrupt() got other data: the run goes on at the same "
                    "position in the new data (PyTorch-Ignite would keep the old data)",
                    stacklevel=3,
                )
            position = self._flow.position() if self._flow else None
            s.dataloader, self._flow = data, DataFlow(source)
            self._pending_restore = (position, capture_rng(data))

    def _restore_position(self) -> None:
        """Put data and generators where the saved (or swapped) run stood, as it goes on."""
        if self._pending_restore is not None:
            position, saved_rng = self._pending_restore
            self._pending_restore = None
            self._flow.restore(position, self.state.iteration, saved_rng)  # type: ignore[union-attr]

    def _run_epochs(self, started: bool) -> None:
        s = self.state
        run_start = time.perf_counter()
        try:
            if started:
                self._fire_checked(Events.STARTED, rc.AFTER_STARTED)
            self._restore_position()
            self._start_board(resuming=not started)
            while not self._is_done():
                self._run_epoch()
            if self._in_epoch:  # max_iters reached inside an epoch (Ignite: a terminate)
                self.should_terminate = True
                raise rc.Terminate()
        except rc.Terminate:
            self._terminated = True
            self.board.settle()
            self._fire(Events.TERMINATE)
            if self.should_terminate == "skip_completed":
                return
        except rc.Interrupt:
            self.should_interrupt, self._interrupted = False, True
            self._fire(Events.INTERRUPT)
            return
        s.times["COMPLETED"] = time.perf_counter() - run_start
        self.board.complete(s.iteration)
        self._fire(Events.COMPLETED)
        s.times["COMPLETED"] = time.perf_counter() - run_start  # with its handlers, as Ignite

    def _start_board(self, resuming: bool) -> None:
        """The board's run: from the next iteration to the last this rank will reach."""
        s = self.state
        last = s.max_iters
        if last is None and s.max_epochs is not None and s.epoch_length is not None:
            last = s.max_epochs * s.epoch_length
        same = same_length_everywhere(s.dataloader)
        self.board.start(s.iteration + 1, last, same, resuming, s.epoch_length)

    def _next_reading(self, after: int) -> int | None:
        """The next iteration after ``after`` at which a handler with a count filter
        (``every``, ``once``, ``before``, ``after``) fires on ``ITERATION_COMPLETED``."""
        found = None
        for record in self._handlers[Events.ITERATION_COMPLETED]:
            next_firing = getattr(record.filter, "next_firing", None)
            if next_firing is not None:
                count = next_firing(after)
                if count is not None and (found is None or count < found):
                    found = count
        return found

    def _run_epoch(self) -> None:
        s = self.state
        epoch_start = time.perf_counter()
        if not self._in_epoch:
            s.epoch += 1
            self._epoch_start_iteration = s.iteration
            self._in_epoch = True
            self._fire_checked(Events.EPOCH_STARTED, rc.AFTER_EPOCH_STARTED)
        skip_completed = False
        try:
            self._run_iterations()
        except rc.TerminateEpoch:
            skip_completed = self.should_terminate_single_epoch == "skip_epoch_completed"
            self._fire(Events.TERMINATE_SINGLE_EPOCH)
            self._flow.close()  # type: ignore[union-attr]
            self._exhausted = False
        self._in_epoch = False
        s.times["EPOCH_COMPLETED"] = time.perf_counter() - epoch_start
        if self.board.active:
            self.board.end_epoch(s.iteration)  # values as of the epoch's last iteration
        if not skip_completed:
            self._fire(Events.EPOCH_COMPLETED)
            s.times["EPOCH_COMPLETED"] = time.perf_counter() - epoch_start  # with its handlers
        self.should_terminate_single_epoch = False
        self._check_stop(rc.AFTER_EPOCH)

    def _run_iterations(self) -> None:
        s, process, board = self.state, self._process_function, self.board
        handlers = self._handlers
        with_data = s.dataloader is not None  # Ignite: no data events without data
        get_started, get_completed, started, completed = (
            handlers[Events.GET_BATCH_STARTED] if with_data else (),
            handlers[Events.GET_BATCH_COMPLETED] if with_data else (),
            handlers[Events.ITERATION_STARTED],
            handlers[Events.ITERATION_COMPLETED],
        )
        while s.epoch_length is None or self.epoch_iteration < s.epoch_length:
            if get_started:
                self._fire(Events.GET_BATCH_STARTED)
                self._check_stop(rc.IN_ITERATION)
            batch = self._next_batch(with_data)
            if batch is _END_OF_EPOCH:
                return
            if get_completed:
                self._fire(Events.GET_BATCH_COMPLETED)
                self._check_stop(rc.IN_ITERATION)
            s.batch = batch
            s.iteration += 1
            if started:
                self._fire(Events.ITERATION_STARTED)
                self._check_stop(rc.IN_ITERATION)
            s.output = process(self, s.batch)  # a handler may have replaced state.batch
            if board.active:
                board.read(s.iteration)  # what the ranks agreed after the last iteration
            if completed:
                self._fire(Events.ITERATION_COMPLETED)
            if board.active:
                board.launch(s.iteration)  # what this iteration's handlers posted
            if self.should_terminate or self.should_terminate_single_epoch or self.should_interrupt:
                self._check_stop(rc.AFTER_ITERATION)
            if s.max_iters is not None and s.iteration >= s.max_iters:
                if s.epoch_length is None or self.epoch_iteration < s.epoch_length:
                    self.should_terminate = True  # inside an epoch: Ignite terminates
                    raise rc.Terminate()

    def _next_batch(self, with_data: bool) -> Any:
        """The next batch (restarting the data when it runs out), or the end of the epoch.

        As in Ignite, ``DATALOADER_STOP_ITERATION`` fires when a batch is asked
        of data whose pass has ended (so at the start of every epoch after the
        first over sized data), before the new pass begins.
        """
        s = self.state
        while True:
            if self._exhausted:
                self._exhausted = False
                if with_data:
                    self._fire_checked(Events.DATALOADER_STOP_ITERATION, rc.IN_ITERATION)
            flow = self._flow
            if flow.position() is None:  # type: ignore[union-attr]  # a new pass begins
                if with_data and s.dataloader is not flow.data:  # type: ignore[union-attr]
                    self._flow = flow = DataFlow(s.dataloader)  # swapped by a handler
                self._new_pass()
            try:
                batch = flow.next_batch(s.epoch, s.iteration)  # type: ignore[union-attr]
            except StopIteration:
                if not self._restart_data(with_data):
                    return _END_OF_EPOCH
                continue
            self._exhausted = flow.position() is None  # type: ignore[union-attr]  # pass ended
            return batch

    def _new_pass(self) -> None:
        """Called before a new pass over the data begins (not when a saved pass is reopened)."""

    def _restart_data(self, with_data: bool) -> bool:
        """The data ran out: learn the epoch length, or start a new pass. False ends the epoch."""
        s = self.state
        done_in_epoch = s.iteration - self._epoch_start_iteration
        if s.epoch_length is not None and with_data:
            self._fire_checked(Events.DATALOADER_STOP_ITERATION, rc.IN_ITERATION)
        if s.epoch_length is None:
            if done_in_epoch == 0 and rc.several_ranks() and not is_one_shot(s.dataloader):
                rc.check_empty_shard(s.max_iters)
                s.epoch_length = 0  # this rank's shard is empty; it still joins every event
                return False
            if done_in_epoch == 0:
                raise RuntimeError(
                    f"the data yielded no batch in epoch {s.epoch}: it is empty, or a one-shot "
                    "iterator already used up; pass a re-iterable (a list, a DataLoader) or "
                    "set epoch_length and give enough batches for the whole run"
                )
            s.epoch_length = done_in_epoch
            self._exhausted = True  # the next epoch says so, then starts a new pass
            return False
        if self._empty_restart_at == s.iteration:
            raise RuntimeError(
                f"the data ran out at iteration {s.iteration} (epoch {s.epoch}) and a new pass "
                "over it yielded nothing: a one-shot iterator cannot be restarted; give it "
                f"enough batches for max_epochs * epoch_length ({s.epoch_length}) iterations"
            )
        self._empty_restart_at = s.iteration
        return True
