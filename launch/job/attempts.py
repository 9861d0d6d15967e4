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
import sys
from collections.abc import Callable
from pathlib import Path

from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
from torch.distributed.elastic.multiprocessing.api import LogsDest
from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

from launch.job.failures import summarize

#: torch's agent logs "failed (exitcode: %s) local_rank: %s (pid: %s) ..." here.
AGENT_LOGGER = "torch.distributed.elastic.multiprocessing.api"


class FirstFailures(logging.Handler):
    """Keeps (exit code, local rank, pid) of the failure torch's agent logs in each attempt."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last: tuple[int, int, int] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if str(record.msg).startswith("failed (exitcode") and len(args) >= 3:
            try:
                self.last = (int(args[0]), int(args[1]), int(args[2]))
            except (TypeError, ValueError):
                return

    def install(self) -> None:
        """Listen to the agent's failure records only (the console stays quiet)."""
        logger = logging.getLogger(AGENT_LOGGER)
        logger.setLevel(logging.ERROR)
        logger.propagate = False
        logger.handlers = [self]


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
