"""Schedules given by a formula of the event index: piecewise linear, linear and cosine cycles."""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch

from distengine.handlers.scheduler_base import ParamScheduler


class PiecewiseLinear(ParamScheduler):
    """Linear between ``(event_index, value)`` milestones, constant before and after them.

    Milestones are non-decreasing ints; two equal milestones make a step.

    Example::

        PiecewiseLinear(optimizer, "lr", [(0, 0.0), (500, 0.1), (5000, 0.0)]).attach(trainer)
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        param_name: str,
        milestones_values: Sequence[tuple[int, float]],
        save_history: bool = False,
        param_group_index: int | None = None,
    ) -> None:
        super().__init__(optimizer, param_name, save_history, param_group_index)
        pairs = list(milestones_values) if isinstance(milestones_values, Sequence) else None
        if not pairs or any(not isinstance(p, Sequence) or len(p) != 2 for p in pairs):
            raise ValueError(
                f"milestones_values must be a non-empty list of (milestone, value) pairs, "
                f"got {milestones_values!r}"
            )
        milestones = [m for m, _ in pairs]
        if any(not isinstance(m, numbers.Integral) or isinstance(m, bool) for m in milestones):
            raise TypeError(f"milestones must be ints, got {milestones}")
        if any(b < a for a, b in zip(milestones, milestones[1:])):
            raise ValueError(f"milestones must not decrease, got {milestones}")
        self.milestones = [int(m) for m in milestones]
        self.values = [v for _, v in pairs]
        self._state_attrs += ["milestones", "values"]

    def get_param(self) -> float:
        e, ms, vs = self.event_index, self.milestones, self.values
        if e < ms[0]:
            return vs[0]
        if e >= ms[-1]:
            return vs[-1]
        i = bisect.bisect_right(ms, e) - 1  # ms[i] <= e < ms[i + 1]
        return vs[i] + (vs[i + 1] - vs[i]) * (e - ms[i]) / (ms[i + 1] - ms[i])


class CyclicalScheduler(ParamScheduler):
    """A schedule that repeats every ``cycle_size`` calls (base of the cyclical schedulers).

    After each cycle ``cycle_size`` is multiplied by ``cycle_mult`` (and
    floored), ``start_value`` by ``start_value_mult`` and ``end_value`` by
    ``end_value_mult``. ``warmup_duration`` calls at the end of each cycle
    go linearly from ``end_value`` back to the next cycle's ``start_value``.
    Subclasses give ``get_param`` from ``event_index / cycle_size``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        param_name: str,
        start_value: float,
        end_value: float,
        cycle_size: int,
        cycle_mult: float = 1.0,
        start_value_mult: float = 1.0,
        end_value_mult: float = 1.0,
        warmup_duration: int = 0,
        save_history: bool = False,
        param_group_index: int | None = None,
    ) -> None:
        super().__init__(optimizer, param_name, save_history, param_group_index)
        if not isinstance(cycle_size, numbers.Integral) or cycle_size < 2:
            raise ValueError(f"cycle_size must be an int >= 2, got {cycle_size!r}")
        if not isinstance(warmup_duration, numbers.Integral) or warmup_duration < 0:
            raise ValueError(f"warmup_duration must be an int >= 0, got {warmup_duration!r}")
        self.start_value, self.end_value = start_value, end_value
        self.cycle_size, self.cycle_mult, self.cycle = int(cycle_size), cycle_mult, 0
        self.start_value_mult, self.end_value_mult = start_value_mult, end_value_mult
        self.warmup_duration = int(warmup_duration)
        self.total_cycle_size = self.warmup_duration + self.cycle_size
        self._state_attrs += [
            "start_value",
            "end_value",
            "cycle_size",
            "cycle_mult",
            "cycle",
            "start_value_mult",
            "end_value_mult",
            "warmup_duration",
            "total_cycle_size",
        ]

    def __call__(self, engine: Any = None, name: str | None = None) -> None:
        if self.event_index != 0 and self.event_index == self.cycle_size:
            self.start_value *= self.start_value_mult
        if self.event_index != 0 and self.event_index == self.total_cycle_size:
            self.event_index = 0
            self.cycle_size = int(self.cycle_size * self.cycle_mult)
            self.warmup_duration = int(self.warmup_duration * self.cycle_mult)
            self.total_cycle_size = self.warmup_duration + self.cycle_size
            self.cycle += 1
            self.end_value *= self.end_value_mult
        super().__call__(engine, name)

    def _value(self) -> float | list[float]:
        if self.event_index > self.cycle_size:  # the warm-up back to start_value
            progress = (self.event_index - self.cycle_size) / self.warmup_duration
            return self.end_value + (self.start_value - self.end_value) * progress
        return self.get_param()


class LinearCyclicalScheduler(CyclicalScheduler):
    """Linear from ``start_value`` to ``end_value`` and back within each cycle.

    With ``monotonic=True`` it goes from start to end only (then restarts),
    which allows a ``warmup_duration``.

    Example::

        LinearCyclicalScheduler(optimizer, "lr", 0.0, 0.1, cycle_size=len(loader)).attach(trainer)
    """

    def __init__(self, *args: Any, monotonic: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.monotonic = monotonic
        if self.warmup_duration > 0 and not monotonic:
            raise ValueError(
                f"warmup_duration={self.warmup_duration} needs monotonic=True "
                "(or warmup_duration=0)"
            )
        self._state_attrs += ["monotonic"]

    def get_param(self) -> float:
        progress = self.event_index / self.cycle_size
        if self.monotonic:
            return self.start_value + (self.end_value - self.start_value) * progress
        return self.end_value + (self.start_value - self.end_value) * abs(progress - 0.5) * 2


class CosineAnnealingScheduler(CyclicalScheduler):
    """Cosine from ``start_value`` to ``end_value`` over each cycle (SGDR, Loshchilov & Hutter).

    value = start + (end - start) / 2 * (1 - cos(pi * event_index / cycle_size)).

    Example::

        scheduler = CosineAnnealingScheduler(optimizer, "lr", 0.1, 0.001, cycle_size=len(loader))
        scheduler.attach(trainer)
    """

    def get_param(self) -> float:
        progress = self.event_index / self.cycle_size
        return self.start_value + ((self.end_value - self.start_value) / 2) * (
            1 - math.cos(math.pi * progress)
        )
