"""torch.optim learning-rate schedulers as engine handlers, warm-up, and reduce-on-plateau."""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler as TorchLRScheduler
from torch.optim.lr_scheduler import ReduceLROnPlateau

from distengine.engine import Engine
from distengine.handlers.scheduler_base import (
    ParamScheduler,
    _check_count,
    fake_optimizer,
    record_history,
)
from distengine.handlers.scheduler_combinators import (
    ConcatScheduler,
    ParamGroupScheduler,
    _restored,
)
from distengine.handlers.value_schedulers import PiecewiseLinear


def _one_or_list(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else values


class LRScheduler(ParamScheduler):
    """Runs a ``torch.optim.lr_scheduler`` scheduler as a handler, as PyTorch-Ignite does.

    The n-th call applies the torch scheduler's n-th learning rate: the
    first call keeps the initial one, every later call steps the scheduler.
    Attach it to ``Events.ITERATION_STARTED`` (or ``EPOCH_STARTED``) so
    that iteration n + 1 trains with the n-th value, exactly the sequence a
    plain loop that steps after each optimizer step would use.
    ``use_legacy=True`` skips the initial value (attach it to
    ``ITERATION_COMPLETED`` then). For ``ReduceLROnPlateau`` use
    :class:`ReduceLROnPlateauScheduler`.

    Example::

        scheduler = LRScheduler(torch.optim.lr_scheduler.StepLR(optimizer, step_size=30))
        trainer.add_event_handler(Events.ITERATION_STARTED, scheduler)
    """

    def __init__(
        self, lr_scheduler: TorchLRScheduler, save_history: bool = False, use_legacy: bool = False
    ) -> None:
        if isinstance(lr_scheduler, ReduceLROnPlateau):
            raise TypeError(
                "LRScheduler cannot drive ReduceLROnPlateau: use ReduceLROnPlateauScheduler"
            )
        if not isinstance(lr_scheduler, TorchLRScheduler):
            raise TypeError(
                "LRScheduler wraps a torch.optim.lr_scheduler scheduler, "
                f"got {type(lr_scheduler).__name__}"
            )
        self.lr_scheduler = lr_scheduler
        super().__init__(lr_scheduler.optimizer, "lr", save_history)
        self._steps_first = False
        if use_legacy:
            warnings.warn(
                "LRScheduler(use_legacy=True) starts with the scheduler's second value: attach it "
                "to Events.ITERATION_COMPLETED so that the first iteration uses the initial lr",
                UserWarning,
                stacklevel=2,
            )
            self._steps_first = True
        self._state_attrs += ["lr_scheduler", "_steps_first"]

    def __call__(self, engine: Engine | None = None, name: str | None = None) -> None:
        if self.event_index > 0 or self._steps_first:
            self.lr_scheduler.step()
        else:
            for group, lr in zip(self.optimizer_param_groups, self.lr_scheduler.get_last_lr()):
                group["lr"] = lr
        if self.save_history:
            values = [group["lr"] for group in self.optimizer_param_groups]
            record_history(engine, name or self.param_name, values)
        self.event_index += 1

    def get_param(self) -> float | list[float]:
        """The learning rate(s) the next call applies (the scheduler is left as it is)."""
        if self.event_index == 0 and not self._steps_first:
            return _one_or_list(list(self.lr_scheduler.get_last_lr()))
        groups = self.optimizer_param_groups
        saved_lrs = [group["lr"] for group in groups]
        saved_state = self.lr_scheduler.state_dict()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # stepping before the optimizer: expected here
            self.lr_scheduler.step()
        values = [group["lr"] for group in groups]
        self.lr_scheduler.load_state_dict(saved_state)
        for group, lr in zip(groups, saved_lrs):
            group["lr"] = lr
        return _one_or_list(values)

    @classmethod
    def simulate_values(  # type: ignore[override]
        cls, num_events: int, lr_scheduler: TorchLRScheduler, **kwargs: Any
    ) -> list[list[Any]]:
        """``[[event_index, lr per param group...], ...]``; ``lr_scheduler`` is left as it was.

        Example: ``LRScheduler.simulate_values(100, StepLR(optimizer, 30))``.
        """
        _check_count(num_events)
        scheduler = cls(lr_scheduler, save_history=False, **kwargs)
        values = []
        with _restored([scheduler]):
            for i in range(num_events):
                scheduler(None)
                values.append([i, *[group["lr"] for group in scheduler.optimizer_param_groups]])
        return values


class ReduceLROnPlateauScheduler(ParamScheduler):
    """Lowers the learning rate when a metric stops improving (torch's ``ReduceLROnPlateau``).

    Each call reads ``engine.state.metrics[metric_name]`` of the engine it
    is attached to (usually the evaluator, on ``Events.COMPLETED``).
    ``scheduler_kwargs`` go to ``ReduceLROnPlateau`` (``mode``, ``factor``,
    ``patience``, ``threshold``, ``min_lr``, ...). ``trainer`` (optional)
    is where ``save_history`` records the values.

    On several ranks every rank takes the same decision: the metrics that
    distengine publishes are already reduced over all ranks, so every rank
    reads the same value. (A value you compute per rank yourself would let
    the ranks' learning rates drift apart: reduce it first.)

    Example::

        scheduler = ReduceLROnPlateauScheduler(
            optimizer, metric_name="accuracy", mode="max", factor=0.5, patience=1, trainer=trainer)
        evaluator.add_event_handler(Events.COMPLETED, scheduler)
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        metric_name: str,
        trainer: Engine | None = None,
        save_history: bool = False,
        param_group_index: int | None = None,
        **scheduler_kwargs: Any,
    ) -> None:
        super().__init__(optimizer, "lr", save_history, param_group_index)
        self.metric_name, self.trainer = metric_name, trainer
        kwargs = dict(scheduler_kwargs)
        if kwargs.pop("verbose", None) is not None:
            warnings.warn("verbose is not supported: use save_history", UserWarning, stacklevel=2)
        if param_group_index is not None:
            min_lr = kwargs.get("min_lr", 0.0)
            if not isinstance(min_lr, numbers.Real):
                raise TypeError(f"with param_group_index, min_lr must be a number, got {min_lr!r}")
            # groups this scheduler does not own get an unreachable floor: never lowered
            floors = [float("inf")] * len(optimizer.param_groups)
            floors[param_group_index] = float(min_lr)
            kwargs["min_lr"] = floors
        self.scheduler = ReduceLROnPlateau(optimizer, **kwargs)
        self._state_attrs += ["metric_name", "scheduler"]

    def __call__(self, engine: Engine | None = None, name: str | None = None) -> None:
        metrics = getattr(getattr(engine, "state", None), "metrics", {})
        if self.metric_name not in metrics:
            raise ValueError(
                f"ReduceLROnPlateauScheduler reads engine.state.metrics[{self.metric_name!r}], "
                f"which is not there (metrics: {sorted(metrics)}); attach it to the engine "
                "whose metrics it watches"
            )
        self.scheduler.step(metrics[self.metric_name])
        super().__call__(self.trainer, name)

    def get_param(self) -> float | list[float]:
        return _one_or_list([group["lr"] for group in self.optimizer_param_groups])

    @classmethod
    def simulate_values(  # type: ignore[override]
        cls, num_events: int, metric_values: list[float], init_lr: float, **scheduler_kwargs: Any
    ) -> list[list[Any]]:
        """``[[event_index, lr], ...]`` for the given metric values.

        Example: ``ReduceLROnPlateauScheduler.simulate_values(3, [1.0, 1.0, 0.9], 0.1)``.
        """
        _check_count(num_events)
        if len(metric_values) != num_events:
            raise ValueError(
                f"metric_values needs num_events={num_events} values, got {len(metric_values)}"
            )
        for key in ("optimizer", "metric_name", "save_history"):
            scheduler_kwargs.pop(key, None)
        scheduler = cls(fake_optimizer(init_lr), "metric", **scheduler_kwargs)
        engine = Engine(lambda engine, batch: None)
        values = []
        for i, value in enumerate(metric_values):
            engine.state.metrics["metric"] = value
            scheduler(engine)
            values.append([i, scheduler.optimizer_param_groups[0]["lr"]])
        return values


def create_lr_scheduler_with_warmup(
    lr_scheduler: ParamScheduler | TorchLRScheduler,
    warmup_start_value: float,
    warmup_duration: int,
    warmup_end_value: float | None = None,
    save_history: bool = False,
    output_simulated_values: list | None = None,
) -> ConcatScheduler:
    """A linear warm-up over ``warmup_duration`` calls, then ``lr_scheduler``, as PyTorch-Ignite.

    The warm-up goes from ``warmup_start_value`` to ``warmup_end_value``
    (default: each param group's initial learning rate). When that differs
    from the initial learning rate, one more call sets the initial rate
    before ``lr_scheduler`` takes over, so the wrapped schedule is never
    skipped: with lr 1.0, a warm-up from 0.1 to 0.5 over 3 calls, then
    ``StepLR(optimizer, 1, gamma=0.5)`` gives 0.1, 0.3, 0.5, 1.0, 0.5, 0.25.
    ``output_simulated_values`` (a list) is filled with ``[event_index, lr]``.

    Example::

        sched = create_lr_scheduler_with_warmup(StepLR(optimizer, 10), 0.0, warmup_duration=100)
        trainer.add_event_handler(Events.ITERATION_STARTED, sched)
    """
    if not isinstance(lr_scheduler, (ParamScheduler, TorchLRScheduler)):
        raise TypeError(
            "lr_scheduler must be a torch.optim.lr_scheduler scheduler or a ParamScheduler, "
            f"got {type(lr_scheduler).__name__}"
        )
    if not isinstance(warmup_duration, int) or isinstance(warmup_duration, bool):
        raise TypeError(f"warmup_duration must be an int, got {warmup_duration!r}")
    if warmup_duration < 2:
        raise ValueError(f"warmup_duration must be at least 2 calls, got {warmup_duration}")
    from_torch = isinstance(lr_scheduler, TorchLRScheduler)
    after = LRScheduler(lr_scheduler, save_history) if from_torch else lr_scheduler
    groups = after.optimizer.param_groups
    ends = [g["lr"] if warmup_end_value is None else warmup_end_value for g in groups]
    if from_torch:
        initial = [g["lr"] for g in groups]
    else:
        first = after.get_param()
        initial = list(first) if isinstance(first, (list, tuple)) else [first] * len(groups)
    plans = [
        _warmup_plan(warmup_start_value, warmup_duration, e, i, from_torch)
        for e, i in zip(ends, initial)
    ]
    duration = max(plan[-1][0] for plan in plans) + 1
    if from_torch:
        after._steps_first = True  # the warm-up (or its last call) already applied the initial lr
    warmup = ParamGroupScheduler(
        [
            PiecewiseLinear(after.optimizer, "lr", plan, save_history, param_group_index=i)
            for i, plan in enumerate(plans)
        ],
        save_history=save_history,
    )
    schedulers = [warmup, after]
    if output_simulated_values is not None:
        if not isinstance(output_simulated_values, list):
            raise TypeError(
                "output_simulated_values must be a list, e.g. [None] * 100, "
                f"got {type(output_simulated_values).__name__}"
            )
        simulated = ConcatScheduler.simulate_values(
            len(output_simulated_values), schedulers, [duration]
        )
        output_simulated_values[:] = simulated
    return ConcatScheduler(schedulers, durations=[duration], save_history=save_history)


def _warmup_plan(
    start: float, duration: int, end: float, initial: Any, from_torch: bool
) -> list[tuple[int, float]]:
    """The warm-up milestones of one param group."""
    plan = [(0, start), (duration - 1, end)]
    if from_torch and initial != end:
        plan.append((duration, initial))  # one call restores the initial lr
    elif not from_torch and initial == end:
        # the wrapped schedule starts at ``end`` itself: finish the ramp one call earlier
        if duration > 2:
            plan[-1] = (duration - 2, end - (end - start) / (duration - 1))
        else:
            plan.pop()
    return plan
