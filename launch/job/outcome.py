"""What the launcher says and returns when a job ends: every word from what happened.

A checkpoint is claimed only when ``stop.json`` (written by the recipe's
rank 0 after the save) names a file (or a committed sharded folder) that
exists; exit code 75 ("run again to resume") only then. See :mod:`launch.exit_codes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launch import exit_codes
from launch.job.failures import summarize
from launch.job.folder import RunFolder


@dataclass
class Outcome:
    """The launcher's exit code and what it prints on stderr ("" when nothing went wrong)."""

    code: int
    message: str = ""


def _existing(path: Any) -> Path | None:
    """``path`` if it is a checkpoint that exists: a file, or a sharded folder with its manifest."""
    if not path:
        return None
    path = Path(path)
    return path if path.is_file() or (path / "manifest.json").is_file() else None


def after_stop(
    folder: RunFolder, how: str, resume_command: str, run_id: str | None = None
) -> Outcome:
    """The ranks were stopped by a signal: 75 with the checkpoint's path, else 130."""
    stop = folder.read_stop()
    saved = _existing(stop and stop.get("checkpoint"))
    at = f" at iteration {stop['iteration']}" if stop and "iteration" in stop else ""
    if saved is not None:
        return Outcome(
            exit_codes.PREEMPTED,
            f"Job stopped by {how} in {folder.path}{at}; checkpoint saved: {saved}\n"
            f"To resume: {resume_command}",
        )
    lines = [
        f"Job interrupted by {how} in {folder.path}{at}: no checkpoint was saved for this stop"
    ]
    newest = _existing(stop and stop.get("latest"))
    if newest is None and folder.newest_checkpoint(run_id) is not None:
        newest = folder.newest_checkpoint(run_id)[0]
    if newest is not None:
        lines.append(
            f"This run's newest checkpoint is {newest}; to resume from it: {resume_command}"
        )
    return Outcome(exit_codes.INTERRUPTED, "\n".join(lines))


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
    codes = {f.exitcode for f in failures.values()}
    if codes <= {exit_codes.PREEMPTED, exit_codes.INTERRUPTED}:
        return after_stop(folder, "a signal to the ranks", resume_command, run_id)
    if attempt is None:
        return Outcome(exit_codes.FAILED, f"Job failed in {folder.path} before any rank started")
    summary = summarize(failures, attempt, global_offset)
    return Outcome(exit_codes.FAILED, f"Job failed in {folder.path}:\n{summary}")
