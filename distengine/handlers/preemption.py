"""Stop every rank at the same iteration on SIGTERM or Ctrl-C, save a checkpoint, and say so."""

from __future__ import annotations

import faulthandler
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from distengine.engine import Engine, Events, observer
from distengine.engine.board import board_of, check_every

#: Exit code of a rank (and of the launcher) after a stop with a checkpoint saved: "run again".
EXIT_PREEMPTED = 75

#: Two SIGINTs closer than this are one (the terminal's and the launcher's forwarded copy).
REPEAT_S = 1.0


def _install(signum: int, handler: Any) -> Any:
    """``signal.signal``, keeping a faulthandler stack dump registered for ``signum`` on top
    (the hang watchdog's SIGTERM dump): Python's handler would otherwise replace it."""
    had_dump = faulthandler.unregister(signum)
    previous = signal.signal(signum, handler)
    if had_dump:
        from distengine.handlers import watchdog

        dump_file = watchdog.sigterm_dump_file() or sys.stderr
        faulthandler.register(signum, file=dump_file, all_threads=True, chain=True)
    return previous


def _terminate_when_checkpointable(engine: Engine) -> None:
    """``engine.terminate()`` now, or at the end of the iteration where its training step can
    be saved again (an FSDP accumulation window's end: the step says so, the same iteration on
    every rank)."""
    if getattr(engine.process_function, "checkpointable", True):
        engine.terminate()
        return

    def at_window_end(engine: Engine) -> None:
        if getattr(engine.process_function, "checkpointable", True):
            engine.remove_event_handler(at_window_end, Events.ITERATION_COMPLETED)
            engine.terminate()

    engine.add_event_handler(Events.ITERATION_COMPLETED, at_window_end)


class Preemption:
    """On SIGTERM or SIGINT, every rank stops at the next agreed iteration and runs ``on_stop``.

    The first signal only sets a flag. The ranks agree on it in the engine's
    consensus board (one asynchronous collective shared with the other
    checks, read one iteration later; about every half second by default, or
    every ``every`` iterations), so every rank stops at the same iteration
    even when only one got the signal (inside a gradient-accumulation window
    of an FSDP model, whose gradients no checkpoint can hold, at the window's
    end: at most ``gradient_accumulation_steps - 1`` iterations later). The
    engine then terminates; in its
    ``TERMINATE`` every rank runs ``on_stop(engine)`` (e.g. a :class:`Checkpoint`) and
    ``engine.state.preempted`` is True (``engine.state.stop_signal`` names
    the signal, ``engine.state.signalled_at`` the iteration this rank was at
    when it came); exit with :data:`EXIT_PREEMPTED` then. A SIGINT more than
    a second after the first signal raises KeyboardInterrupt at once. The
    SIGTERM stack dump a hang watchdog or the launcher registered is taken
    back after such a clean stop
    (:func:`~distengine.handlers.watchdog.discard_sigterm_dump`). Handlers
    already installed are chained (a callable one still runs; a
    faulthandler dump stays registered), never replaced; the previous ones
    are restored when the run completes or fails.

    Also attach it to an evaluator run from the trainer's handlers
    (``final=False``): a signal during a long validation then ends the
    evaluation at an iteration every rank reaches (its metrics are not
    computed, ``evaluator.state.preempted`` is True) and the trainer stops as
    soon as the handler returns.

    Example::

        preemption = Preemption(on_stop=checkpoint)
        preemption.attach(trainer)
        preemption.attach(evaluator, final=False)
        trainer.run(loader, max_epochs=10)
        if trainer.state.preempted:
            sys.exit(EXIT_PREEMPTED)
    """

    def __init__(
        self,
        on_stop: Callable[[Engine], Any] | None = None,
        signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT),
        every: int | None = None,
    ) -> None:
        if on_stop is not None and not callable(on_stop):
            raise TypeError(f"on_stop must be callable (e.g. a Checkpoint), got {on_stop!r}")
        valid = set(signal.valid_signals())
        if not signals or any(s not in valid for s in signals):
            raise ValueError(f"signals must be signal numbers such as SIGTERM, got {signals!r}")
        self.on_stop = on_stop
        self.signals = tuple(signals)
        self.every = check_every(every)
        self.received: set[int] = set()  # signals this rank got since the last stop
        self._agreed: set[int] = set()  # signals some rank got, as every rank knows
        self._first_at: float | None = None  # when this rank got its first signal (monotonic)
        self.signalled_at: int | None = None  # the final engine's iteration then
        self._previous: dict[int, Any] = {}
        self._final: Engine | None = None
        self._running = False
        self._stopping = False

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self._first_at is not None and now - self._first_at > REPEAT_S:
            if signum == signal.SIGINT:
                self.restore()  # a Ctrl-C after the stop request: at once, as before
                raise KeyboardInterrupt
        if self._first_at is None:
            self._first_at = now
            engine = self._final
            self.signalled_at = engine.state.iteration if engine is not None else None
        self.received.add(signum)
        previous = self._previous.get(signum)
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, frame)

    def install(self) -> None:
        """Take over the signals (chaining what was there); done by :meth:`attach`."""
        for signum in self.signals:
            if signum not in self._previous:
                self._previous[signum] = _install(signum, self._on_signal)

    def restore(self) -> None:
        """Give the signals back to the handlers that were there before."""
        for signum, previous in self._previous.items():
            _install(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    @property
    def requested(self) -> bool:
        """Whether this rank got one of the signals (the ranks agree on it at the next check)."""
        return bool(self.received)

    # ------------------------------------------------------------------ engines
    def attach(self, engine: Engine, final: bool = True) -> None:
        """Watch ``engine``. The ``final`` engine (the trainer) stops and runs ``on_stop``;
        others (an evaluator) end early so that the final one stops as soon as it can."""
        board = board_of(engine)
        self.install()
        if not final:
            if not board.has((self, self.signals[0])):
                self._watch(board, lambda: self._stop_inner(engine))
                engine.add_event_handler(Events.STARTED, self._started_inner)
            engine.state.preempted = False
            return
        if self._final is engine:
            return
        if self._final is not None:
            raise ValueError(
                "Preemption already has a final engine; attach others with final=False"
            )
        self._final = engine
        self._watch(board, lambda: self._stop_final(engine))
        engine.state.preempted, engine.state.stop_signal = False, None
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.TERMINATE, self._terminated)
        engine.add_event_handler(Events.COMPLETED, self._ended)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._ended)

    def _watch(self, board: Any, stop: Callable[[], Any]) -> None:
        """One flag per signal, so every rank also agrees on which signal stopped the run."""
        for signum in self.signals:

            def agreed(signum: int = signum) -> None:
                self._agreed.add(signum)
                stop()

            board.flag((self, signum), self.every, agreed, poll=lambda s=signum: s in self.received)

    def _started(self, engine: Engine) -> None:
        self.install()
        if not self.received:  # a signal after the last run ended asks nothing of this one
            self._first_at = self.signalled_at = None
        self._running, self._stopping = True, False
        engine.state.preempted, engine.state.stop_signal = False, None

    @staticmethod
    def _started_inner(engine: Engine) -> None:
        engine.state.preempted = False

    def _stop_final(self, engine: Engine) -> None:
        if engine.last_event_name is Events.COMPLETED:
            return  # the run is done: nothing to stop
        self._stopping = True
        _terminate_when_checkpointable(engine)

    def _stop_inner(self, engine: Engine) -> None:
        engine.state.preempted = True
        engine.terminate(skip_completed=True)  # partial metrics are never published
        if self._final is not None and self._running:
            self._stopping = True
            _terminate_when_checkpointable(self._final)

    def _terminated(self, engine: Engine) -> None:
        self._running = False
        if not self._stopping:
            self.restore()
            return
        if self.on_stop is not None:
            self.on_stop(engine)
        engine.state.preempted = True
        first = next(s for s in self.signals if s in self._agreed)
        engine.state.stop_signal = signal.Signals(first).name
        engine.state.signalled_at = self.signalled_at
        if signal.SIGTERM in self.received:
            from distengine.handlers import watchdog

            watchdog.discard_sigterm_dump()  # a clean stop: no stack dump is left of it
        self.received, self._agreed, self._stopping = set(), set(), False
        self._first_at = self.signalled_at = None

    @observer
    def _ended(self, engine: Engine, *error: Any) -> None:
        self._running = False
        if not engine.state.preempted:
            self.restore()
