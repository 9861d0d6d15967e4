"""Ctrl-C and SIGTERM in the launcher: forwarded to the ranks, which decide how to stop.

The launcher takes SIGINT and SIGTERM out of torch's agent (``signals_to_handle``
keeps SIGHUP and SIGQUIT there) and forwards them to its ranks itself, while
the agent goes on watching them. So a rank that stops at a boundary and exits
75, a rank that finishes its last iterations and exits 0, and a script that
dies of the signal are each seen as they are, and nothing waits on a rank
that already returned. After a stop was asked for, the agent is never let
restart the ranks (see :class:`~launch.job.agent.StopRequested`).

- The first signal is forwarded once; ranks still alive ``grace_s`` later
  are killed.
- A second Ctrl-C forwards SIGINT again ("stop at once": the ranks raise
  KeyboardInterrupt) and kills the ranks still alive :data:`AT_ONCE_S` later;
  a third kills them now.

Ranks lead their own process groups
(:func:`launch.rank.process.leave_terminal_group`), so a terminal's Ctrl-C
reaches the launcher only, and each rank gets exactly the signals above.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The signals torch's agent handles (SIGINT and SIGTERM are the launcher's).
AGENT_SIGNALS = "SIGHUP,SIGQUIT"
#: After a second Ctrl-C, ranks still alive this long are killed.
AT_ONCE_S = 5.0


def rank_pids() -> list[int]:
    """This launcher's ranks: its children (or its forkserver's) that lead their own group."""
    from launch.job.forkserver import server_pid

    parents, found = {os.getpid(), server_pid()}, []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid, ppid, pgrp = int(entry.name), int(fields[1]), int(fields[2])
        if ppid in parents and pgrp == pid:
            found.append(pid)
    return found


def _say(line: str) -> None:
    """A message on its own line (after the ``^C`` a terminal echoes)."""
    print(f"\n{line}", file=sys.stderr, flush=True)


def _send(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            if signum == signal.SIGKILL:
                os.killpg(pid, signum)  # the rank and what it started (loader workers)
            else:
                os.kill(pid, signum)
        except ProcessLookupError:
            pass


class StopSignals:
    """The launcher's SIGINT and SIGTERM handlers for the duration of a job (a context manager).

    ``first_message`` is printed on the first Ctrl-C (it says what the ranks
    will do); ``grace_s`` is ``dist.shutdown_grace_s``.

    Example::

        with StopSignals("Ctrl-C: ...", grace_s=60) as stops:
            elastic_launch(config, entrypoint)(*args)
        if stops.first: ...          # "SIGINT" or "SIGTERM": a stop was asked for
    """

    def __init__(
        self, first_message: str, grace_s: float, say: Callable[[str], None] | None = None
    ) -> None:
        self.first_message = first_message
        self.grace_s = grace_s
        self.say = say or _say
        self.first: str | None = None
        self.interrupts = 0
        self._previous: dict[int, Any] = {}
        self._timers: list[threading.Timer] = []

    @property
    def count(self) -> int:
        """How many Ctrl-Cs (SIGINT) the launcher got."""
        return self.interrupts

    def __enter__(self) -> StopSignals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        # once asked to stop, a late signal must not turn the reported outcome into a traceback
        for signum, previous in self._previous.items():
            signal.signal(signum, signal.SIG_IGN if self.first else previous)
        for timer in self._timers:
            timer.cancel()

    def _kill_later(self, seconds: float) -> None:
        timer = threading.Timer(seconds, lambda: _send(rank_pids(), signal.SIGKILL))
        timer.daemon = True
        timer.start()
        self._timers.append(timer)

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGINT:
            self.interrupts += 1
        first = self.first is None
        if first:
            self.first = name
            if signum == signal.SIGINT:
                self.say(self.first_message)
            _send(rank_pids(), signum)
            self._kill_later(self.grace_s)
            return
        if signum != signal.SIGINT:
            return  # a repeated SIGTERM: the ranks already have it and the grace runs
        at_once = 2 if self.first == "SIGINT" else 1  # the Ctrl-C after the first stop request
        if self.interrupts > at_once:
            _send(rank_pids(), signal.SIGKILL)
            return
        self.say(
            "second Ctrl-C: stopping the ranks at once, without a checkpoint "
            f"(they are killed if still running in {AT_ONCE_S:.0f} s)"
        )
        _send(rank_pids(), signal.SIGINT)
        self._kill_later(AT_ONCE_S)
