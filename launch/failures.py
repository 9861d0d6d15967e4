"""One short summary of what failed on which rank, from torch elastic's error files.

Each failed rank that raised leaves ``error.json`` (written by torch's
``record``) beside its logs. The earliest error is the root cause; ranks that
failed because another one died (a reset connection) come after it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class RankError:
    """What one rank reported: its exception line, traceback, when (ns) and its log files."""

    local_rank: int
    headline: str
    traceback: str
    timestamp: int
    logs: list[str]


def _latest_attempt(log_root: Path) -> Path | None:
    attempts = sorted(log_root.glob("*/attempt_*"), key=lambda p: p.stat().st_mtime)
    return attempts[-1] if attempts else None


def rank_errors(log_root: Path) -> list[RankError]:
    """The errors recorded in the latest attempt, earliest first."""
    attempt = _latest_attempt(log_root)
    if attempt is None:
        return []
    found = []
    for rank_dir in sorted(p for p in attempt.iterdir() if p.is_dir()):
        logs = [str(p) for p in sorted(rank_dir.glob("std*.log"))]
        error_file = rank_dir / "error.json"
        if not error_file.exists():
            continue
        message = json.loads(error_file.read_text()).get("message", {})
        if not isinstance(message, dict):
            message = {"message": str(message), "extraInfo": {}}
        extra = message.get("extraInfo", {})
        found.append(
            RankError(
                int(rank_dir.name),
                str(message.get("message", "")),
                str(extra.get("py_callstack", "")),
                error_file.stat().st_mtime_ns,
                logs,
            )
        )
    return sorted(found, key=lambda e: (_is_consequence(e.headline), e.timestamp, e.local_rank))


_CONSEQUENCES = ("closed by peer", "reset by peer", "remote worker", "Broken pipe")


def _is_consequence(headline: str) -> bool:
    """Errors a rank gets because another rank died first (its peer's socket closed)."""
    return any(marker in headline for marker in _CONSEQUENCES)


def _last_frames(traceback: str, frames: int) -> list[str]:
    lines = [line for line in traceback.rstrip().splitlines() if line.strip(" ^~")]
    return lines[-(2 * frames + 1) :]


HANG_MARKER = "Timeout ("  # how faulthandler's timed dump (HangWatchdog) starts


def _main_thread_frames(dump: str, frames: int) -> list[str]:
    """The innermost frames of the main thread (listed last) in a faulthandler dump."""
    blocks = [b for b in dump.split("hread 0x") if "File " in b]
    if not blocks:
        return []
    return [line.strip() for line in blocks[-1].splitlines() if line.strip().startswith("File ")][
        :frames
    ]


def hang_reports(log_root: Path, global_offset: int = 0, frames: int = 5) -> list[str]:
    """Ranks whose watchdog fired: how long they were stuck and where."""
    attempt = _latest_attempt(log_root)
    if attempt is None:
        return []
    lines: list[str] = []
    for rank_dir in sorted((p for p in attempt.iterdir() if p.is_dir()), key=lambda p: int(p.name)):
        log = rank_dir / "stderr.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        if HANG_MARKER not in text:
            continue
        dump = text[text.index(HANG_MARKER) :]
        waited = dump[len(HANG_MARKER) : dump.index(")")]
        lines.append(
            f"rank {global_offset + int(rank_dir.name)} made no progress for {waited} "
            "(dist.timeout_s) and was stuck at (innermost first):"
        )
        lines.extend(f"    {frame}" for frame in _main_thread_frames(dump, frames))
        lines.append(f"    log: {log}")
    return lines


def _silent_ranks(log_root: Path, errors: list[RankError]) -> list[int]:
    """Local ranks of the latest attempt that died without recording an exception."""
    attempt = _latest_attempt(log_root)
    if attempt is None:
        return []
    recorded = {e.local_rank for e in errors}
    ranks = [int(p.name) for p in attempt.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(r for r in ranks if r not in recorded)


def _death(local_rank: int, error: Any) -> str:
    failure = next((f for f in error.failures.values() if f.local_rank == local_rank), None)
    if failure is None:
        return "died without raising an exception (killed, or exited abruptly)"
    if failure.exitcode < 0:
        return f"was killed by {failure.signal_name()} (pid {failure.pid})"
    return f"exited with code {failure.exitcode} without raising (pid {failure.pid})"


def summarize(error: Any, log_root: Path, global_offset: int = 0, frames: int = 3) -> str:
    """Hung ranks; else the root cause, its last frames and logs; then the other ranks.

    A rank that died silently (e.g. SIGKILL) comes before ranks whose only
    error is a broken connection to it.
    """
    hung = hang_reports(log_root, global_offset)
    if hung:
        return "\n".join(["the job hung:", *hung])
    errors = rank_errors(log_root)
    lines: list[str] = []
    failed = {f.local_rank for f in error.failures.values()}
    silent = [
        r
        for r in _silent_ranks(log_root, errors)
        if r in failed or not errors or _is_consequence(errors[0].headline)
    ]
    attempt = _latest_attempt(log_root)
    for local_rank in silent:
        lines.append(
            f"rank {global_offset + local_rank} (local rank {local_rank}) "
            f"{_death(local_rank, error)}"
        )
        if attempt is not None:
            lines.append(f"    log: {attempt / str(local_rank) / 'stderr.log'}")
    for i, rank_error in enumerate(errors):
        rank = global_offset + rank_error.local_rank
        if i == 0 and not silent:
            lines.append(
                f"rank {rank} (local rank {rank_error.local_rank}) raised {rank_error.headline}"
            )
            lines.extend("    " + line for line in _last_frames(rank_error.traceback, frames))
            lines.extend(f"    log: {path}" for path in rank_error.logs)
        else:
            lines.append(f"rank {rank} then failed too: {rank_error.headline[:160]}")
    return "\n".join(lines)
