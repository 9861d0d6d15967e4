"""TerminateOnNan and TimeLimit stop every rank, at the same iteration, however they are added.

Each case runs a trainer whose last rank goes bad at iteration ``BAD`` (its output turns NaN,
or its clock passes the limit) and asserts the iteration every rank stopped at: one after the
exchange that carried it. The forms are those the docstrings, the guide and PyTorch-Ignite
users write: ``.attach()``, ``add_event_handler(Events.ITERATION_COMPLETED, h)``,
``trainer.on(...)(h)`` and a ``@trainer.on`` function calling it; added before ``run()``,
after a first ``run()`` (then ``run(max_epochs=more)``), or before/after an ``interrupt()``
(then ``run(max_epochs=more)``, going bad past the interrupted run's last iteration). Before,
a handler added with ``add_event_handler`` never acted (its board was made after STARTED),
and none acted past the iteration an interrupted run had planned to end at.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.distributed as dist

from distengine.engine import Engine, Events
from distengine.handlers import TerminateOnNan, TimeLimit

LENGTH, EPOCHS = 10, 4  # 40 iterations: "never stopped" ends at 40
BAD = 13  # past the first run's (and the interrupted run's) last iteration, 10
INTERRUPT_AT = 4
FORMS = ("attach", "add_event_handler", "on", "on_function")
WHEN = ("before_run", "after_a_run", "added_before_interrupt", "added_after_interrupt")
SCHEDULES = ("timed", 4)  # timed: the default, every iteration agreed (interval 0 here)


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _add(handler, trainer: Engine, form: str) -> None:
    if form == "attach":
        handler.attach(trainer)
    elif form == "add_event_handler":
        trainer.add_event_handler(Events.ITERATION_COMPLETED, handler)
    elif form == "on":
        trainer.on(Events.ITERATION_COMPLETED)(handler)
    else:

        @trainer.on(Events.ITERATION_COMPLETED)
        def check(engine):
            handler(engine)


def stop_case(kind: str, form: str, when: str, every) -> tuple[int, bool]:
    """Run one case on this rank: (the iteration it stopped at, whether it was marked)."""
    rank, world = _rank_and_world()
    bad_rank = world - 1
    schedule = None if every == "timed" else every

    def step(engine, batch):
        nan = kind == "nan" and rank == bad_rank and engine.state.iteration >= BAD
        return torch.tensor(float("nan") if nan else 1.0)

    trainer = Engine(step)
    trainer.board.interval_s = 0.0  # the timed schedule, agreed at every iteration
    if kind == "nan":
        handler = TerminateOnNan(every=schedule)
    else:
        handler = TimeLimit(3600, every=schedule)

        @trainer.on(Events.ITERATION_COMPLETED(once=BAD))
        def clock_passes_the_limit():
            if rank == bad_rank:
                handler.limit_sec = 1e-9

    data = range(LENGTH)
    if when == "before_run":
        _add(handler, trainer, form)
    elif when == "added_before_interrupt":
        _add(handler, trainer, form)
    if when == "after_a_run":
        trainer.run(data, max_epochs=1)
        _add(handler, trainer, form)
    elif when.endswith("interrupt"):
        pause = trainer.add_event_handler(
            Events.ITERATION_COMPLETED(once=INTERRUPT_AT), lambda e: e.interrupt()
        )
        trainer.run(data, max_epochs=1)
        assert trainer.state.iteration == INTERRUPT_AT
        pause.remove()
        if when == "added_after_interrupt":
            _add(handler, trainer, form)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, _barrier)  # ranks in step
    trainer.run(data, max_epochs=EPOCHS)
    return trainer.state.iteration, bool(getattr(trainer.state, "terminated_on_nan", False))


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_cases() -> dict:
    return {
        case: stop_case(*case)
        for case in itertools.product(("nan", "time"), FORMS, WHEN, SCHEDULES)
    }


def expected(kind: str, every) -> tuple[int, bool]:
    """One iteration after the first exchange at or after BAD."""
    exchanged = BAD if every == "timed" else math.ceil(BAD / every) * every
    return exchanged + 1, kind == "nan"


def check(results: list[dict]) -> None:
    want = {case: expected(case[0], case[3]) for case in results[0]}
    for got in results:
        wrong = {case: (got[case], want[case]) for case in want if got[case] != want[case]}
        assert not wrong, f"(stopped, marked) vs expected, by case: {wrong}"


def test_one_process_every_form_stops_where_documented():
    check([all_cases()])


def test_two_ranks_every_form_stops_every_rank_together(ranks2):
    check(ranks2.run(all_cases, timeout=240))


def test_three_ranks_every_form_stops_every_rank_together(ranks3):
    check(ranks3.run(all_cases, timeout=300))


def default_interval_nan(form: str) -> int:
    """The shipped timed schedule (about every half second, a gap growing at most 16-fold per
    exchange): NaN from iteration 3 on the last rank, iterations of about 10 ms."""
    import time

    rank, world = _rank_and_world()

    def step(engine, batch):
        time.sleep(0.01)
        bad = rank == world - 1 and engine.state.iteration >= 3
        return torch.tensor(float("nan") if bad else 1.0)

    trainer = Engine(step)
    _add(TerminateOnNan(), trainer, form)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, _barrier)
    trainer.run(range(100), max_epochs=3)
    return trainer.state.iteration


@pytest.mark.parametrize("form", ["attach", "add_event_handler"])
def test_the_default_schedule_stops_within_its_first_gap(ranks2, form):
    # exchanges at 1 (the run's first) then at most 16 iterations later: stop by 18 of 300
    first, second = ranks2.run(default_interval_nan, form, timeout=120)
    assert first == second and 3 < first <= 18


def preemption_case(when: str) -> tuple[int, bool, list[int]]:
    """SIGTERM on the last rank at iteration BAD; Preemption attached as ``when`` says."""
    import os
    import signal

    from distengine.handlers import Preemption

    rank, world = _rank_and_world()
    trainer = Engine(lambda engine, batch: batch)
    trainer.board.interval_s = 0.0
    stops: list[int] = []
    preemption = Preemption(on_stop=lambda engine: stops.append(engine.state.iteration))

    @trainer.on(Events.ITERATION_COMPLETED(once=BAD))
    def sigterm_on_the_last_rank():
        if rank == world - 1:
            os.kill(os.getpid(), signal.SIGTERM)

    data = range(LENGTH)
    try:
        if when == "before_run":
            preemption.attach(trainer)
        elif when == "after_a_run":
            trainer.run(data, max_epochs=1)
            preemption.attach(trainer)
        else:
            if when == "added_before_interrupt":
                preemption.attach(trainer)
            pause = trainer.add_event_handler(
                Events.ITERATION_COMPLETED(once=INTERRUPT_AT), lambda e: e.interrupt()
            )
            trainer.run(data, max_epochs=1)
            pause.remove()
            if when == "added_after_interrupt":
                preemption.attach(trainer)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, _barrier)
        trainer.run(data, max_epochs=EPOCHS)
    finally:
        preemption.restore()
    return trainer.state.iteration, trainer.state.preempted, stops


def preemption_cases() -> dict:
    return {when: preemption_case(when) for when in WHEN}


@pytest.mark.parametrize("world", [1, 2, 3])
def test_preemption_stops_every_rank_however_it_is_attached(pools, world):
    results = [preemption_cases()] if world == 1 else pools.get(world).run(preemption_cases)
    for got in results:  # the signal in BAD's handlers rides in BAD's exchange
        assert got == {when: (BAD + 1, True, [BAD + 1]) for when in WHEN}


def empty_shard_evaluation(kind: str, form: str) -> list[int]:
    """An evaluator over uneven shards, the last rank's empty (a validation set smaller than
    the ranks): rank 0's output turns NaN (or its clock passes the limit) at iteration 2 of 6.
    Three runs; each rank's last iteration of each. The ranks agree only on iterations every
    rank reaches, none here: rank 0 runs its 6 (a rank alone cannot stop the others)."""
    import time

    rank, world = _rank_and_world()
    length = 0 if rank == world - 1 else 6

    def step(engine, batch):
        if kind == "time" and engine.state.iteration >= 2:
            time.sleep(0.05)
        bad = kind == "nan" and rank == 0 and engine.state.iteration >= 2
        return torch.tensor(float("nan") if bad else 1.0)

    evaluator = Engine(step)
    handler = TerminateOnNan(every=1) if kind == "nan" else TimeLimit(0.05, every=1)
    _add(handler, evaluator, form)
    stopped = []
    for _ in range(3):
        if kind == "time":
            handler.start = time.monotonic()
        evaluator.run(range(length), max_epochs=1)
        stopped.append(evaluator.state.iteration)
    return stopped


@pytest.mark.parametrize("kind", ["nan", "time"])
@pytest.mark.parametrize("form", ["attach", "add_event_handler", "on"])
def test_an_empty_shard_never_hangs_the_ranks_that_check(ranks2, kind, form):
    """Before, a handler added with ``add_event_handler`` registered with the board at its first
    call, which a rank with an empty shard never makes: rank 0 then waited for it in the
    board's agreement until the collective timed out. Now it registers when it is added, on
    every rank alike, as ``attach`` does."""
    first, last = ranks2.run(empty_shard_evaluation, kind, form, timeout=30)
    assert first == [6, 6, 6] and last == [0, 0, 0]
