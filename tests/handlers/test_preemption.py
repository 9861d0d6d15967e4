"""Preemption on one process: SIGINT twice, chained handlers, the watchdog's dump kept."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from distengine.engine import Engine, Events
from distengine.handlers import HangWatchdog, Preemption
from distengine.handlers import preemption as preemption_module


def run_with_signals(preemption, at, n=40):
    """Send ``at[k]`` (a signal) to this process after iteration k; return the engine."""
    trainer = Engine(lambda e, b: b)
    preemption.attach(trainer)

    @trainer.on(Events.ITERATION_COMPLETED)
    def send(engine):
        if engine.state.iteration in at:
            os.kill(os.getpid(), at[engine.state.iteration])

    try:
        trainer.run(range(n))
    finally:
        preemption.restore()
    return trainer


def test_two_sigints_close_together_are_one_request(monkeypatch):
    monkeypatch.setattr(preemption_module, "REPEAT_S", 100.0)
    stops = []
    preemption = Preemption(on_stop=lambda e: stops.append(e.state.iteration), every=4)
    trainer = run_with_signals(preemption, {3: signal.SIGINT, 5: signal.SIGINT})
    s = trainer.state
    assert (s.iteration, s.preempted, s.stop_signal, stops) == (5, True, "SIGINT", [5])


def test_a_second_sigint_a_while_later_stops_at_once(monkeypatch):
    monkeypatch.setattr(preemption_module, "REPEAT_S", 0.0)
    stops = []
    preemption = Preemption(on_stop=lambda e: stops.append(e), every=100)
    with pytest.raises(KeyboardInterrupt):
        run_with_signals(preemption, {3: signal.SIGINT, 6: signal.SIGINT})
    assert stops == [] and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_previous_handler_still_runs_and_is_restored_when_the_run_completes():
    calls = []

    def previous(signum, frame):
        calls.append(signum)

    old = signal.signal(signal.SIGUSR1, previous)
    try:
        preemption = Preemption(signals=(signal.SIGUSR1,), every=2)
        trainer = run_with_signals(preemption, {1: signal.SIGUSR1}, n=6)
        assert calls == [signal.SIGUSR1] and trainer.state.preempted
        assert trainer.state.iteration == 2  # exchanged after 1 (the first), read at 2
        quiet = Preemption(signals=(signal.SIGUSR1,))
        trainer = run_with_signals(quiet, {}, n=3)
        assert not trainer.state.preempted and signal.getsignal(signal.SIGUSR1) is previous
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="signals must be signal numbers"):
        Preemption(signals=(12345,))
    with pytest.raises(ValueError, match="every must be a positive int"):
        Preemption(every=0)
    with pytest.raises(TypeError, match="on_stop must be callable"):
        Preemption(on_stop="checkpoint")
    preemption = Preemption(signals=(signal.SIGUSR2,))
    try:
        preemption.attach(Engine(lambda e, b: b))
        with pytest.raises(ValueError, match="already has a final engine"):
            preemption.attach(Engine(lambda e, b: b))
    finally:
        preemption.restore()
    assert HangWatchdog  # imported for the subprocess below


BOTH_ORDERS = textwrap.dedent("""
    import os, signal
    from distengine.engine import Engine, Events
    from distengine.handlers import HangWatchdog, Preemption

    for watchdog_first in (True, False):
        trainer = Engine(lambda e, b: b)
        preemption = Preemption(on_stop=lambda e: print("on_stop", e.state.iteration), every=2)
        if watchdog_first:
            HangWatchdog(timeout_s=60).attach(trainer)
            preemption.attach(trainer)
        else:
            preemption.attach(trainer)
            HangWatchdog(timeout_s=60).attach(trainer)
        trainer.add_event_handler(
            Events.ITERATION_COMPLETED(once=3), lambda: os.kill(os.getpid(), signal.SIGTERM)
        )
        trainer.run(range(20))
        print("preempted", trainer.state.preempted, trainer.state.iteration, flush=True)
""")


def test_the_watchdogs_sigterm_dump_still_happens_in_either_order():
    done = subprocess.run(
        [sys.executable, "-c", BOTH_ORDERS], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:4] == ["on_stop 5", "preempted True 5"] * 2
    assert done.stderr.count("most recent call first") == 2, done.stderr  # one dump each
