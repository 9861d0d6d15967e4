"""End a run, on all ranks together, once it has used its time."""

from __future__ import annotations

import time

from distengine.distributed import broadcast, get_world_size
from distengine.engine import Engine


class TimeLimit:
    """Terminate after ``limit_sec`` seconds of the run (rank 0's clock decides for all).

    Checked on every call; with several ranks each check is one tiny
    broadcast, so attach it to a filtered event to check less often.

    Example::

        trainer.add_event_handler(Events.ITERATION_COMPLETED(every=10), TimeLimit(3600))
    """

    def __init__(self, limit_sec: float) -> None:
        if not isinstance(limit_sec, (int, float)) or limit_sec <= 0:
            raise ValueError(f"limit_sec must be a positive number, got {limit_sec!r}")
        self.limit_sec = limit_sec
        self.start = time.monotonic()

    def __call__(self, engine: Engine) -> None:
        over = int(time.monotonic() - self.start > self.limit_sec)
        if get_world_size() > 1:
            over = broadcast(over)
        if over:
            engine.terminate()
