"""Learning-rate (and other optimizer parameter) schedules as engine handlers."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler as TorchLRScheduler

from distengine.engine import Engine


class LRScheduler:
    """Steps a ``torch.optim.lr_scheduler`` scheduler each time its event fires.

    Example::

        scheduler = LRScheduler(torch.optim.lr_scheduler.StepLR(optimizer, step_size=30))
        trainer.add_event_handler(Events.EPOCH_COMPLETED, scheduler)
    """

    def __init__(self, lr_scheduler: TorchLRScheduler) -> None:
        if not isinstance(lr_scheduler, TorchLRScheduler):
            raise TypeError(
                "LRScheduler wraps a torch.optim.lr_scheduler scheduler, "
                f"got {type(lr_scheduler).__name__}"
            )
        self.lr_scheduler = lr_scheduler

    def __call__(self, engine: Engine | None = None) -> None:
        self.lr_scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return self.lr_scheduler.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.lr_scheduler.load_state_dict(state_dict)


class ParamScheduler(ABC):
    """Sets ``param_name`` of every param group to ``value_at(n)`` on its n-th call (n from 0)."""

    def __init__(self, optimizer: torch.optim.Optimizer, param_name: str = "lr") -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch Optimizer, got {type(optimizer).__name__}")
        missing = [i for i, g in enumerate(optimizer.param_groups) if param_name not in g]
        if missing:
            raise ValueError(f"param groups {missing} have no {param_name!r}")
        self.optimizer, self.param_name = optimizer, param_name
        self.event_index = 0

    @abstractmethod
    def value_at(self, index: int) -> float:
        """The parameter's value at call ``index``."""

    def __call__(self, engine: Engine | None = None) -> None:
        value = self.value_at(self.event_index)
        for group in self.optimizer.param_groups:
            group[self.param_name] = value
        self.event_index += 1

    def state_dict(self) -> dict[str, Any]:
        return {"event_index": self.event_index}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.event_index = int(state_dict["event_index"])


class PiecewiseLinear(ParamScheduler):
    """Linear between ``(event_index, value)`` milestones, constant outside them.

    Example::

        PiecewiseLinear(optimizer, "lr", [(0, 0.0), (500, 0.1), (5000, 0.0)])
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        param_name: str,
        milestones_values: Sequence[tuple[int, float]],
    ) -> None:
        super().__init__(optimizer, param_name)
        points = [(int(m), float(v)) for m, v in milestones_values]
        if len(points) < 2 or any(b[0] <= a[0] for a, b in zip(points, points[1:])):
            raise ValueError(
                "milestones_values needs 2+ (index, value) pairs with increasing indices, "
                f"got {points}"
            )
        self.points = points

    def value_at(self, index: int) -> float:
        if index <= self.points[0][0]:
            return self.points[0][1]
        for (m0, v0), (m1, v1) in zip(self.points, self.points[1:]):
            if index <= m1:
                return v0 + (v1 - v0) * (index - m0) / (m1 - m0)
        return self.points[-1][1]


class CosineAnnealingScheduler(ParamScheduler):
    """Cosine from ``start_value`` to ``end_value`` over ``cycle_size`` calls, then again.

    Example::

        CosineAnnealingScheduler(optimizer, "lr", 0.1, 0.001, cycle_size=len(train_loader))
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        param_name: str,
        start_value: float,
        end_value: float,
        cycle_size: int,
    ) -> None:
        super().__init__(optimizer, param_name)
        if not isinstance(cycle_size, int) or cycle_size < 2:
            raise ValueError(f"cycle_size must be an int >= 2, got {cycle_size!r}")
        self.start_value, self.end_value, self.cycle_size = start_value, end_value, cycle_size

    def value_at(self, index: int) -> float:
        progress = (index % self.cycle_size) / self.cycle_size
        return self.end_value + 0.5 * (self.start_value - self.end_value) * (
            1 + math.cos(math.pi * progress)
        )


class _WarmupThen:
    """Linear warm-up for ``duration`` calls, then a wrapped torch scheduler."""

    def __init__(self, warmup: PiecewiseLinear, after: LRScheduler, duration: int) -> None:
        self.warmup, self.after, self.duration = warmup, after, duration

    def __call__(self, engine: Engine | None = None) -> None:
        if self.warmup.event_index < self.duration:
            self.warmup(engine)
        else:
            self.after(engine)

    def state_dict(self) -> dict[str, Any]:
        return {"warmup": self.warmup.state_dict(), "after": self.after.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.warmup.load_state_dict(state_dict["warmup"])
        self.after.load_state_dict(state_dict["after"])


def create_lr_scheduler_with_warmup(
    lr_scheduler: TorchLRScheduler | LRScheduler,
    warmup_start_value: float,
    warmup_duration: int,
    warmup_end_value: float | None = None,
) -> _WarmupThen:
    """Warm the learning rate up linearly for ``warmup_duration`` calls, then run ``lr_scheduler``.

    ``warmup_end_value`` defaults to the optimizer's initial learning rate.

    Example::

        sched = create_lr_scheduler_with_warmup(StepLR(optimizer, 10), 0.0, warmup_duration=100)
        trainer.add_event_handler(Events.ITERATION_STARTED, sched)
    """
    after = lr_scheduler if isinstance(lr_scheduler, LRScheduler) else LRScheduler(lr_scheduler)
    if not isinstance(warmup_duration, int) or warmup_duration < 1:
        raise ValueError(f"warmup_duration must be an int >= 1, got {warmup_duration!r}")
    optimizer = after.lr_scheduler.optimizer
    end = warmup_end_value if warmup_end_value is not None else after.lr_scheduler.base_lrs[0]
    warmup = PiecewiseLinear(
        optimizer, "lr", [(0, warmup_start_value), (max(warmup_duration - 1, 1), end)]
    )
    return _WarmupThen(warmup, after, warmup_duration)
