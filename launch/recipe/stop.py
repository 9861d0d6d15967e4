"""``<run_dir>/stop.json``: what rank 0 says when the ranks stop on a signal (contract C5).

``{"reason": "preempted" | "interrupted", "iteration": N, "checkpoint": path or null,
"latest": path or null, "signalled_at": M or null}``: ``checkpoint`` is the file saved
for this stop, ``latest`` the newest checkpoint of the run (the launcher names it when no
checkpoint was saved for the stop), ``signalled_at`` the iteration rank 0 was at when
the signal reached it (the launcher says how many iterations ran after it).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import distengine.distributed as idist
from launch.job.folder import STOP_FILE, write_text


def write_stop(
    run_dir: str | Path,
    reason: str,
    iteration: int,
    checkpoint: Any,
    latest: Any,
    signalled_at: int | None = None,
) -> None:
    """Write the stop record (rank 0; after the checkpoint it names is complete)."""
    if idist.get_rank() != 0:
        return
    record = {
        "reason": reason,
        "iteration": int(iteration),
        "checkpoint": str(checkpoint) if checkpoint else None,
        "latest": str(latest) if latest else None,
        "signalled_at": int(signalled_at) if signalled_at is not None else None,
    }
    write_text(Path(run_dir) / STOP_FILE, json.dumps(record))


def ignore_stop_signals(*args: Any) -> None:
    """The run is complete: a stop signal now changes nothing, so it must not end the rank.

    Attached to the trainer's COMPLETED after Preemption (which hands the
    signals back then); the launcher says when the signal came. The agent
    stops a finished rank that another rank's failure leaves waiting with
    SIGTERM once the rank has marked itself finished
    (:func:`launch.rank.process.finished_signals`).
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
