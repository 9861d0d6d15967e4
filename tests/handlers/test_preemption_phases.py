"""A stop signal on one of 2 gloo ranks at each phase of a run, as the launcher forwards it.

The launcher turns SIGHUP and SIGQUIT into SIGTERM (``launch/job/signals.py``), so a
rank only ever sees SIGTERM or SIGINT. Wherever the signal lands (training,
validation, a checkpoint save, the last iteration, after the run), every rank
stops at the same iteration and saves once, or the run completes and nothing
is claimed. Both ranks' results must be equal: a rank that did not stop with
the other would hang the pair.
"""

from __future__ import annotations

import os
import time

import torch.distributed as dist

import distengine.distributed as idist
from distengine.engine import Engine, Events
from distengine.handlers import Preemption

#: Iterations per epoch and epochs; the evaluator runs 6 iterations after each epoch.
EPOCH, EPOCHS, EVAL = 10, 3, 6
PHASES = ("training", "validation", "save", "last", "after")


def one_phase(signum: int, phase: str) -> dict:
    """Send ``signum`` to rank 1 at ``phase``; what each rank saw."""
    rank = dist.get_rank()
    trainer, evaluator = Engine(lambda e, b: b), Engine(lambda e, b: b)
    stops, evaluations = [], []

    def send() -> None:
        if rank == 1:
            os.kill(os.getpid(), signum)

    @trainer.on(Events.EPOCH_COMPLETED)
    def validate():
        evaluator.run(range(EVAL))
        evaluations.append((evaluator.state.iteration, evaluator.state.preempted))

    @trainer.on(Events.EPOCH_COMPLETED)
    def save():  # a slow checkpoint write, the signal in the middle of it
        if phase == "save" and trainer.state.epoch == 1:
            send()
            time.sleep(0.1)

    if phase == "after":  # as the run completes (before Preemption hands the signals back)
        trainer.add_event_handler(Events.COMPLETED, send)
    preemption = Preemption(on_stop=lambda e: stops.append(e.state.iteration), every=2)
    preemption.attach(trainer)
    preemption.attach(evaluator, final=False)
    at = {"training": (trainer, 3), "validation": (evaluator, 2), "last": (trainer, EPOCH * EPOCHS)}
    if phase in at:
        engine, iteration = at[phase]
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=iteration), send)
    for engine in (trainer, evaluator):
        engine.add_event_handler(Events.ITERATION_COMPLETED, lambda: idist.barrier())
    try:
        trainer.run(range(EPOCH), max_epochs=EPOCHS)
    finally:
        preemption.restore()
    s = trainer.state
    return {
        "iteration": s.iteration,
        "preempted": s.preempted,
        "signal": s.stop_signal,
        "stops": stops,
        "evaluations": evaluations,
    }


def every_phase() -> dict:
    import signal

    return {
        (name, phase): one_phase(getattr(signal, name), phase)
        for name in ("SIGTERM", "SIGINT")
        for phase in PHASES
    }


def cut(evaluation) -> bool:
    """An evaluation a stop ended before its last batch, its metrics not computed."""
    iterations, preempted = evaluation
    return preempted and 0 < iterations < EVAL


def test_a_signal_at_each_phase_stops_both_ranks_together_or_lets_the_run_end(ranks2):
    first, second = ranks2.run(every_phase, timeout=120)
    assert first == second  # every rank stopped where the other did
    full = [(EVAL, False)] * EPOCHS
    for name in ("SIGTERM", "SIGINT"):
        runs = {phase: first[(name, phase)] for phase in PHASES}
        for phase in ("training", "validation", "save", "last"):  # stopped, saved once
            run = runs[phase]
            assert (run["preempted"], run["signal"], run["stops"]) == (
                True,
                name,
                [run["iteration"]],
            ), (name, phase)
        # signalled after iteration 3: stopped at the next agreed check, a few iterations on
        assert 3 < runs["training"]["iteration"] < EPOCH and runs["training"]["evaluations"] == []
        # in the first validation: it ends early, uncomputed; the trainer stops at its epoch end
        validation = runs["validation"]
        assert validation["iteration"] == EPOCH and len(validation["evaluations"]) == 1
        assert cut(validation["evaluations"][0])
        # during a save at the end of epoch 1: stopped in epoch 2, the save done once
        save = runs["save"]
        assert EPOCH < save["iteration"] < 2 * EPOCH and save["evaluations"] == full[:1]
        # at the last iteration: the last validation is cut, the last step saved
        last = runs["last"]
        assert last["iteration"] == EPOCH * EPOCHS and last["evaluations"][:-1] == full[:-1]
        assert cut(last["evaluations"][-1])
        # as the run completes: nothing is stopped, nothing saved for a stop
        after = runs["after"]
        assert (after["iteration"], after["preempted"], after["stops"]) == (30, False, [])
        assert after["evaluations"] == full
