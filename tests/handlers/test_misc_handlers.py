"""Schedulers, Timer, ProgressBar behaviour and argument errors on one process."""

import time

import pytest
import torch
from torch import nn

from distengine.engine import Engine, Events
from distengine.handlers import (
    CosineAnnealingScheduler,
    EarlyStopping,
    LRScheduler,
    PiecewiseLinear,
    TimeLimit,
    Timer,
    create_lr_scheduler_with_warmup,
)


def optimizer(lr=0.1):
    return torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=lr)


def lrs_over(handler, opt, n, event=Events.ITERATION_STARTED):
    engine = Engine(lambda e, b: opt.param_groups[0]["lr"])
    engine.add_event_handler(event, handler)
    seen = []
    engine.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: seen.append(round(e.state.output, 6))
    )
    engine.run(range(n))
    return seen


def test_piecewise_linear_and_cosine_values():
    opt = optimizer()
    assert lrs_over(PiecewiseLinear(opt, "lr", [(0, 0.0), (4, 0.4), (6, 0.0)]), opt, 8) == [
        0.0,
        0.1,
        0.2,
        0.3,
        0.4,
        0.2,
        0.0,
        0.0,
    ]
    opt = optimizer()
    values = lrs_over(CosineAnnealingScheduler(opt, "lr", 1.0, 0.0, cycle_size=4), opt, 5)
    assert values == [1.0, 0.853553, 0.5, 0.146447, 1.0]


def test_warmup_then_torch_scheduler_and_state_roundtrip():
    opt = optimizer(0.4)
    step = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    sched = create_lr_scheduler_with_warmup(step, warmup_start_value=0.0, warmup_duration=5)
    assert lrs_over(sched, opt, 9) == [0.0, 0.1, 0.2, 0.3, 0.4, 0.4, 0.2, 0.2, 0.1]
    opt2 = optimizer(0.4)
    again = create_lr_scheduler_with_warmup(
        torch.optim.lr_scheduler.StepLR(opt2, step_size=2, gamma=0.5), 0.0, 5
    )
    again.load_state_dict(sched.state_dict())
    opt2.load_state_dict(opt.state_dict())
    assert lrs_over(again, opt2, 3) == lrs_over(sched, opt, 3) == [0.1, 0.05, 0.05]


def test_lr_scheduler_wraps_only_torch_schedulers():
    with pytest.raises(TypeError, match="wraps a torch.optim.lr_scheduler"):
        LRScheduler(optimizer())
    with pytest.raises(ValueError, match="milestones must not decrease"):
        PiecewiseLinear(optimizer(), "lr", [(3, 0.1), (1, 0.2)])


def test_timer_average_per_iteration():
    engine = Engine(lambda e, b: time.sleep(0.01))
    timer = Timer(average=True).attach(
        engine,
        start=Events.EPOCH_STARTED,
        resume=Events.ITERATION_STARTED,
        pause=Events.ITERATION_COMPLETED,
        step=Events.ITERATION_COMPLETED,
    )
    engine.run(range(5))
    assert 0.009 < timer.value() < 0.05 and timer.step_count == 5


def test_handler_argument_errors():
    trainer = Engine(lambda e, b: b)
    with pytest.raises(ValueError, match="patience must be an int >= 1, got 0"):
        EarlyStopping(0, lambda e: 0.0, trainer)
    with pytest.raises(ValueError, match="mode must be 'max' or 'min', got 'best'"):
        EarlyStopping(1, lambda e: 0.0, trainer, mode="best")
    with pytest.raises(ValueError, match="limit_sec must be a positive number"):
        TimeLimit(0)


def test_early_stopping_min_mode_and_state():
    trainer = Engine(lambda e, b: b)
    losses = iter([1.0, 0.5, 0.6, 0.55, 0.7])
    stopper = EarlyStopping(2, lambda e: next(losses), trainer, mode="min")
    trainer.add_event_handler(Events.EPOCH_COMPLETED, stopper)
    trainer.run([0], max_epochs=5)
    assert trainer.state.epoch == 4 and stopper.state_dict() == {
        "counter": 2,
        "best_score": 0.5,
        "threshold_mode": "abs",
    }
