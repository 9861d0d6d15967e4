"""The event-driven engine: runs a process function over data and fires events."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from distengine.distributed.env import get_rank, get_world_size, is_distributed
from distengine.engine.events import AnyEvent, EventEnum, Events, EventsList, FilteredEvent
from distengine.engine.handlers import (
    EVENT_ARGS,
    HandlerRecord,
    RemovableEventHandle,
    is_observer,
    takes_engine,
)
from distengine.engine.resume import DataFlow, capture_rng, data_length, is_one_shot
from distengine.engine.state import State

ProcessFunction = Callable[["Engine", Any], Any]

_STATE_DICT_KEYS = ("iteration", "epoch", "epoch_length", "max_epochs", "max_iters", "seed")
_PROCESS_KEY = "process_function"


def _several_ranks() -> bool:
    return is_distributed() and get_world_size() > 1


class Engine:
    """Runs ``process_function(engine, batch)`` over data, firing :class:`Events`.

    Only events that have handlers cost anything. ``run`` resumes where a
    terminated or restored run stopped, batch for batch (see :meth:`state_dict`).
    Its state differs per rank (data position, generators, metrics), so a
    checkpoint keeps every rank's (``checkpoint_per_rank``).

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

    def __init__(self, process_function: ProcessFunction) -> None:
        if not callable(process_function):
            raise TypeError(f"process_function must be callable, got {process_function!r}")
        self._process_function = process_function
        self._handlers: dict[EventEnum, list[HandlerRecord]] = {e: [] for e in Events}
        self._fire_counts: dict[EventEnum, int] = {}
        self.state = State()
        self.last_event_name: EventEnum | None = None
        self.should_terminate = False
        self.should_terminate_single_epoch = False
        self._skip_completed = False
        self._in_epoch = False
        self._epoch_start_iteration = 0
        self._flow: DataFlow | None = None
        self._restored: dict[str, Any] | None = None
        self._pending_restore: tuple[dict[str, Any] | None, dict[str, Any]] | None = None
        self._empty_restart_at: int | None = None
        self._statefuls: dict[str, Any] = {}

    @property
    def process_function(self) -> ProcessFunction:
        """The ``(engine, batch) -> output`` callable this engine runs (e.g. a TrainStep)."""
        return self._process_function

    @property
    def epoch_iteration(self) -> int:
        """Iterations done in the current epoch (1-based while an iteration runs)."""
        return self.state.iteration - self._epoch_start_iteration

    def register_stateful(self, name: str, obj: Any) -> None:
        """Keep ``obj.state_dict()`` in this engine's state dict under ``name``.

        For state that belongs to the run, such as the metrics attached to the
        engine (registered as ``"metrics"``): ``load_state_dict`` gives it
        back to ``obj``. The process function's state, if it has one, is
        kept under ``"process_function"`` without registering.

        Example::

            trainer.register_stateful("ema", ema_tracker)
        """
        if name in _STATE_DICT_KEYS or name == _PROCESS_KEY or not isinstance(name, str):
            raise ValueError(f"{name!r} cannot name engine state: it is taken or not a str")
        if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
            raise TypeError(f"{type(obj).__name__} has no state_dict/load_state_dict")
        self._statefuls[name] = obj

    def unregister_stateful(self, name: str) -> None:
        """Stop keeping ``name`` in this engine's state dict (no-op if it is not kept)."""
        self._statefuls.pop(name, None)

    def statefuls(self) -> dict[str, Any]:
        """The objects registered with :meth:`register_stateful`, by name."""
        return dict(self._statefuls)

    def _all_statefuls(self) -> dict[str, Any]:
        found = dict(self._statefuls)
        if hasattr(self._process_function, "state_dict"):
            found[_PROCESS_KEY] = self._process_function
        return found

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
                    f"unknown event {base!r}: register custom events first with "
                    "engine.register_events(...)"
                )
            with_engine = takes_engine(handler, EVENT_ARGS.get(base, 0), args, kwargs)
            record = HandlerRecord(handler, args, kwargs, with_engine, one.filter)
            self._handlers[base].append(record)
            entries.append((base, record))
        return RemovableEventHandle(self, entries)

    def on(self, event: AnyEvent, *args: Any, **kwargs: Any) -> Callable[[Callable], Callable]:
        """Decorator form of :meth:`add_event_handler`: ``@engine.on(Events.STARTED)``."""

        def decorator(handler: Callable[..., Any]) -> Callable[..., Any]:
            self.add_event_handler(event, handler, *args, **kwargs)
            return handler

        return decorator

    def has_event_handler(self, handler: Callable[..., Any], event: AnyEvent | None = None) -> bool:
        """Whether ``handler`` is registered (for ``event``, or for any event)."""
        if event is None:
            return any(r.fn is handler for rs in self._handlers.values() for r in rs)
        base = event.event if isinstance(event, FilteredEvent) else event
        return any(r.fn is handler for r in self._handlers.get(base, []))

    def remove_event_handler(self, handler: Callable[..., Any], event: AnyEvent) -> None:
        """Remove every registration of ``handler`` for ``event``; error if there is none."""
        base = event.event if isinstance(event, FilteredEvent) else event
        records = self._handlers.get(base, [])
        kept = [r for r in records if r.fn is not handler]
        if len(kept) == len(records):
            raise ValueError(f"{handler!r} is not registered for {base!r}")
        records[:] = kept

    def register_events(self, *events: EventEnum) -> None:
        """Allow handlers on custom events (members of an :class:`EventEnum` subclass)."""
        for event in events:
            if not isinstance(event, EventEnum):
                raise TypeError(f"custom events must be EventEnum members, got {event!r}")
            self._handlers.setdefault(event, [])

    def fire_event(self, event: EventEnum) -> None:
        """Fire a registered custom event; its filters count how often it has fired."""
        if event not in self._handlers:
            raise ValueError(f"unknown event {event!r}: register it with engine.register_events")
        self._fire_counts[event] = self._fire_counts.get(event, 0) + 1
        self._fire(event)

    def _fire(self, event: EventEnum, *event_args: Any) -> None:
        self.last_event_name = event
        for record in tuple(self._handlers[event]):
            if record.filter is not None and not record.filter(self, self._count(event)):
                continue
            if record.with_engine:
                record.fn(self, *event_args, *record.args, **record.kwargs)
            else:
                record.fn(*event_args, *record.args, **record.kwargs)

    def _count(self, event: EventEnum) -> int:
        attr = self.state.counter_for(event)
        return getattr(self.state, attr) if attr else self._fire_counts.get(event, 0)

    # ----------------------------------------------------------------- control
    def terminate(self, skip_completed: bool = False) -> None:
        """End the run after the current iteration (or after the current handler).

        Fires ``TERMINATE`` then, unless ``skip_completed``, ``COMPLETED``.
        ``EPOCH_COMPLETED`` is not fired for an epoch cut short. A later
        ``run()`` resumes from the next iteration.
        """
        self.should_terminate = True
        self._skip_completed = skip_completed

    def terminate_epoch(self) -> None:
        """End the current epoch after the current iteration.

        Fires ``TERMINATE_SINGLE_EPOCH`` then ``EPOCH_COMPLETED``; the next
        epoch starts on a new pass over the data.
        """
        self.should_terminate_single_epoch = True

    # --------------------------------------------------------------------- run
    def run(
        self,
        data: Iterable[Any] | None = None,
        max_epochs: int | None = None,
        epoch_length: int | None = None,
        max_iters: int | None = None,
    ) -> State:
        """Run over ``data`` until ``max_epochs`` (default 1) or ``max_iters``.

        ``epoch_length`` defaults to ``len(data)``; data without ``len`` learns
        it at the end of its first pass. A one-shot iterator must hold enough
        batches for the whole run: when a new pass yields nothing, the run
        fails with a RuntimeError. A state that has not finished (after
        ``terminate()`` or ``load_state_dict``) is resumed, not restarted.

        An exception fires ``EXCEPTION_RAISED(engine, error)``; it is re-raised
        unless a handler (other than an :func:`observer`) is registered for it.
        """
        data = self.state.dataloader if data is None else data
        if data is None:
            raise ValueError("run() needs data: pass an iterable such as a DataLoader or a list")
        _check_run_args(max_epochs, epoch_length, max_iters)
        if self._is_resumable(max_epochs, max_iters):
            self._prepare_resume(data, max_epochs, epoch_length, max_iters)
        else:
            self._prepare_fresh(data, max_epochs, epoch_length, max_iters)
        self.should_terminate = self.should_terminate_single_epoch = False
        try:
            self._run_epochs()
            self._flow.park()  # type: ignore[union-attr]  # no idle loader workers left behind
        except Exception as error:
            handlers = list(self._handlers[Events.EXCEPTION_RAISED])
            self._fire(Events.EXCEPTION_RAISED, error)
            if all(is_observer(record.fn) for record in handlers):
                raise
        return self.state

    def _is_resumable(self, max_epochs: int | None, max_iters: int | None) -> bool:
        """Unfinished (terminated or restored) state, judged against the limit now asked for."""
        s = self.state
        if s.max_epochs is None and s.max_iters is None:
            return False
        if max_epochs is not None:
            return self._in_epoch or s.epoch < max_epochs
        if max_iters is not None:
            return s.iteration < max_iters
        return not self._is_done()

    def is_done(self, max_epochs: int | None = None) -> bool:
        """Whether the run (or a restored one) has reached its end: ``run()`` would start anew.

        ``max_epochs`` asks about a longer run instead of the stored one.
        """
        if max_epochs is None:
            return self.state.max_epochs is not None and self._is_done()
        return not self._in_epoch and self.state.epoch >= max_epochs

    def _is_done(self) -> bool:
        s = self.state
        if self._in_epoch:
            return False
        if s.max_iters is not None:
            return s.iteration >= s.max_iters
        return s.max_epochs is not None and s.epoch >= s.max_epochs

    def _prepare_fresh(self, data: Iterable[Any], max_epochs, epoch_length, max_iters) -> None:
        s = self.state
        s.iteration = s.epoch = 0
        s.max_iters = max_iters
        s.max_epochs = None if max_iters is not None else (max_epochs or 1)
        s.epoch_length = epoch_length if epoch_length is not None else data_length(data)
        if s.epoch_length == 0:
            _check_empty_shard(max_iters)
        s.dataloader, s.output, s.batch = data, None, None
        self._in_epoch = False
        self._flow = DataFlow(data)
        self._restored = self._pending_restore = None

    def _prepare_resume(self, data: Iterable[Any], max_epochs, epoch_length, max_iters) -> None:
        s = self.state
        if max_epochs is not None:
            if max_epochs < s.epoch:
                raise ValueError(
                    f"max_epochs={max_epochs} is below the epoch already reached ({s.epoch})"
                )
            s.max_epochs = max_epochs
        if max_iters is not None:
            s.max_iters = max_iters
        if epoch_length is not None and s.epoch_length not in (None, epoch_length):
            raise ValueError(
                f"epoch_length={epoch_length} differs from the resumed run's {s.epoch_length}"
            )
        if s.epoch_length is None:
            s.epoch_length = epoch_length if epoch_length is not None else data_length(data)
        if self._restored is not None:
            s.dataloader, self._flow = data, DataFlow(data)
            rng = self._restored["rng"]  # None: this rank keeps its own generators (another world)
            self._pending_restore = (self._restored["data_position"], rng or capture_rng(data))
            self._restored = None
        elif self._flow is None or self._flow.data is not data:
            position = self._flow.position() if self._flow else None
            s.dataloader, self._flow = data, DataFlow(data)
            self._pending_restore = (position, capture_rng(data))

    def _restore_position(self) -> None:
        """Put data and generators where the saved (or swapped) run stood, as it goes on."""
        if self._pending_restore is not None:
            position, saved_rng = self._pending_restore
            self._pending_restore = None
            self._flow.restore(position, self.state.iteration, saved_rng)  # type: ignore[union-attr]

    def _run_epochs(self) -> None:
        s = self.state
        run_start = time.perf_counter()
        self._fire(Events.STARTED)
        self._restore_position()
        while not self._is_done() and not self.should_terminate:
            epoch_start = time.perf_counter()
            if not self._in_epoch:
                s.epoch += 1
                self._epoch_start_iteration = s.iteration
                self._in_epoch = True
                self._fire(Events.EPOCH_STARTED)
            self._run_iterations()
            if self.should_terminate:
                break
            if self.should_terminate_single_epoch:
                self._fire(Events.TERMINATE_SINGLE_EPOCH)
                self.should_terminate_single_epoch = False
                self._flow.close()  # type: ignore[union-attr]
            self._in_epoch = False
            s.times["EPOCH_COMPLETED"] = time.perf_counter() - epoch_start
            self._fire(Events.EPOCH_COMPLETED)
        if self.should_terminate:
            self._fire(Events.TERMINATE)
            if self._skip_completed:
                return
        s.times["COMPLETED"] = time.perf_counter() - run_start
        self._fire(Events.COMPLETED)

    def _run_iterations(self) -> None:
        s, flow, process = self.state, self._flow, self._process_function
        handlers = self._handlers
        get_started, get_completed = (
            handlers[Events.GET_BATCH_STARTED],
            handlers[Events.GET_BATCH_COMPLETED],
        )
        started, completed = (
            handlers[Events.ITERATION_STARTED],
            handlers[Events.ITERATION_COMPLETED],
        )
        max_iters = s.max_iters if s.max_iters is not None else float("inf")
        while s.epoch_length is None or s.iteration - self._epoch_start_iteration < s.epoch_length:
            if s.iteration >= max_iters:
                return
            if get_started:
                self._fire(Events.GET_BATCH_STARTED)
            try:
                batch = flow.next_batch(s.epoch, s.iteration)  # type: ignore[union-attr]
            except StopIteration:
                if not self._restart_data():
                    return
                continue
            if get_completed:
                self._fire(Events.GET_BATCH_COMPLETED)
            s.batch = batch
            s.iteration += 1
            if started:
                self._fire(Events.ITERATION_STARTED)
            s.output = process(self, batch)
            if completed:
                self._fire(Events.ITERATION_COMPLETED)
            if self.should_terminate or self.should_terminate_single_epoch:
                return

    def _restart_data(self) -> bool:
        """The data ran out: learn the epoch length, or start a new pass. False ends the epoch."""
        s = self.state
        done_in_epoch = s.iteration - self._epoch_start_iteration
        self._fire(Events.DATALOADER_STOP_ITERATION)
        if s.epoch_length is None:
            if done_in_epoch == 0 and _several_ranks() and not is_one_shot(s.dataloader):
                _check_empty_shard(s.max_iters)
                s.epoch_length = 0  # this rank's shard is empty; it still joins every event
                return False
            if done_in_epoch == 0:
                raise RuntimeError(
                    f"the data yielded no batch in epoch {s.epoch}: it is empty, or a one-shot "
                    "iterator already used up; pass a re-iterable (a list, a DataLoader) or "
                    "set epoch_length and give enough batches for the whole run"
                )
            s.epoch_length = done_in_epoch
            return False
        if self._empty_restart_at == s.iteration:
            raise RuntimeError(
                f"the data ran out at iteration {s.iteration} (epoch {s.epoch}) and a new pass "
                "over it yielded nothing: a one-shot iterator cannot be restarted; give it "
                f"enough batches for max_epochs * epoch_length ({s.epoch_length}) iterations"
            )
        self._empty_restart_at = s.iteration
        return True

    # ------------------------------------------------------------ state dicts
    def state_dict(self) -> dict[str, Any]:
        """What an exact resume needs: counters, data position, generators, attached state.

        Save it (e.g. with :class:`~distengine.handlers.Checkpoint`) at any
        iteration; ``load_state_dict`` then ``run(data)`` continues with exactly
        the batches, in the same order and with the same random draws, that the
        uninterrupted run would see (see ``distengine.engine.resume`` for what
        is covered and what is refused). It also holds the process function's
        state (e.g. a TrainStep's GradScaler and pending gradients) and that of
        every :meth:`register_stateful` object (the attached metrics). Only
        tensors and plain values: it loads with ``weights_only=True``.
        """
        state = {k: getattr(self.state, k) for k in _STATE_DICT_KEYS}
        if self._restored is not None:  # loaded, not run yet: what was loaded
            position, rng = self._restored["data_position"], self._restored["rng"]
            rng = rng or capture_rng(self.state.dataloader)
        elif self._pending_restore is not None:  # about to go on (STARTED handlers)
            position, rng = self._pending_restore
        else:
            position = self._flow.position() if self._flow is not None else None
            rng = capture_rng(self.state.dataloader)
        state.update(
            in_epoch=self._in_epoch,
            epoch_start_iteration=self._epoch_start_iteration,
            data_position=position,
            rng=rng,
        )
        for name, obj in self._all_statefuls().items():
            state[name] = obj.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the next ``run(data)`` resumes from it.

        Attached state (process function, metrics) is restored now; the data
        position and the generators when ``run`` goes on, after ``STARTED``.
        A mid-epoch resume does not fire ``EPOCH_STARTED`` again.
        """
        missing = [k for k in ("iteration", "epoch", "rng") if k not in state_dict]
        missing += [k for k in self._all_statefuls() if k not in state_dict]
        if missing:
            raise ValueError(f"engine state dict lacks {missing}; it has {sorted(state_dict)}")
        if state_dict.get("max_epochs") is None and state_dict.get("max_iters") is None:
            raise ValueError("engine state dict needs max_epochs or max_iters")
        for name, obj in self._all_statefuls().items():
            obj.load_state_dict(state_dict[name])
        self._load_position(state_dict, state_dict.get("data_position"), state_dict["rng"])

    def _load_position(self, state: dict[str, Any], position: Any, rng: Any) -> None:
        for key in _STATE_DICT_KEYS:
            setattr(self.state, key, state.get(key))
        self._in_epoch = bool(state.get("in_epoch", False))
        self._epoch_start_iteration = int(state.get("epoch_start_iteration", 0))
        self._restored = {"data_position": position, "rng": rng}
        self._flow, self._pending_restore = None, None

    def load_per_rank_state_dicts(self, states: list[dict[str, Any]]) -> None:
        """Resume from the states of a run saved on another number of ranks (contract C1).

        Counters and data position are global and must agree across the saved
        states: every rank takes them, and skips as many of its batches as
        each saved rank had used. With the same global batch (which the new
        number of ranks must divide) and an ``"even"`` loader, the run thus
        continues at the same global sample, on any number of ranks. Attached
        state goes to each object's own ``load_per_rank_state_dicts`` (metrics
        merge their ranks' accumulations; a training step outside an
        accumulation window takes rank 0's scaler); an object that is not per
        rank gets rank 0's state. Random generators cannot be redistributed:
        rank r continues saved rank r's streams when it has one, the others
        keep their own, and rank 0 warns that the run is not bitwise the one
        the saved number of ranks would have made (dropout, augmentation).

        Example::

            Checkpoint.load_objects({"trainer": trainer}, path)   # saved on 2 ranks, run on 3
        """
        self._check_same_position(states)
        absent = [k for k in self._all_statefuls() if k not in states[0]]
        if absent:
            raise ValueError(f"engine state dict lacks {absent}; it has {sorted(states[0])}")
        for name, obj in self._all_statefuls().items():
            entries = [state[name] for state in states]
            if hasattr(obj, "load_per_rank_state_dicts"):
                obj.load_per_rank_state_dicts(entries)
            elif getattr(obj, "checkpoint_per_rank", False):
                raise ValueError(
                    f"engine state {name!r} ({type(obj).__name__}) differs per rank and has no "
                    f"load_per_rank_state_dicts: it cannot be resumed on {get_world_size()} "
                    f"rank(s) from {len(states)}; resume with {len(states)} rank(s)"
                )
            else:
                obj.load_state_dict(entries[0])
        rank = get_rank()
        mine = states[rank] if rank < len(states) else None
        position = states[0].get("data_position")
        if position is not None:
            pass_rng = (mine or states[0])["data_position"]["rng"]
            position = {**position, "rng": pass_rng}
        self._load_position(states[0], position, mine["rng"] if mine else None)
        if rank == 0:
            warnings.warn(
                f"resuming on {get_world_size()} rank(s) from states saved on {len(states)}: the "
                f"data continues at the same global position (iteration {states[0]['iteration']}"
                f", epoch {states[0]['epoch']}), but the ranks' random streams (dropout, "
                "augmentation) differ from the saved run's, so the result is not bitwise the "
                "one it would have reached",
                RuntimeWarning,
                stacklevel=2,
            )

    @staticmethod
    def _check_same_position(states: list[dict[str, Any]]) -> None:
        keys = ("iteration", "epoch", "in_epoch", "epoch_start_iteration", "max_epochs")
        for key in keys + ("max_iters", "epoch_length"):
            seen = {repr(state.get(key)) for state in states}
            if len(seen) > 1:
                raise ValueError(
                    f"the saved ranks disagree on {key} ({sorted(seen)}): the checkpoint's "
                    "engine states are not of one run and cannot be resumed on another world size"
                )
        missing = [k for k in ("iteration", "epoch", "rng") if k not in states[0]]
        if states[0].get("max_epochs") is None and states[0].get("max_iters") is None:
            missing.append("max_epochs or max_iters")
        if missing:
            raise ValueError(f"engine state dict lacks {missing}; it has {sorted(states[0])}")


def _check_empty_shard(max_iters: int | None) -> None:
    """An empty epoch is a rank's empty shard (several ranks), never a whole run's data."""
    if not _several_ranks():
        raise ValueError("data is empty (len 0): an engine needs at least one batch per epoch")
    if max_iters is not None:
        raise ValueError(
            f"this rank's data is empty, so max_iters={max_iters} can never be reached; "
            "give max_epochs (an empty shard still joins every epoch's events)"
        )


def _check_run_args(max_epochs, epoch_length, max_iters) -> None:
    for name, value in (
        ("max_epochs", max_epochs),
        ("epoch_length", epoch_length),
        ("max_iters", max_iters),
    ):
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise ValueError(f"{name} must be a positive int or None, got {value!r}")
    if max_epochs is not None and max_iters is not None:
        raise ValueError(f"give max_epochs ({max_epochs}) or max_iters ({max_iters}), not both")
