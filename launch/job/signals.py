"""Stop signals in the launcher, from its first line to its last.

A stop signal is SIGINT (Ctrl-C), SIGTERM (a scheduler, ``kill``, ``timeout``),
SIGHUP (the terminal closed, an ssh connection dropped) or SIGQUIT (Ctrl-\\).
What one does depends only on where the job is:

- Before the ranks start (the checks, Hydra, the rendezvous): the launcher
  stops there (:class:`EarlyStop`, exit 130); nothing ran, nothing is lost.
- While ranks run (:class:`StopSignals`): a stop request, forwarded to the
  ranks (SIGINT as SIGINT, the others as SIGTERM: the recipe's ranks save a
  checkpoint either way), also to ranks that start after it; ranks still
  alive ``dist.shutdown_grace_s`` later are killed. A signal within
  :data:`REPEAT_S` of the previous one is the same request (a terminal and
  ``timeout`` deliver one Ctrl-C twice: to the launcher and to its group).
  A later Ctrl-C stops the ranks at once (SIGINT again, as the ranks'
  :class:`~distengine.handlers.Preemption` expects; killed :data:`AT_ONCE_S`
  later), a third kills them now; a later SIGTERM, SIGHUP or SIGQUIT is
  said and changes nothing (the grace goes on).
- After the ranks ended: noted on stderr; the job's outcome stands and the
  run folder is released (a sweep starts no further job).

torch's agent handles none of them (``signals_to_handle``): it would raise
from its loop and leave a traceback. The launcher forwards them itself while
the agent goes on watching the ranks, so a rank that stops at a boundary and
exits 75, a rank that finishes its last iterations and exits 0, and a script
that dies of the signal are each seen as they are. After a stop was asked
for, the agent is never let restart the ranks
(:class:`~launch.job.agent.StopRequested`).

Ranks lead their own process groups
(:func:`launch.rank.process.leave_terminal_group`), so a terminal's Ctrl-C
reaches the launcher only, and each rank gets exactly the signals above.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The signals that ask the launcher to stop.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
#: torch's agent handles none (an empty name: torch skips it, with a warning the launcher mutes).
AGENT_SIGNALS = ""
#: After a second Ctrl-C, ranks still alive this long are killed.
AT_ONCE_S = 5.0
#: Two stop signals closer than this are one request (as for the ranks' Preemption).
REPEAT_S = 1.0
#: How often a stop request is passed on to ranks that started after it.
FORWARD_EVERY_S = 0.2


def describe(name: str) -> str:
    """A signal's name as the user knows it: ``Ctrl-C (SIGINT)``, ``SIGTERM``."""
    return {"SIGINT": "Ctrl-C (SIGINT)"}.get(name, name)


class EarlyStop(KeyboardInterrupt):
    """A stop signal before any rank started; ``signal`` names it (``SIGTERM``)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.signal = name


def rank_pids() -> list[int]:
    """This launcher's ranks: its children (or its forkserver's) that lead their own group."""
    from launch.job.forkserver import server_pid
    from launch.job.reaper import processes

    parents = {os.getpid(), server_pid()}
    return [
        pid
        for pid, state, parent, group in processes()
        if parent in parents and group == pid and state != "Z"
    ]


def first_message(kind: str) -> str:
    """What the first Ctrl-C says the ranks are asked to do (``kind``: recipe, script...)."""
    if kind == "recipe":
        return (
            "Ctrl-C: the ranks are asked to stop at their next agreed check and save a checkpoint "
            "(Ctrl-C again stops them at once, without one)"
        )
    return f"Ctrl-C: sent SIGINT to the ranks of the {kind} (Ctrl-C again stops them at once)"


def process_state(pid: int) -> str | None:
    """A process's state letter from ``/proc`` (``R``, ``S``, ``T`` stopped, ``Z``), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _say(line: str) -> None:
    """A message on its own line (after the ``^C`` a terminal echoes); a closed stderr is
    no error (SIGHUP: the terminal is gone)."""
    try:
        os.write(sys.stderr.fileno(), f"\n{line}\n".encode())
    except (OSError, ValueError):
        pass


def _send(pids: list[int], signum: int, finished: Callable[[], set[int]] = set) -> list[int]:
    """Send ``signum`` to each rank (SIGKILL: to its process group, the rank and what it
    started) that has not finished its task (asked again just before each send); the
    pids it reached."""
    reached = []
    for pid in pids:
        if pid in finished():
            continue
        try:
            if signum == signal.SIGKILL:
                os.killpg(pid, signum)  # the rank and what it started (loader workers)
            else:
                os.kill(pid, signum)
            reached.append(pid)
        except (ProcessLookupError, PermissionError):
            pass
    return reached


class _Late:
    """Stop signals that came after a job ended (a sweep starts no further job after one)."""

    signals: list[str] = []


def ignore_late(say: Callable[[str], None] = _say) -> None:
    """From now on a stop signal is noted, not acted on: the job ended, its outcome stands
    (in a sweep, :func:`check_late` keeps the next job from starting)."""

    def late(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        _Late.signals.append(name)
        say(f"note: {name} came after the job ended")

    for signum in STOP_SIGNALS:
        signal.signal(signum, late)


def check_late() -> None:
    """Raise :class:`EarlyStop` if a stop signal came after an earlier job of this launcher."""
    if _Late.signals:
        raise EarlyStop(_Late.signals[0])


class _Early:
    """Stop signals that came before the ranks started (kept: a raise can be lost)."""

    signals: list[str] = []


def _importing(frame: Any) -> bool:
    """Whether ``frame`` runs inside an import (Python's import machinery is on its stack)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _early(signum: int, frame: Any) -> None:
    """Raise :class:`EarlyStop`; inside an import, where an exception can be swallowed (a
    module lock's callback: the job then ran to its end) or abort the process (torch's C++
    code), only note it: :func:`check_early` raises it before the ranks start."""
    name = signal.Signals(signum).name
    _Early.signals.append(name)
    if not _importing(frame):
        raise EarlyStop(name)


def stop_early() -> None:
    """Until the ranks start, a stop signal raises :class:`EarlyStop` (exit 130), Ctrl-C
    included (unless it is ignored, as in a shell's background job); installed on
    ``python -m launch``'s first line (:mod:`launch.__main__`), before the slow imports."""
    _Late.signals = []
    for signum in STOP_SIGNALS:
        if signum != signal.SIGINT or signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _early)


def leave_early() -> None:
    """Signals back to their defaults (a launcher started by torchrun or srun as one rank:
    theirs to handle)."""
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is _early:
            default = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            signal.signal(signum, default)


def early_signal() -> str | None:
    """The first stop signal that came before the ranks started (``SIGTERM``), or None."""
    return _Early.signals[0] if _Early.signals else None


def check_early() -> None:
    """Raise :class:`EarlyStop` if a stop signal came before the ranks started, even one
    whose exception was lost where it was raised (or turned into another error)."""
    if _Early.signals:
        raise EarlyStop(_Early.signals[0])


@dataclass
class Stop:
    """What the launcher got and did: the facts its last message is made of."""

    first: str | None = None  # the first stop signal's name
    at: float | None = None  # when it came (time.time())
    signals: list[str] = field(default_factory=list)  # every one, repeats included
    at_once: bool = False  # a later Ctrl-C made the launcher stop the ranks at once
    killed: list[int] = field(default_factory=list)  # ranks SIGKILLed by the launcher
    killed_after_s: float | None = None  # how long after the first signal that was

    @property
    def how(self) -> str:
        """The request in words: ``SIGTERM``, ``Ctrl-C (SIGINT)``, ``a second Ctrl-C``."""
        if self.at_once:
            return "a second Ctrl-C"
        return describe(self.first) if self.first else "a signal to the ranks"


class StopSignals:
    """The launcher's stop signals while the job runs (a context manager; see the module).

    ``first_message`` is printed on the first Ctrl-C (it says what the ranks
    are asked to do); ``grace_s`` is ``dist.shutdown_grace_s``; ``finished()``
    gives the pids of ranks that returned from their task: they are sent
    nothing (such a rank waits for torch's agent to collect its result, and
    killing it then would leave the agent waiting forever). Until
    :meth:`ranks_starting` is called a signal raises :class:`EarlyStop` (the
    rendezvous is left at once). On leaving, later signals are only noted.

    Example::

        with StopSignals("Ctrl-C: ...", grace_s=60) as stops:
            elastic_launch(config, entrypoint)(*args)
        if stops.first: ...          # "SIGINT", "SIGTERM", "SIGHUP": a stop was asked for
    """

    def __init__(
        self,
        first_message: str,
        grace_s: float,
        say: Callable[[str], None] | None = None,
        finished: Callable[[], set[int]] | None = None,
    ) -> None:
        self.first_message = first_message
        self.grace_s = grace_s
        self.say = say or _say
        self.finished = finished or set  # pids of ranks that returned from their task
        self.stop = Stop()
        self.started = False
        self._interrupts = 0  # Ctrl-Cs that counted (repeats within REPEAT_S do not)
        self._last = 0.0  # when the last signal that counted came (monotonic)
        self._forwarded: dict[int, int] = {}  # rank pid -> the last signal it was sent
        self._signum: int | None = None  # what ranks that start later are sent
        self._lock = threading.RLock()  # a signal may come while the main thread holds it
        self._stopped = threading.Event()

    @property
    def first(self) -> str | None:
        """The first stop signal's name, or None."""
        return self.stop.first

    @property
    def count(self) -> int:
        """How many Ctrl-Cs counted (one delivered twice within :data:`REPEAT_S` is one)."""
        return self._interrupts

    def ranks_starting(self) -> None:
        """The agent starts the ranks now: from here a signal is forwarded to them."""
        self.started = True

    def __enter__(self) -> StopSignals:
        check_early()
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        ignore_late(self.say)

    # ------------------------------------------------------------------ handling
    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        now = time.monotonic()
        self.stop.signals.append(name)
        if not self.started:
            self.stop.first = self.stop.first or name
            raise EarlyStop(name)
        if self.stop.first is None:
            self._first(signum, name, now)
        elif now - self._last > REPEAT_S:
            self._again(signum, name, now)

    def _first(self, signum: int, name: str, now: float) -> None:
        self.stop.first, self.stop.at, self._last = name, time.time(), now
        if signum == signal.SIGINT:
            self._interrupts = 1
            self.say(self.first_message)
        elif signum != signal.SIGTERM:
            self.say(
                f"{describe(name)}: the ranks are asked to stop as on SIGTERM (they are killed "
                f"if still running in {self.grace_s:g} s)"
            )
        self._signum = signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM
        self._pass_on()
        threading.Thread(target=self._forward_later, name="stop-forward", daemon=True).start()
        self._kill_later(self.grace_s)

    def _again(self, signum: int, name: str, now: float) -> None:
        self._last = now
        if signum != signal.SIGINT:
            self.say(f"{describe(name)}: the ranks are already stopping")
            return
        self._interrupts += 1
        if self.stop.at_once:  # a third Ctrl-C
            self._kill()
            return
        self.stop.at_once = True
        self.say(
            "second Ctrl-C: stopping the ranks at once, without a checkpoint "
            f"(they are killed if still running in {AT_ONCE_S:.0f} s)"
        )
        with self._lock:
            self._signum = signal.SIGINT
            self._forwarded.clear()  # every rank gets this SIGINT too
        self._pass_on()
        self._kill_later(AT_ONCE_S)

    def _pass_on(self) -> None:
        """Send the current request to every rank that has not had it yet."""
        with self._lock:
            signum = self._signum
            pids = [p for p in rank_pids() if self._forwarded.get(p) != signum]
            for pid in _send(pids, signum, self.finished) if signum is not None else []:
                self._forwarded[pid] = signum

    def _forward_later(self) -> None:
        """Ranks the agent starts after the request (a rendezvous that was ending) get it too."""
        while not self._stopped.wait(FORWARD_EVERY_S):
            self._pass_on()

    def _kill(self) -> None:
        killed = _send(rank_pids(), signal.SIGKILL, self.finished)
        if killed:
            self.stop.killed.extend(killed)
            if self.stop.killed_after_s is None and self.stop.at is not None:
                self.stop.killed_after_s = time.time() - self.stop.at

    def _kill_later(self, seconds: float) -> None:
        def kill() -> None:
            if not self._stopped.wait(seconds):
                self._kill()

        threading.Thread(target=kill, name="stop-kill", daemon=True).start()
