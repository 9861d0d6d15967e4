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


def summarize(error: Any, log_root: Path, global_offset: int = 0, frames: int = 3) -> str:
    """The root cause with its last frames and log files, then the other failed ranks."""
    errors = rank_errors(log_root)
    lines: list[str] = []
    for i, rank_error in enumerate(errors):
        rank = global_offset + rank_error.local_rank
        if i == 0:
            lines.append(
                f"rank {rank} (local rank {rank_error.local_rank}) raised {rank_error.headline}"
            )
            lines.extend("    " + line for line in _last_frames(rank_error.traceback, frames))
            lines.extend(f"    log: {path}" for path in rank_error.logs)
        else:
            lines.append(f"rank {rank} then failed too: {rank_error.headline[:160]}")
    reported = {e.local_rank for e in errors}
    for failure in error.failures.values():
        if failure.local_rank not in reported:
            how = (
                f"killed by {failure.signal_name()}"
                if failure.exitcode < 0
                else f"exited with code {failure.exitcode}"
            )
            lines.append(f"rank {global_offset + failure.local_rank} (pid {failure.pid}) {how}")
    return "\n".join(lines)
