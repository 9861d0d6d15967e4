"""Ctrl-C in the launcher: the first stops the ranks at a boundary, the second at once.

torch's agent turns SIGTERM, SIGHUP and SIGQUIT into ``SignalException``:
it forwards the signal once to each rank, waits ``dist.shutdown_grace_s``,
then SIGKILLs. SIGINT is taken out of its hands (``signals_to_handle``)
because a second Ctrl-C must not restart that wait: the first SIGINT raises
the same ``SignalException`` (so the agent forwards one SIGINT and stops
without restarting), the second forwards another SIGINT to the ranks ("stop
at once") and SIGKILLs those still alive a few seconds later, a third
SIGKILLs them now. Ranks lead their own process groups
(:func:`launch.rank.process.leave_terminal_group`), so a terminal's Ctrl-C
reaches the launcher only, and each rank gets exactly the SIGINTs above.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from torch.distributed.elastic.multiprocessing.api import SignalException

#: The signals torch's agent handles for us (SIGINT is ours).
AGENT_SIGNALS = "SIGTERM,SIGHUP,SIGQUIT"
#: After a second Ctrl-C, ranks still alive this long are killed.
AT_ONCE_S = 5.0


def rank_pids() -> list[int]:
    """This launcher's ranks: its children that lead their own process group."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid, ppid, pgrp = int(entry.name), int(fields[1]), int(fields[2])
        if ppid == me and pgrp == pid:
            found.append(pid)
    return found


def _send(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            if signum == signal.SIGKILL:
                os.killpg(pid, signum)  # the rank and what it started (loader workers)
            else:
                os.kill(pid, signum)
        except ProcessLookupError:
            pass


class CtrlC:
    """Install the launcher's SIGINT handler for the duration of a job (a context manager).

    ``first_message`` is printed on the first Ctrl-C (it says what the ranks will do).
    """

    def __init__(self, first_message: str) -> None:
        self.first_message = first_message
        self.count = 0
        self._previous: Any = None
        self._timer: threading.Timer | None = None

    def __enter__(self) -> CtrlC:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        # once asked to stop, a late Ctrl-C must not turn the reported outcome into a traceback
        signal.signal(signal.SIGINT, signal.SIG_IGN if self.count else self._previous)
        if self._timer is not None:
            self._timer.cancel()

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count == 1:
            print(f"\n{self.first_message}", file=sys.stderr, flush=True)
            raise SignalException(f"Process {os.getpid()} got signal: SIGINT", signal.SIGINT)
        pids = rank_pids()
        if self.count == 2:
            print(
                "\nsecond Ctrl-C: stopping the ranks at once, without a checkpoint "
                f"(they are killed if still running in {AT_ONCE_S:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            _send(pids, signal.SIGINT)
            self._timer = threading.Timer(AT_ONCE_S, lambda: _send(rank_pids(), signal.SIGKILL))
            self._timer.daemon = True
            self._timer.start()
        else:
            _send(pids, signal.SIGKILL)
