"""Each attempt's log folder, the first failure of each attempt, and a line per restart.

torch's agent creates ``<logs>/<run id>_<random>/attempt_<n>/<local rank>/``
for every attempt through its ``LogsSpecs``; :class:`JobLogs` remembers the
folders of this job (the failure summary reads them, not the newest folder
on disk) and hands each attempt's files to the launcher's
:class:`~launch.job.streams.Follower` (the console and ``logs/rank<N>.log``;
torch's own line-by-line ``tee`` is not used). The agent restarts the ranks
on its own; its log record of the first failure gives the exit code, and
``reify`` (called as each attempt starts) is where the launcher says what
happened.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
from torch.distributed.elastic.multiprocessing.api import LogsDest
from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

from launch.job.failures import EXIT_CODE_FILE, FROZEN_FILE, summarize
from launch.rank.process import FINISHED_MARKER

#: torch's agent logs "failed (exitcode: %s) local_rank: %s (pid: %s) ..." here.
AGENT_LOGGER = "torch.distributed.elastic.multiprocessing.api"
#: How often the ranks' process states are sampled (a frozen rank is seen within this).
STATE_EVERY_S = 0.5
#: A rank seen stopped this recently when the agent reports a failure was frozen.
FROZEN_WITHIN_S = 10.0


class FirstFailures(logging.Handler):
    """Keeps (exit code, local rank, pid) of the failure torch's agent logs in each attempt,
    and writes what the launcher saw of every rank then into its log folder.

    When torch's agent logs an attempt's first failure, each rank folder gets
    ``exitcode`` (how the rank's process ended, when it had) and, for a rank
    seen stopped (process state ``T``: SIGSTOP, Ctrl-Z, a debugger) while the
    others ran, ``frozen``: the failure summary reads them
    (:mod:`launch.job.failures`), so a rank is named the same way whichever
    rank the agent happened to see fail first.
    """

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last: tuple[int, int, int] | None = None
        self.states = RankStates()

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if str(record.msg).startswith("failed (exitcode") and len(args) >= 3:
            try:
                self.last = (int(args[0]), int(args[1]), int(args[2]))
            except (TypeError, ValueError):
                return
            context = _logging_context()
            if context is not None:
                self.states.record(context)

    def install(self) -> None:
        """Listen to the agent's failure records only (the console stays quiet)."""
        logger = logging.getLogger(AGENT_LOGGER)
        logger.setLevel(logging.ERROR)
        logger.propagate = False
        logger.handlers = [self]
        self.states.start()


def _logging_context() -> Any:
    """torch's process context (``PContext``) whose ``_poll`` is logging the failure."""
    from torch.distributed.elastic.multiprocessing.api import PContext

    frame = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, PContext):
            return candidate
        frame = frame.f_back
    return None


class RankStates:
    """The ranks' process states, sampled in a thread; what they were at a failure, on disk."""

    def __init__(self, every_s: float = STATE_EVERY_S) -> None:
        self.every_s = every_s
        self.stopped: dict[int, float] = {}  # pid -> when it was last seen stopped (monotonic)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=_sample, args=(weakref.ref(self),), name="rank-states", daemon=True
            )
            self._thread.start()

    def sample(self) -> None:
        """Note the ranks that are stopped; one already told to terminate is continued, so
        that it does (a stopped process only acts on SIGTERM once it runs again)."""
        from launch.job.signals import process_state, rank_pids

        now = time.monotonic()
        for pid in rank_pids():
            if process_state(pid) == "T":
                self.stopped[pid] = now
                if _pending(pid) & (1 << (signal.SIGTERM - 1)):
                    os.kill(pid, signal.SIGCONT)

    def record(self, context: Any) -> None:
        """Write ``exitcode`` and ``frozen`` into each rank's folder (see FirstFailures)."""
        recent = time.monotonic() - FROZEN_WITHIN_S
        try:
            pids = context.pids()
            codes = _exit_codes(context)
            folders = {local: Path(path).parent for local, path in context.error_files.items()}
        except Exception:  # torch's internals moved: the summary says less, nothing breaks
            return
        for local, folder in folders.items():
            code, pid = codes.get(local), pids.get(local)
            try:
                if code is not None:
                    (folder / EXIT_CODE_FILE).write_text(str(code))
                if pid is not None and self.stopped.get(pid, -1.0) >= recent:
                    (folder / FROZEN_FILE).write_text(str(pid))
            except OSError:
                continue


def _pending(pid: int) -> int:
    """The signals pending for a process (its threads' and the process's), as a bit mask."""
    mask = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("SigPnd:", "ShdPnd:")):
                mask |= int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        return 0
    return mask


def _sample(states: Any) -> None:
    while True:
        alive = states()
        if alive is None:
            return
        every = alive.every_s
        alive.sample()
        del alive
        time.sleep(every)


def _exit_codes(context: Any) -> dict[int, int]:
    """How each local rank's process ended, as torch's context knows it (None: running)."""
    processes = getattr(getattr(context, "_pc", None), "processes", None)
    if processes is not None:
        return {i: p.exitcode for i, p in enumerate(processes) if p.exitcode is not None}
    handlers = getattr(context, "subprocess_handlers", {})
    return {i: h.proc.returncode for i, h in handlers.items() if h.proc.returncode is not None}


class JobLogs(DefaultLogsSpecs):
    """torch's log layout, remembering this job's attempt folders.

    ``on_attempt(attempt, folder)`` runs as each attempt starts (after the
    rendezvous), before its ranks do; an exception raised there ends the job.
    ``follow(attempt, {global rank: (stdout file, stderr file)})`` runs just
    before it (the previous attempt's output is shown first).
    """

    def __init__(
        self,
        log_dir: Path,
        on_attempt: Callable[[int, Path], None],
        follow: Callable[[int, dict[int, tuple[str, str]]], None] | None = None,
    ) -> None:
        super().__init__(log_dir=str(log_dir), redirects=Std.ALL, tee={})
        self.attempts: list[Path] = []
        self._on_attempt = on_attempt
        self._follow = follow

    def reify(self, envs: dict[int, dict[str, str]]) -> LogsDest:
        dest = super().reify(envs)
        folder = Path(next(iter(dest.error_files.values()))).parent.parent
        attempt = int(next(iter(envs.values())).get("TORCHELASTIC_RESTART_COUNT", 0))
        if self._follow is not None:
            files = {
                int(env["RANK"]): (str(dest.stdouts[local]), str(dest.stderrs[local]))
                for local, env in envs.items()
            }
            self._follow(attempt, files)
        self._on_attempt(attempt, folder)
        self.attempts.append(folder)
        return dest

    def finished_pids(self) -> set[int]:
        """The pids of the current attempt's ranks that returned from their task (from the
        ``finished`` marker each writes, :func:`launch.rank.process.mark_finished`)."""
        found: set[int] = set()
        for marker in self.attempts[-1].glob(f"*/{FINISHED_MARKER}") if self.attempts else []:
            try:
                found.add(int(marker.read_text()))
            except (OSError, ValueError):
                continue
        return found


def what_failed(folder: Path, failure: tuple[int, int, int] | None, offset: int) -> str:
    """The culprit of a finished attempt in one line (the first line of its summary)."""
    failures = {}
    if failure is not None:
        code, local, pid = failure
        failures[local] = ProcessFailure(local_rank=local, pid=pid, exitcode=code, error_file="")
    lines = summarize(failures, folder, offset).splitlines()
    culprit = [line for line in lines if line.startswith("rank ")]
    return culprit[0] if culprit else "a rank failed"


def print_restart(
    attempt: int,
    max_restarts: int,
    what: str,
    resumes: str,
    say: Callable[[str], None] | None = None,
) -> None:
    """``restart 1 of 2: rank 1 (local rank 1) was killed by SIGKILL; ...`` (on stderr)."""
    line = f"restart {attempt} of {max_restarts}: {what}; {resumes}"
    if say is not None:
        say(line)
    else:
        print(line, file=sys.stderr, flush=True)
