"""Schedulers: the values Ignite documents, torch's own sequences, exact resume, errors."""

import warnings

import pytest
import torch
import torch.distributed as dist

from distengine.engine import Engine, Events
from distengine.handlers import (
    ConcatScheduler,
    CosineAnnealingScheduler,
    LinearCyclicalScheduler,
    LRScheduler,
    ParamGroupScheduler,
    PiecewiseLinear,
    ReduceLROnPlateauScheduler,
    create_lr_scheduler_with_warmup,
)

S = torch.optim.lr_scheduler


def optimizer(lr=1.0, groups=1):
    params = [
        {"params": [torch.zeros(1, requires_grad=True)], "lr": lr * (g + 1)} for g in range(groups)
    ]
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def lrs_seen(opt, scheduler, n, event=Events.ITERATION_STARTED):
    """The learning rates iterations 1..n train with, the scheduler attached to ``event``."""
    engine = Engine(lambda e, b: opt.param_groups[0]["lr"])
    engine.add_event_handler(event, scheduler)
    seen = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.output))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: scheduler stepped before any optimizer step
        engine.run(range(n))
    return seen


def test_values_from_ignites_documentation():
    opt = optimizer(0.1)  # LRScheduler docstring: StepLR(step_size=3, gamma=0.1)
    seen = lrs_seen(opt, LRScheduler(S.StepLR(opt, step_size=3, gamma=0.1)), 8)
    assert seen == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001])
    opt = optimizer(0.1)  # create_lr_scheduler_with_warmup docstring
    warm = create_lr_scheduler_with_warmup(S.ExponentialLR(opt, gamma=0.98), 0.0, 3, 0.1)
    assert lrs_seen(opt, warm, 8) == pytest.approx(
        [0.0, 0.05, 0.1, 0.098, 0.09604, 0.0941192, 0.092236816, 0.09039207968]
    )


def test_warmup_with_an_end_value_does_not_skip_the_wrapped_schedule():
    opt = optimizer(1.0)  # issue 16: Ignite gives .1, .3, .5, 1.0, .5, ...
    sched = create_lr_scheduler_with_warmup(S.StepLR(opt, 1, 0.5), 0.1, 3, warmup_end_value=0.5)
    assert lrs_seen(opt, sched, 7) == pytest.approx([0.1, 0.3, 0.5, 1.0, 0.5, 0.25, 0.125])
    simulated = [None] * 7
    create_lr_scheduler_with_warmup(
        S.StepLR(optimizer(1.0), 1, 0.5), 0.1, 3, 0.5, output_simulated_values=simulated
    )
    assert [v for _, v in simulated] == pytest.approx([0.1, 0.3, 0.5, 1.0, 0.5, 0.25, 0.125])


TORCH_SCHEDULERS = {
    "StepLR": lambda o: S.StepLR(o, 3, 0.5),
    "MultiStepLR": lambda o: S.MultiStepLR(o, [2, 5]),
    "ExponentialLR": lambda o: S.ExponentialLR(o, 0.9),
    "LambdaLR": lambda o: S.LambdaLR(o, lambda e: 1 / (e + 1)),
    "MultiplicativeLR": lambda o: S.MultiplicativeLR(o, lambda e: 0.9),
    "ConstantLR": lambda o: S.ConstantLR(o, 0.5, 3),
    "LinearLR": lambda o: S.LinearLR(o, 0.5, total_iters=3),
    "PolynomialLR": lambda o: S.PolynomialLR(o, 4, 2.0),
    "CosineAnnealingLR": lambda o: S.CosineAnnealingLR(o, 7),
    "CosineAnnealingWarmRestarts": lambda o: S.CosineAnnealingWarmRestarts(o, 3, 2),
    "CyclicLR": lambda o: S.CyclicLR(o, 0.1, 1.0, 2),
    "OneCycleLR": lambda o: S.OneCycleLR(o, 1.0, total_steps=30),
    "SequentialLR": lambda o: S.SequentialLR(
        o, [S.LinearLR(o, 0.5, total_iters=2), S.ExponentialLR(o, 0.9)], [2]
    ),
    "ChainedScheduler": lambda o: S.ChainedScheduler(
        [S.ConstantLR(o, 0.5, 2), S.ExponentialLR(o, 0.9)]
    ),
}


@pytest.mark.parametrize("name", list(TORCH_SCHEDULERS))
def test_lr_scheduler_gives_torchs_own_sequence(name):
    """Iteration n trains with the lr a plain loop (step after each optimizer step) uses."""
    opt = optimizer(groups=2)
    torch_sched = TORCH_SCHEDULERS[name](opt)
    plain = []
    for _ in range(12):
        plain.append(opt.param_groups[0]["lr"])
        opt.step()
        torch_sched.step()
    opt = optimizer(groups=2)
    assert lrs_seen(opt, LRScheduler(TORCH_SCHEDULERS[name](opt)), 12) == plain  # bitwise


def _continues_exactly(make, n_before=7, n_after=9, groups=1):
    """Run, checkpoint, rebuild, load, run on: the same values as never stopping."""
    opt = optimizer(groups=groups)
    whole = lrs_seen(opt, make(opt), n_before + n_after)
    opt = optimizer(groups=groups)
    first = make(opt)
    lrs_seen(opt, first, n_before)
    saved = {"scheduler": first.state_dict(), "optimizer": opt.state_dict()}
    torch.save(saved, buffer := __import__("io").BytesIO())
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    opt = optimizer(groups=groups)
    again = make(opt)
    again.load_state_dict(saved["scheduler"])
    opt.load_state_dict(saved["optimizer"])
    assert lrs_seen(opt, again, n_after) == whole[n_before:]


RESUMABLE = {
    "piecewise": lambda o: PiecewiseLinear(o, "lr", [(0, 0.0), (5, 1.0), (12, 0.1)]),
    "linear_cyclical": lambda o: LinearCyclicalScheduler(
        o, "lr", 1.0, 0.0, 4, cycle_mult=1.5, start_value_mult=0.8, end_value_mult=0.5
    ),
    "cosine_warmup": lambda o: CosineAnnealingScheduler(o, "lr", 1.0, 0.1, 5, warmup_duration=2),
    "concat": lambda o: ConcatScheduler(
        [
            LinearCyclicalScheduler(o, "lr", 0.0, 1.0, 10),
            CosineAnnealingScheduler(o, "lr", 1.0, 0.0, 6),
        ],
        durations=[5],
    ),
    "param_groups": lambda o: ParamGroupScheduler(
        [
            PiecewiseLinear(o, "lr", [(0, 0.0), (10, 1.0)], param_group_index=0),
            CosineAnnealingScheduler(o, "lr", 2.0, 0.0, 5, param_group_index=1),
        ]
    ),
    "torch": lambda o: LRScheduler(S.OneCycleLR(o, 1.0, total_steps=40)),
    "warmup_torch": lambda o: create_lr_scheduler_with_warmup(S.StepLR(o, 2, 0.5), 0.0, 4, 0.5),
    "warmup_cosine": lambda o: create_lr_scheduler_with_warmup(
        CosineAnnealingScheduler(o, "lr", 1.0, 0.0, 6), 0.0, 5
    ),
}


@pytest.mark.parametrize("name", list(RESUMABLE))
def test_schedules_resume_exactly_from_their_state_dict(name):
    _continues_exactly(RESUMABLE[name], groups=2 if name == "param_groups" else 1)


def test_argument_errors_name_the_value():
    opt = optimizer()
    cases = [
        (
            ValueError,
            "at least 2 calls",
            lambda: create_lr_scheduler_with_warmup(S.StepLR(opt, 2), 0.0, 1),
        ),
        (
            TypeError,
            "warmup_duration must be an int",
            lambda: create_lr_scheduler_with_warmup(S.StepLR(opt, 2), 0, 2.0),
        ),
        (
            TypeError,
            "use ReduceLROnPlateauScheduler",
            lambda: LRScheduler(S.ReduceLROnPlateau(opt)),
        ),
        (ValueError, "must not decrease", lambda: PiecewiseLinear(opt, "lr", [(3, 0.1), (1, 0.2)])),
        (
            ValueError,
            "cycle_size must be an int >= 2",
            lambda: CosineAnnealingScheduler(opt, "lr", 1, 0, 1),
        ),
        (
            ValueError,
            "needs monotonic=True",
            lambda: LinearCyclicalScheduler(opt, "lr", 1, 0, 4, warmup_duration=2),
        ),
        (
            ValueError,
            "have no 'betas'",
            lambda: PiecewiseLinear(opt, "betas", [(0, 0.1), (1, 0.2)]),
        ),
        (
            ValueError,
            "one optimizer",
            lambda: ConcatScheduler(
                [
                    PiecewiseLinear(opt, "lr", [(0, 1.0)]),
                    PiecewiseLinear(optimizer(), "lr", [(0, 1.0)]),
                ],
                [2],
            ),
        ),
        (
            ValueError,
            "2 schedulers need 1 durations",
            lambda: ConcatScheduler(
                [PiecewiseLinear(opt, "lr", [(0, 1.0)]), PiecewiseLinear(opt, "lr", [(0, 1.0)])],
                [2, 3],
            ),
        ),
    ]
    for error, message, make in cases:
        with pytest.raises(error, match=message):
            make()


def test_reduce_on_plateau_decides_as_torch_does_and_honours_min_lr():
    metric = [1.0, 0.9, 0.9, 0.9, 0.95, 0.9, 0.91, 0.92, 0.93, 0.5]
    kwargs = dict(mode="min", factor=0.5, patience=1, min_lr=0.3)
    opt = optimizer(groups=2)
    reference = S.ReduceLROnPlateau(opt, **kwargs)
    want = []
    for value in metric:
        reference.step(value)
        want.append([g["lr"] for g in opt.param_groups])
    opt, evaluator, trainer = (
        optimizer(groups=2),
        Engine(lambda e, b: None),
        Engine(lambda e, b: None),
    )
    scheduler = ReduceLROnPlateauScheduler(
        opt, "loss", trainer=trainer, save_history=True, **kwargs
    )
    got = []
    for value in metric:
        evaluator.state.metrics["loss"] = value
        scheduler(evaluator)
        got.append([g["lr"] for g in opt.param_groups])
    assert got == want and trainer.state.param_history["lr"] == want
    only_second = ReduceLROnPlateauScheduler(
        opt2 := optimizer(groups=2), "loss", param_group_index=1, patience=0
    )
    for value in (1.0, 2.0, 3.0):
        evaluator.state.metrics["loss"] = value
        only_second(evaluator)
    assert [g["lr"] for g in opt2.param_groups] == [1.0, 2.0 * 0.1 * 0.1]
    with pytest.raises(ValueError, match=r"reads engine.state.metrics\['acc'\].*\['loss'\]"):
        ReduceLROnPlateauScheduler(opt, "acc")(evaluator)
    _continues_plateau()


def _continues_plateau():
    def make():
        opt = optimizer()
        return opt, ReduceLROnPlateauScheduler(opt, "loss", patience=1, factor=0.5)

    values = [1.0, 1.0, 1.0, 0.5, 0.6, 0.7, 0.8]
    evaluator = Engine(lambda e, b: None)
    opt, whole = make()
    for value in values:
        evaluator.state.metrics["loss"] = value
        whole(evaluator)
    opt2, first = make()
    for value in values[:3]:
        evaluator.state.metrics["loss"] = value
        first(evaluator)
    opt3, again = make()
    again.load_state_dict(first.state_dict())
    opt3.load_state_dict(opt2.state_dict())
    for value in values[3:]:
        evaluator.state.metrics["loss"] = value
        again(evaluator)
    assert opt3.param_groups[0]["lr"] == opt.param_groups[0]["lr"] and again.event_index == len(
        values
    )


def plateau_on_ranks():
    """Each rank evaluates its own shard; the reduced accuracy drives the schedule."""
    from distengine.metrics import Accuracy

    rank = dist.get_rank()
    opt = optimizer(0.1)
    evaluator = Engine(lambda e, b: b)
    Accuracy().attach(evaluator, "acc")
    scheduler = ReduceLROnPlateauScheduler(opt, "acc", mode="max", patience=0, factor=0.5)
    evaluator.add_event_handler(Events.COMPLETED, scheduler)
    lrs = []
    for epoch_hits in ([3, 1], [2, 2], [1, 2], [4, 1]):  # hits per rank in each evaluation
        hits = epoch_hits[rank]
        logits = torch.tensor([[1.0, 0.0]] * 4)
        labels = torch.tensor([0] * hits + [1] * (4 - hits))
        evaluator.run([(logits, labels)])
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def test_reduce_on_plateau_takes_the_same_decision_on_every_rank(ranks2):
    # accuracy over both ranks: 0.5, 0.5 (no gain: halve), 0.375 (halve), 0.625 (a gain)
    assert ranks2.run(plateau_on_ranks) == [[0.1, 0.05, 0.025, 0.025]] * 2
