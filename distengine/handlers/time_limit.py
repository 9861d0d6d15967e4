"""End a run, on all ranks together, once it has used its time."""

from __future__ import annotations

import time

from distengine.distributed.consensus import any_rank
from distengine.engine import Engine
from distengine.engine.board import check_every
from distengine.handlers.terminate_on_nan import ITERATION_EVENTS


class TimeLimit:
    """Terminate once ``limit_sec`` seconds have passed since it was made, on every rank at once.

    On ``ITERATION_COMPLETED`` (or ``ITERATION_STARTED``) the clocks are
    compared in the engine's consensus board (``engine.board``: one
    asynchronous collective shared with the other checks, about every half
    second, or every ``every`` iterations): when any rank's clock is past the
    limit, every rank terminates one iteration after that exchange. Between
    exchanges a call costs nothing. It works however it is added
    (:meth:`attach`, ``add_event_handler``, ``@trainer.on``, before a run,
    between runs or after ``interrupt()``). Attached to another event it
    agrees on the spot (one tiny all-reduce).

    Example::

        trainer.add_event_handler(Events.ITERATION_COMPLETED, TimeLimit(3600))
    """

    def __init__(self, limit_sec: float = 28800, every: int | None = None) -> None:
        if isinstance(limit_sec, bool) or not isinstance(limit_sec, (int, float)) or limit_sec <= 0:
            raise ValueError(f"limit_sec must be a positive number, got {limit_sec!r}")
        self.limit_sec = limit_sec
        self.every = check_every(every)
        self.start = time.monotonic()

    def _over(self) -> bool:
        return time.monotonic() - self.start > self.limit_sec

    def attach(self, engine: Engine) -> None:
        """Check ``engine`` at its board's exchanges (the same as adding it to
        ``ITERATION_COMPLETED``, with the board set up before the run)."""
        self._slot(engine)

    def join_board(self, engine: Engine) -> None:
        """Register this check on ``engine``'s board (the engine calls it when the handler is
        added to an iteration event, on every rank alike: a rank whose shard is empty, and so
        never calls the handler, still takes part in the board's agreement)."""
        self._slot(engine)

    def _slot(self, engine: Engine) -> None:
        board = engine.board
        if not board.has(self):
            board.flag(self, self.every, engine.terminate, poll=self._over)

    def __call__(self, engine: Engine) -> None:
        if engine.last_event_name in ITERATION_EVENTS:
            self._slot(engine)
        elif any_rank(self._over()):
            engine.terminate()
