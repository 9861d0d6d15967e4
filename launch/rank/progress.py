"""The iteration this node's ranks reached, for the launcher's account of the work a restart redoes.

Local rank 0 of each node overwrites one small file (``$DISTENGINE_PROGRESS``)
with the trainer's iteration after each one (a ``pwrite``, no sync); when
the ranks restart, the launcher reads it (:func:`reached`) and compares it
with the checkpoint the ranks resume from.

Example::

    track(trainer)                      # in the recipe, on every rank
    reached(Path("logs/progress"))      # in the launcher, after the ranks stopped
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PROGRESS_ENV = "DISTENGINE_PROGRESS"


def track(trainer: Any) -> None:
    """Record ``trainer``'s iteration after each one (local rank 0 of a launched job only)."""
    from distengine.engine import Events

    path = os.environ.get(PROGRESS_ENV)
    if not path or os.environ.get("LOCAL_RANK", "0") != "0":
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError:
        return

    def write(engine: Any) -> None:
        try:
            os.pwrite(fd, b"%20d" % engine.state.iteration, 0)
        except OSError:
            pass

    trainer.add_event_handler(Events.ITERATION_COMPLETED, write)


def reached(path: Path) -> int | None:
    """The iteration recorded in ``path`` (then cleared), or None when none was."""
    try:
        text = path.read_text().strip()
        path.write_text("")
    except OSError:
        return None
    return int(text) if text.isdigit() else None
