"""One short summary of what failed on which rank, read from this job's own attempt folder.

Each rank's folder holds torch's ``error.json`` when the rank raised,
``finished`` when its task returned (:mod:`launch.rank.process`),
``stacks.txt`` when the agent stopped it with SIGTERM, its stderr log
with the watchdog's dump when it hung, and what the launcher saw when the
agent reported the attempt's first failure (:mod:`launch.job.attempts`):
``exitcode`` (how the rank's process ended) and ``frozen`` (it was stopped,
state ``T``). The culprit comes first: a frozen rank, a rank that left
early, died silently, raised first, or was not inside a collective while
the others waited in one; ranks that failed because of it come after.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launch.rank.process import FINISHED_MARKER, STACKS_FILE

HANG_MARKER = "Timeout ("  # how faulthandler's timed dump (HangWatchdog) starts
#: Written by the launcher into a rank's folder: how its process ended, and that it was frozen.
EXIT_CODE_FILE = "exitcode"
FROZEN_FILE = "frozen"
ERROR_FILE = "error.json"
_CONSEQUENCES = (
    "closed by peer",
    "reset by peer",
    "remote worker",
    "Broken pipe",
    "Timed out",
    "(the failure of rank 0)",  # raised by the ranks that waited for its checkpoint write
)
_COLLECTIVE_FILES = (
    "distributed_c10d.py",
    "distributed/collectives.py",
    "distributed/consensus.py",
    "c10d_logger.py",
    "autograd/graph.py",  # a backward pass: DDP all-reduces gradients inside it
)


@dataclass
class RankError:
    """What one rank reported: its exception line, traceback, when (ns) and its log files."""

    local_rank: int
    headline: str
    traceback: str
    timestamp: int
    logs: list[str]


def rank_dirs(attempt: Path) -> list[Path]:
    """The rank folders of an attempt, by local rank."""
    dirs = [p for p in attempt.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(dirs, key=lambda p: int(p.name))


def rank_errors(attempt: Path) -> list[RankError]:
    """The errors the ranks of ``attempt`` recorded: root causes first, then by time.

    Records that do not parse (a full disk leaves them empty) are left out
    here and named by :func:`unreadable_records`.
    """
    found = []
    for rank_dir in rank_dirs(attempt):
        error_file = rank_dir / ERROR_FILE
        try:
            text, stamp = error_file.read_text(errors="replace"), error_file.stat().st_mtime_ns
        except OSError:
            continue
        message = _record(text)
        if message is None:
            continue
        extra = message.get("extraInfo")
        extra = extra if isinstance(extra, dict) else {}
        found.append(
            RankError(
                int(rank_dir.name),
                str(message.get("message", "")),
                str(extra.get("py_callstack", "")),
                stamp,
                [str(p) for p in sorted(rank_dir.glob("std*.log"))],
            )
        )
    return sorted(found, key=lambda e: (is_consequence(e.headline), e.timestamp, e.local_rank))


def _record(text: str) -> dict[str, Any] | None:
    """torch's error record's ``message`` part, or None when the file does not parse."""
    try:
        message = json.loads(text).get("message", {})
    except (ValueError, AttributeError):
        return None
    if not isinstance(message, dict):
        message = {"message": str(message), "extraInfo": {}}
    return message


def unreadable_records(attempt: Path) -> list[Path]:
    """The ranks' error records that do not parse (empty or cut)."""
    broken = []
    for rank_dir in rank_dirs(attempt):
        error_file = rank_dir / ERROR_FILE
        try:
            text = error_file.read_text(errors="replace")
        except OSError:
            continue
        if _record(text) is None:
            broken.append(error_file)
    return broken


def is_consequence(headline: str) -> bool:
    """Errors a rank gets because another rank died or stalled (its peer's socket, a timeout)."""
    return any(marker in headline for marker in _CONSEQUENCES)


def finished(rank_dir: Path) -> bool:
    return (rank_dir / FINISHED_MARKER).exists()


def all_finished(attempt: Path) -> bool:
    """Whether every rank of the attempt returned from its task."""
    return finished_at(attempt) is not None


def finished_at(attempt: Path) -> list[float] | None:
    """When each rank of the attempt returned from its task (``time.time()``), or None
    unless every one did."""
    try:
        dirs = rank_dirs(attempt)
        times = [(d / FINISHED_MARKER).stat().st_mtime for d in dirs]
    except OSError:
        return None
    return times or None


def recorded_exit(rank_dir: Path) -> int | None:
    """How the rank's process ended, as the launcher recorded it (None: not recorded)."""
    try:
        return int((rank_dir / EXIT_CODE_FILE).read_text())
    except (OSError, ValueError):
        return None


def frozen(rank_dir: Path) -> bool:
    """Whether the launcher saw the rank stopped (state T) when the attempt failed."""
    return (rank_dir / FROZEN_FILE).exists()


def main_thread_frames(dump: str, frames: int) -> list[str]:
    """The innermost frames of the main thread (listed last) in a faulthandler dump."""
    blocks = [b for b in dump.split("hread 0x") if "File " in b]
    if not blocks:
        return []
    lines = [line.strip() for line in blocks[-1].splitlines() if line.strip().startswith("File ")]
    return lines[:frames]


def in_collective(frames: list[str]) -> bool:
    return any(name in frame for frame in frames for name in _COLLECTIVE_FILES)


def death(exitcode: int | None, rank_dir: Path | None) -> str:
    """How a rank that recorded no exception ended, in words."""
    if rank_dir is not None and finished(rank_dir):
        return "finished its task early (returned) while the other ranks still needed it"
    if exitcode is None:
        return "died without raising an exception (killed, or exited abruptly)"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode} without raising"


def hang_reports(attempt: Path, global_offset: int = 0, frames: int = 5) -> list[str]:
    """Ranks whose watchdog fired, the ones not inside a collective (the culprits) first."""
    reports = []
    for rank_dir in rank_dirs(attempt):
        log = rank_dir / "stderr.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        if HANG_MARKER not in text:
            continue
        dump = text[text.index(HANG_MARKER) :]
        waited = dump[len(HANG_MARKER) : dump.index(")")]
        stack = main_thread_frames(dump, frames)
        where = "waiting inside a collective" if in_collective(stack) else "NOT inside a collective"
        lines = [
            f"rank {global_offset + int(rank_dir.name)} made no progress for {waited}, "
            f"{where}; stuck at (innermost first):",
            *(f"    {frame}" for frame in stack),
            f"    log: {log}",
        ]
        reports.append((in_collective(stack), lines))
    reports.sort(key=lambda report: report[0])
    return [line for _, lines in reports for line in lines]


def _stack_at_stop(rank_dir: Path, frames: int) -> list[str]:
    stacks = rank_dir / STACKS_FILE
    return main_thread_frames(stacks.read_text(errors="replace"), frames) if stacks.exists() else []


def stray_ranks(attempt: Path, global_offset: int, frames: int = 5) -> list[str]:
    """Ranks stopped by the agent while running outside any collective (from stacks.txt)."""
    lines = []
    for rank_dir in rank_dirs(attempt):
        stack = _stack_at_stop(rank_dir, frames)
        if stack and not in_collective(stack):
            lines.append(
                f"rank {global_offset + int(rank_dir.name)} (local rank {rank_dir.name}) was "
                "not inside a collective when the job was stopped (the likely cause: the "
                "others waited for it); it was at (innermost first):"
            )
            lines.extend(f"    {frame}" for frame in stack)
    return lines


def frozen_ranks(attempt: Path, offset: int) -> list[str]:
    """Ranks the launcher saw stopped (state T) while the others ran: the culprits of a hang."""
    lines = []
    for rank_dir in rank_dirs(attempt):
        if frozen(rank_dir):
            local = int(rank_dir.name)
            lines.append(
                f"rank {offset + local} (local rank {local}) was frozen: its process was stopped "
                "(SIGSTOP, Ctrl-Z or a debugger) while the other ranks waited for it"
            )
            stack = _stack_at_stop(rank_dir, 5)
            if stack:
                lines.append("    it was at (innermost first):")
                lines.extend(f"    {frame}" for frame in stack)
            lines.append(f"    log: {rank_dir / 'stderr.log'}")
    return lines


def _silent(failures: dict[int, Any], attempt: Path, offset: int, blame: bool) -> list[str]:
    """Ranks that died without an exception; with ``blame`` also those the agent did not stop.

    The rank the agent saw fail first leads: another rank without a record may
    be one the agent stopped while it was still writing its error. How a rank
    ended comes from the agent's failure, else from what the launcher recorded.
    """
    dirs = sorted(rank_dirs(attempt), key=lambda d: (int(d.name) not in failures, int(d.name)))
    lines = []
    for rank_dir in dirs:
        local = int(rank_dir.name)
        if (rank_dir / ERROR_FILE).exists() or finished(rank_dir) or frozen(rank_dir):
            continue
        if local not in failures and not (blame and not _stack_at_stop(rank_dir, 1)):
            continue
        code = failures[local].exitcode if local in failures else recorded_exit(rank_dir)
        lines.append(f"rank {offset + local} (local rank {local}) {death(code, rank_dir)}")
        lines.append(f"    log: {rank_dir / 'stderr.log'}")
    return lines


def summarize(
    failures: dict[int, Any], attempt: Path, global_offset: int = 0, frames: int = 3
) -> str:
    """Hung ranks; else the culprit, its last frames and logs; then the other ranks.

    ``failures`` maps local ranks to torch's ProcessFailure (``exitcode``).
    """
    early = [
        f"rank {global_offset + int(d.name)} (local rank {d.name}) {death(None, d)}"
        for d in rank_dirs(attempt)
        if finished(d)
    ]
    hung = hang_reports(attempt, global_offset)
    stopped = frozen_ranks(attempt, global_offset)
    if hung:
        return "\n".join(["the job hung:", *stopped, *early, *hung])
    errors = rank_errors(attempt)
    blame_others = not errors or is_consequence(errors[0].headline)
    lines = [*stopped, *early, *_silent(failures, attempt, global_offset, blame_others)]
    if blame_others and not lines:  # a rank that died or left is the cause, not the strays
        lines.extend(stray_ranks(attempt, global_offset))
    for i, error in enumerate(errors):
        rank = global_offset + error.local_rank
        if i == 0 and not lines:
            lines.append(f"rank {rank} (local rank {error.local_rank}) raised {error.headline}")
            lines.extend("    " + line for line in _last_frames(error.traceback, frames))
            lines.extend(f"    log: {path}" for path in error.logs)
        else:
            lines.append(f"rank {rank} then failed too: {error.headline[:200]}")
    broken = unreadable_records(attempt)
    if broken:
        ranks = ", ".join(f"rank {global_offset + int(p.parent.name)}" for p in broken)
        lines.append(f"{ranks} raised, but left an unreadable error record (empty or cut):")
        lines.extend(f"    {path}" for path in broken)
    return "\n".join(lines) or "a rank failed without leaving a record (see the logs)"


def _last_frames(traceback: str, frames: int) -> list[str]:
    """The innermost ``frames`` frames of a traceback, each with its ``File`` line, and the
    exception's lines; markers (``^^^``) left out."""
    lines = [line for line in traceback.rstrip().splitlines() if line.strip(" ^~")]
    starts = [i for i, line in enumerate(lines) if line.lstrip().startswith('File "')]
    if not starts:
        return lines[-(2 * frames + 1) :]
    end = next((i for i in range(starts[-1] + 1, len(lines)) if not lines[i][:1].isspace()), None)
    body = lines[starts[-frames] if len(starts) >= frames else starts[0] : end]
    return body + (lines[end:] if end is not None else [])
