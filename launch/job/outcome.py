"""What the launcher says and returns when a job ends: every word from what happened.

The facts are the signals the launcher got and what it did about them
(:class:`~launch.job.signals.Stop`), the ranks' exit codes, their
``finished`` markers, and ``stop.json`` (written by the recipe's rank 0
after its stop checkpoint is complete). A checkpoint is claimed only when
``stop.json`` names a file (or a committed sharded folder) that exists, or
when the ranks themselves exited 75 (a script's "stopped with a
checkpoint"); exit code 75 ("run again to resume") only then. See
:mod:`launch.exit_codes`. Paths are absolute.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launch import exit_codes
from launch.job.failures import finished_at, summarize
from launch.job.folder import RunFolder
from launch.job.signals import Stop, describe


@dataclass
class Outcome:
    """The launcher's exit code and what it prints on stderr ("" when nothing went wrong)."""

    code: int
    message: str = ""

    def show(self) -> None:
        """Print the message on stderr; a closed stderr (a dropped terminal) is no error."""
        if self.message:
            say(self.message)


def say(text: str, stream: Any = None) -> None:
    """Print ``text`` on ``stream`` (stderr); if it is closed (``| head``, a terminal that
    went away), later writes go nowhere instead of failing."""
    stream = stream or sys.stderr
    try:
        print(text, file=stream, flush=True)
    except (OSError, ValueError):
        _to_devnull(stream)


def flush_or_discard(stream: Any) -> None:
    """Flush ``stream``; if its reader is gone, what is left goes nowhere (no error at exit)."""
    try:
        stream.flush()
    except (OSError, ValueError):
        _to_devnull(stream)


def _to_devnull(stream: Any) -> None:
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _existing(path: Any) -> Path | None:
    """``path`` if it is a checkpoint that exists: a file, or a sharded folder with its manifest."""
    if not path:
        return None
    path = Path(path)
    return path if path.is_file() or (path / "manifest.json").is_file() else None


def _as_stop(stop: Stop | str) -> Stop:
    """A :class:`Stop`, or a signal's name (the launcher's first) made into one."""
    return stop if isinstance(stop, Stop) else Stop(first=stop)


def _how(stop: Stop, saved: bool) -> str:
    """The request in words; a second Ctrl-C only when it is what ended the job."""
    if stop.at_once and not saved:
        return "a second Ctrl-C"
    return describe(stop.first) if stop.first else "a signal to the ranks"


def _after_signal(record: dict[str, Any] | None, how: str) -> str:
    """`` (24 iterations after SIGTERM reached rank 0)``, from the stop record."""
    if not record or record.get("signalled_at") is None or "iteration" not in record:
        return ""
    later = int(record["iteration"]) - int(record["signalled_at"])
    what = "the signal" if how.startswith("a ") else how.split(" (")[-1].rstrip(")")
    if later == 0:
        return f" ({what} reached rank 0 at this iteration)"
    plural = "" if later == 1 else "s"
    return f" ({later} iteration{plural} after {what} reached rank 0)"


def after_stop(
    folder: RunFolder,
    stop: Stop | str,
    resume_command: str,
    run_id: str | None = None,
    codes: dict[int, int | None] | None = None,
    attempt: Path | None = None,
) -> Outcome:
    """The ranks were asked to stop: 75 with the checkpoint, else 130 and why not.

    ``codes``: the ranks' exit codes the agent saw (local rank -> code); ``attempt``:
    the attempt's log folder (its ranks' ``finished`` markers).
    """
    stop = _as_stop(stop)
    done = _finished_anyway(stop, attempt)
    if done is not None:
        return done
    record = folder.read_stop()
    saved = _existing(record and record.get("checkpoint"))
    at = f" at iteration {record['iteration']}" if record and "iteration" in record else ""
    how = _how(stop, saved is not None)
    if saved is not None:
        return Outcome(
            exit_codes.PREEMPTED,
            f"Job stopped by {how} in {folder.path}{at}{_after_signal(record, how)}; "
            f"checkpoint saved: {saved}\nTo resume: {resume_command}",
        )
    known = [c for c in (codes or {}).values() if c is not None]
    if record is None and known and set(known) == {exit_codes.PREEMPTED}:
        return Outcome(
            exit_codes.PREEMPTED,
            f"Job stopped by {how} in {folder.path}: the ranks exited 75, their word for "
            f'"stopped with a checkpoint" (where they saved is theirs to know)\n'
            f"To resume: {resume_command}",
        )
    why = _why_nothing(stop, record, known)
    lines = [
        f"Job interrupted by {how} in {folder.path}{at}: no checkpoint was saved for this stop{why}"
    ]
    newest = _existing(record and record.get("latest"))
    if newest is None and folder.newest_checkpoint(run_id) is not None:
        newest = folder.newest_checkpoint(run_id)[0]
    if newest is not None:
        lines.append(
            f"This run's newest checkpoint is {newest}; to resume from it: {resume_command}"
        )
    return Outcome(exit_codes.INTERRUPTED, "\n".join(lines))


def _why_nothing(stop: Stop, record: dict[str, Any] | None, codes: list[int]) -> str:
    """Why no checkpoint was saved, from what the launcher did and the ranks' exit codes."""
    if stop.killed:
        waited = f"{stop.killed_after_s:.0f} s" if stop.killed_after_s is not None else "long"
        return f" (ranks still running {waited} after the signal were killed)"
    if record is None and codes and set(codes) <= {exit_codes.INTERRUPTED}:
        return " (the ranks exited 130: they save none on a stop)"
    if record is None and any(c < 0 for c in codes):
        return f" (a rank died of {_signal_name(min(codes))})"
    return ""


def _signal_name(code: int) -> str:
    import signal

    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _finished_anyway(stop: Stop, attempt: Path | None) -> Outcome | None:
    """Every rank had finished its task: the job is done whatever the signal did after."""
    if attempt is None or stop.first is None:
        return None
    ends = finished_at(attempt)
    if ends is None:
        return None
    return after_success(stop, attempt)


def after_success(stop: Stop, attempt: Path | None) -> Outcome:
    """The ranks finished (exit 0); a stop signal that came, said for when it came."""
    if stop.first is None:
        return Outcome(exit_codes.DONE)
    how = describe(stop.first)
    ends = finished_at(attempt) if attempt is not None else None
    if ends is not None and stop.at is not None and stop.at >= max(ends):
        return Outcome(exit_codes.DONE, f"note: {how} came after the ranks finished")
    return Outcome(
        exit_codes.DONE,
        f"note: {how} came while the ranks were finishing the run's last steps; they finished "
        "it (nothing to resume)",
    )


def after_failure(
    failures: dict[int, Any],
    attempt: Path | None,
    folder: RunFolder,
    resume_command: str,
    global_offset: int,
    run_id: str | None = None,
) -> Outcome:
    """Ranks exited non-zero: a stop of their own (75/130 codes), else a failure summary.

    ``failures`` maps local ranks to torch's ProcessFailure.
    """
    codes = {local: f.exitcode for local, f in failures.items()}
    if set(codes.values()) <= {exit_codes.PREEMPTED, exit_codes.INTERRUPTED}:
        return after_stop(folder, Stop(), resume_command, run_id, codes, attempt)
    if attempt is None:
        return Outcome(exit_codes.FAILED, f"Job failed in {folder.path} before any rank started")
    summary = summarize(failures, attempt, global_offset)
    return Outcome(exit_codes.FAILED, f"Job failed in {folder.path}:\n{summary}")


def after_agent_error(
    error: BaseException, attempt: Path | None, folder: RunFolder, global_offset: int
) -> Outcome | None:
    """torch's agent raised while it watched the ranks; an Outcome when the cause is known.

    A rank that failed on a full disk leaves an empty error record, which the
    agent cannot parse (a ``JSONDecodeError``): the ranks' own files say what
    happened. Anything else is a bug and is left to raise (None).
    """
    import json

    if not isinstance(error, (json.JSONDecodeError, OSError)) or attempt is None:
        return None
    lines = [f"Job failed in {folder.path}:"]
    full = disk_full(folder.path)
    if full:
        lines.append(full)
    lines.append(summarize({}, attempt, global_offset))
    return Outcome(exit_codes.FAILED, "\n".join(lines))


#: Less free space than this on the run folder's disk is called full.
FULL_BELOW_BYTES = 1 << 20


def disk_full(path: Path) -> str | None:
    """``the disk holding <path> is full ...`` when it has less than a MiB free, else None."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    free = stats.f_bavail * stats.f_frsize
    if free >= FULL_BELOW_BYTES:
        return None
    return (
        f"the disk holding {path} is full ({free // 1024} KiB free): writes there fail with "
        "[ENOSPC] No space left on device"
    )
