"""Detect a rank that stops making progress, and dump every thread's stack when it does."""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import stat
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from distengine.engine import Engine, Events, observer

#: What a stack dump starts with (the launcher looks for it in rank logs).
DUMP_MARKER = "Timeout ("

#: faulthandler has one timer per process: the watchdog that armed it last, and how many
#: ``suspended()`` blocks are open (a suspended watchdog does not re-arm).
_armed: HangWatchdog | None = None
_suspensions = 0
#: Where the process's SIGTERM stack dump goes (Preemption re-registers it after installing its
#: handler); None until :func:`dump_stacks_on_sigterm` (or a watchdog) registered one.
_sigterm_dump_file: TextIO | None = None


def dump_stacks_on_sigterm(file: TextIO) -> None:
    """On SIGTERM, write every thread's stack into ``file``, then let the signal act.

    The process's one SIGTERM dump: a :class:`HangWatchdog` attached later
    keeps it (it registers ``stderr`` only when none was registered), and
    :class:`~distengine.handlers.Preemption` keeps it on top of its own
    handler. A dump says where a rank was when it was stopped (the
    launcher's failure summary reads it); after a clean stop,
    :func:`discard_sigterm_dump` takes it back.

    Example::

        dump_stacks_on_sigterm(open("stacks.txt", "w"))
    """
    global _sigterm_dump_file
    _sigterm_dump_file = file
    faulthandler.register(signal.SIGTERM, file=file, all_threads=True, chain=True)


def sigterm_dump_file() -> TextIO | None:
    """Where the SIGTERM stack dump goes, or None when none is registered."""
    return _sigterm_dump_file


def discard_sigterm_dump() -> None:
    """A clean stop on SIGTERM: no stack dump is left of it.

    The dump stops (a later SIGTERM, as the agent sends to a rank that is
    still exiting, dumps nothing) and a dump file already written is emptied;
    a dump on a terminal or a pipe cannot be taken back.
    """
    global _sigterm_dump_file
    file, _sigterm_dump_file = _sigterm_dump_file, None
    if file is None:
        return
    faulthandler.unregister(signal.SIGTERM)
    try:
        if stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            file.flush()
            os.ftruncate(file.fileno(), 0)
            file.seek(0)
    except (OSError, ValueError, AttributeError):
        pass


@contextlib.contextmanager
def suspended() -> Iterator[None]:
    """Pause this process's hang watchdog for a block that may legitimately take long.

    A checkpoint write, a consolidation or a first compile is progress the
    watchdog cannot see; inside the block its timer is off, and on leaving it
    the countdown starts afresh. Without an armed watchdog it does nothing.

    Example::

        with suspended():
            torch.save(state, path)      # however long the disk takes
    """
    _suspend()
    try:
        yield
    finally:
        _resume()


def _suspend() -> None:
    global _suspensions
    _suspensions += 1
    if _armed is not None and _suspensions == 1:
        faulthandler.cancel_dump_traceback_later()


def _resume() -> None:
    global _suspensions
    _suspensions -= 1
    if _armed is not None and _suspensions == 0:
        _armed._rearm(time.monotonic())


#: Whether torch is compiling now (between dynamo's compile-start and compile-end callbacks).
_compiling = False


def _compile_started(*args: Any) -> None:
    global _compiling
    if not _compiling:
        _compiling = True
        _suspend()


def _compile_ended(*args: Any) -> None:
    global _compiling
    if _compiling:  # registered mid-compile: no start was seen, nothing to resume
        _compiling = False
        _resume()


def _watch_compiles() -> None:
    """Suspend the watchdog while ``torch.compile`` compiles (first calls, recompiles).

    Uses dynamo's compile callbacks, once ``torch._dynamo`` is imported (``torch.compile``
    imports it; nothing is imported here). Called at every re-arm, so a first
    evaluation's recompile, a new input shape or a lazily compiled backward are covered,
    and so is a ``torch._dynamo.reset()``, which clears the callbacks.
    """
    dynamo = sys.modules.get("torch._dynamo")
    handler = getattr(dynamo, "callback_handler", None)
    if handler is None or _compile_started in handler.start_callbacks:
        return
    handler.register_start_callback(_compile_started)
    handler.register_end_callback(_compile_ended)


class HangWatchdog:
    """If no watched event fires for ``timeout_s`` seconds, dump all stacks and exit(1).

    The countdown starts when the first iteration completes (a first
    iteration may compile, start loader workers or warm caches; the process
    group's timeout still bounds it), and pauses inside :func:`suspended` and
    while ``torch.compile`` compiles (also a recompile at a first evaluation
    or a new input shape).
    Watched events re-arm Python's ``faulthandler`` timer, at most every
    ``timeout_s / 10`` seconds (re-arming costs tens of microseconds; between
    re-arms an event costs a clock read), so a rank that stops is caught
    between 0.9 and 1 times ``timeout_s`` after its last progress. A rank stuck in
    a collective that a peer never entered, or in a deadlock in user code,
    prints where it is to its log and exits, so the launcher stops the job
    instead of waiting for a 30-minute collective timeout.

    Example::

        watchdog = HangWatchdog(timeout_s=300)
        watchdog.attach(trainer)
        watchdog.attach(evaluator, final=False)   # progress while validating counts too
    """

    def __init__(self, timeout_s: float, file: TextIO | None = None) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive seconds, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        self.file = file
        self._armed_at = float("-inf")

    @observer
    def arm(self, *args: Any) -> None:
        """(Re)start the countdown, unless it was restarted within the last tenth of it."""
        now = time.monotonic()
        if now - self._armed_at < self.timeout_s / 10 or _suspensions:
            return
        self._rearm(now)

    def _rearm(self, now: float) -> None:
        global _armed
        _watch_compiles()
        _armed = self
        self._armed_at = now
        faulthandler.dump_traceback_later(self.timeout_s, exit=True, file=self.file or sys.stderr)

    @observer
    def cancel(self, *args: Any) -> None:
        """Stop watching (the run ended)."""
        global _armed
        self._armed_at = float("-inf")
        if _armed is self:
            _armed = None
        faulthandler.cancel_dump_traceback_later()

    def attach(self, engine: Engine, final: bool = True) -> None:
        """Watch ``engine``'s iterations; ``final`` engines stop the watch when they end.

        Also dumps the stacks when the rank gets SIGTERM (as the agent sends to
        the other ranks once one has failed), then lets the signal act: into
        the file :func:`dump_stacks_on_sigterm` registered (under the launcher,
        the rank's ``stacks.txt``), else into ``file`` or stderr.
        """
        dump_stacks_on_sigterm(_sigterm_dump_file or self.file or sys.stderr)
        engine.add_event_handler(Events.ITERATION_COMPLETED | Events.EPOCH_COMPLETED, self.arm)
        end = Events.COMPLETED | Events.EXCEPTION_RAISED | Events.TERMINATE
        engine.add_event_handler(end, self.cancel if final else self.arm)
