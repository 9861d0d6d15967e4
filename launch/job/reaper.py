"""No process a rank started outlives its rank: each rank's process group ends with the attempt.

Every rank leads a process group of its own (:mod:`launch.rank.process`),
so what it starts (a script's helper processes, data loader workers) is in
that group unless it leaves it. torch's agent stops a forked rank by
signalling its pid only; its children would be left running, adopted by
init. Each rank therefore records its pid in :data:`PIDS_ENV`'s folder when
it starts, and the launcher ends the groups it finds there once the agent
stopped the ranks (at each restart and at the job's end): SIGTERM, then
SIGKILL to what is still there :data:`GRACE_S` later.

Example::

    groups = Groups(run_dir / "logs" / ".ranks").environment()  # before the ranks start
    ...
    groups.end()                                                 # after they stopped
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

#: Where a rank records its pid (a folder; one empty file per rank, named by its pid).
PIDS_ENV = "DISTENGINE_RANK_PIDS"
#: How long a rank's leftover processes get between SIGTERM and SIGKILL.
GRACE_S = 1.0


def processes() -> Iterator[tuple[int, str, int, int]]:
    """``(pid, state, parent pid, process group)`` of every process, from ``/proc``.

    Example::

        zombies = [pid for pid, state, _, _ in processes() if state == "Z"]
    """
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        yield int(entry.name), fields[0], int(fields[1]), int(fields[2])


def live_groups() -> dict[int, list[int]]:
    """Every process group's live (not zombie) members, from one pass over ``/proc``."""
    groups: dict[int, list[int]] = {}
    for pid, state, _, group in processes():
        if state != "Z":
            groups.setdefault(group, []).append(pid)
    return groups


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class Groups:
    """The process groups of this node's ranks, recorded in ``folder`` as they start."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def environment(self) -> Groups:
        """Create the folder (records of a job that was killed are dropped, not acted on)
        and tell the ranks (they inherit :data:`PIDS_ENV`)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for pid in self.recorded():
            (self.folder / str(pid)).unlink(missing_ok=True)
        os.environ[PIDS_ENV] = str(self.folder)
        return self

    def recorded(self) -> list[int]:
        try:
            return [int(p.name) for p in self.folder.iterdir() if p.name.isdigit()]
        except OSError:
            return []

    def end(self, grace_s: float = GRACE_S) -> list[int]:
        """End every recorded group whose rank has exited; the pids that had to be ended.

        A group whose leader (the rank) still runs is left alone: the agent stops ranks.
        """
        recorded, live = self.recorded(), live_groups()
        groups = [g for g in recorded if g not in live.get(g, [])]
        left = {g: live.get(g, []) for g in groups}
        found = [pid for pids in left.values() for pid in pids]
        for group in groups:
            if left[group]:
                _signal_group(group, signal.SIGTERM)
        end = time.monotonic() + grace_s
        while any(left.values()) and time.monotonic() < end:
            time.sleep(0.05)
            live = live_groups()
            left = {g: live.get(g, []) for g in groups}
        for group in groups:
            if left[group]:
                _signal_group(group, signal.SIGKILL)
            (self.folder / str(group)).unlink(missing_ok=True)
        return found


def record_rank() -> None:
    """In a rank: record this process's group (it leads it) for the launcher to end later."""
    folder = os.environ.get(PIDS_ENV)
    if folder and os.path.isdir(folder):
        Path(folder, str(os.getpid())).touch()
