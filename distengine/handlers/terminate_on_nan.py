"""Stop every rank when any rank's output holds NaN or infinity."""

from __future__ import annotations

import cmath
import numbers
from collections.abc import Callable
from typing import Any

import torch

from distengine.distributed.consensus import any_rank
from distengine.engine import Engine, Events
from distengine.engine.board import check_every

#: Events at which a check is posted to the engine's board instead of agreed on the spot.
ITERATION_EVENTS = (Events.ITERATION_COMPLETED, Events.ITERATION_STARTED)


def _not_finite(value: Any) -> bool | torch.Tensor:
    """Whether any number in ``value`` (tensors, numbers, nested) is NaN or infinite:
    a bool, or a 0-d bool tensor on the tensor's device (no host sync)."""
    if isinstance(value, torch.Tensor):
        return ~torch.isfinite(value.detach()).all()
    if isinstance(value, numbers.Number):
        return not cmath.isfinite(value)
    items = list(value.values()) if isinstance(value, dict) else value
    flags = [_not_finite(item) for item in items] if isinstance(items, (list, tuple)) else []
    if any(flag is True for flag in flags):
        return True
    tensors = [flag for flag in flags if isinstance(flag, torch.Tensor)]
    if not tensors:
        return False
    found = tensors[0]
    for flag in tensors[1:]:
        found = found | flag.to(found.device)
    return found


class TerminateOnNan:
    """When any rank's output holds NaN or infinity, every rank terminates, at the same iteration.

    On ``ITERATION_COMPLETED`` (or ``ITERATION_STARTED``) each call checks the
    (transformed) output where it is (a device tensor stays on the device: no
    host sync) and posts the result to the engine's consensus board
    (``engine.board``). The ranks agree on it in the board's one asynchronous
    collective (shared with :class:`Preemption`, :class:`TimeLimit`, running
    averages): about every half second by default, or every ``every``
    iterations; all terminate one iteration after that exchange
    (PyTorch-Ignite stops at the very iteration of the bad output; ``every=1``
    comes closest, one iteration later). ``engine.state.terminated_on_nan`` is
    then True. It works however it is added: :meth:`attach`,
    ``add_event_handler`` or ``@trainer.on``, before a run, between runs or
    after ``interrupt()``. Attached to another event it agrees on the spot
    (one tiny all-reduce).

    Example::

        trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan())
    """

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        every: int | None = None,
    ) -> None:
        self.output_transform = output_transform
        self.every = check_every(every)

    def attach(self, engine: Engine) -> None:
        """Check after every iteration of ``engine`` (the same as adding it to
        ``ITERATION_COMPLETED``, with the board set up before the run)."""
        self._slot(engine)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def join_board(self, engine: Engine) -> None:
        """Register this check on ``engine``'s board (the engine calls it when the handler is
        added to an iteration event, on every rank alike: a rank whose shard is empty, and so
        never calls the handler, still takes part in the board's agreement)."""
        self._slot(engine)

    def _slot(self, engine: Engine) -> Any:
        board = engine.board
        if not board.has(self):
            board.flag(self, self.every, lambda: self._stop(engine))
        return board

    def __call__(self, engine: Engine) -> None:
        bad = _not_finite(self.output_transform(engine.state.output))
        if engine.last_event_name in ITERATION_EVENTS:
            self._slot(engine).post(self, bad)
        elif any_rank(bad):
            self._stop(engine)

    @staticmethod
    def _stop(engine: Engine) -> None:
        engine.state.terminated_on_nan = True
        engine.terminate()
