"""``<run_dir>/stop.json``: what rank 0 says when the ranks stop on a signal (contract C5).

``{"reason": "preempted" | "interrupted", "iteration": N, "checkpoint": path or null,
"latest": path or null, "signalled_at": M or null}``: ``checkpoint`` is the file saved
for this stop, ``latest`` the newest checkpoint of the run (the launcher names it when no
checkpoint was saved for the stop), ``signalled_at`` the iteration rank 0 was at when
the signal reached it (the launcher says how many iterations ran after it).
"""

from __future__ import annotations

import json
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
