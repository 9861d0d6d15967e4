"""Preparing a rank's process: its parent, its signals, its threads, its stacks on SIGTERM."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

_PR_SET_PDEATHSIG = 1

#: Written into a rank's log folder when its task returned (the failure summary reads it).
FINISHED_MARKER = "finished"
#: Every thread's stack, written when the rank gets SIGTERM (the agent stopping it).
STACKS_FILE = "stacks.txt"


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this rank when its parent (the agent) dies, even by SIGKILL."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the agent's own cleanup still applies
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def leave_terminal_group() -> None:
    """Make this rank the leader of its own process group.

    A terminal's Ctrl-C goes to its foreground process group; the launcher
    forwards one SIGINT to each rank itself, so a rank must not get a second
    one from the terminal (a second SIGINT means "stop at once"). Ranks
    started as subprocesses already lead their own session (torch does it).
    """
    if os.getpgid(0) != os.getpid():
        os.setpgid(0, 0)


def reset_signals() -> None:
    """Forked ranks inherit the launcher's signal handlers; a rank starts with the defaults."""
    for name in ("SIGTERM", "SIGHUP", "SIGQUIT"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def finished_signals() -> None:
    """A rank whose task returned has nothing left to stop.

    A Ctrl-C forwarded while it hands its result to the agent is ignored (it
    would turn a finished rank into a failed one); SIGTERM still ends it (the
    agent stops the other ranks with it when one fails).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def line_buffered() -> None:
    """Each line a rank prints reaches its log file (and the console) when printed.

    A forked rank keeps the launcher's ``sys.stdout``, block-buffered when
    the launcher's output is no terminal.
    """
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)


def set_threads() -> None:
    """Apply OMP_NUM_THREADS to torch (a forked rank inherits the launcher's thread pool)."""
    import torch

    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads > 0:
        torch.set_num_threads(threads)


def log_folder() -> Path | None:
    """This rank's log folder of the current attempt (where torch puts its error.json)."""
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    return Path(error_file).parent if error_file else None


def dump_stacks_on_sigterm() -> None:
    """On SIGTERM, write every thread's stack to the log folder, then let the signal act.

    When one rank fails the agent stops the others with SIGTERM; their stacks
    say which one was not inside a collective (the likely cause of a hang).
    A handler installed later (e.g. the recipe's Preemption) replaces this one.
    """
    folder = log_folder()
    if folder is None or not folder.is_dir():
        return
    from distengine.handlers.watchdog import dump_stacks_on_sigterm

    stacks = open(folder / STACKS_FILE, "w")  # noqa: SIM115 - kept open for the signal handler
    dump_stacks_on_sigterm(stacks)  # the one registration: watchdogs and Preemption keep it


def mark_finished() -> None:
    """Record that this rank's task returned (a rank that leaves early is named by it)."""
    folder = log_folder()
    if folder is not None and folder.is_dir():
        (folder / FINISHED_MARKER).write_text(str(os.getpid()))
