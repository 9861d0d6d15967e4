"""Timing parts of a run: total or average per step, with pause and resume."""

from __future__ import annotations

import time
from typing import Any

from distengine.engine import Engine, Events


class Timer:
    """A stopwatch driven by engine events.

    Example (average time per iteration, data loading excluded)::

        timer = Timer(average=True)
        timer.attach(trainer, start=Events.EPOCH_STARTED, resume=Events.ITERATION_STARTED,
                     pause=Events.ITERATION_COMPLETED, step=Events.ITERATION_COMPLETED)
        timer.value()    # seconds per iteration
    """

    def __init__(self, average: bool = False) -> None:
        self.average = average
        self.reset()

    def reset(self, *args: Any) -> Timer:
        """Zero the clock and start it."""
        self._t0 = time.perf_counter()
        self.total = 0.0
        self.step_count = 0
        self.running = True
        return self

    def pause(self, *args: Any) -> None:
        if self.running:
            self.total += time.perf_counter() - self._t0
            self.running = False

    def resume(self, *args: Any) -> None:
        if not self.running:
            self._t0 = time.perf_counter()
            self.running = True

    def step(self, *args: Any) -> None:
        self.step_count += 1

    def value(self) -> float:
        """Seconds counted so far, or per step with ``average=True``."""
        total = self.total + (time.perf_counter() - self._t0 if self.running else 0.0)
        return total / max(self.step_count, 1) if self.average else total

    def attach(
        self,
        engine: Engine,
        start: Any = Events.STARTED,
        pause: Any = Events.COMPLETED,
        resume: Any = None,
        step: Any = None,
    ) -> Timer:
        """Reset on ``start``, pause on ``pause``, and optionally resume and count steps."""
        engine.add_event_handler(start, self.reset)
        engine.add_event_handler(pause, self.pause)
        if resume is not None:
            engine.add_event_handler(resume, self.resume)
        if step is not None:
            engine.add_event_handler(step, self.step)
        return self
