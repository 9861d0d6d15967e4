"""The launcher's stop signals in-process, against stand-in ranks: each signal, each phase.

A stand-in rank is a child process that leads its own group (as a launcher's
rank does) and writes down every signal it gets. The launcher's side of the
matrix (what each of SIGINT, SIGTERM, SIGHUP, SIGQUIT does before the ranks
start, while they run, a second time, and after the job) is checked here in
about two seconds; the ranks' side (training, validation, a save, the last
iteration) in ``tests/handlers/test_preemption.py``; whole jobs in
``test_interrupts.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from launch.job import signals as signals_module
from launch.job.outcome import after_stop, after_success
from launch.job.signals import (
    STOP_SIGNALS,
    EarlyStop,
    Stop,
    StopSignals,
    check_late,
    describe,
    stop_early,
)

#: A stand-in rank: writes down every stop signal it gets (a shell starts in milliseconds).
RANK = (
    'for s in INT TERM HUP QUIT; do trap "echo SIG$s >> $0" $s; done; '
    "echo ready >> $0; while :; do sleep 0.02; done"
)


class Ranks:
    """Stand-in ranks; ``got(i)``: the signals rank ``i`` wrote down."""

    def __init__(self, folder, n=2):
        self.folder, self.procs = folder, []
        for _ in range(n):
            self.add()

    def add(self):
        log = self.folder / f"rank{len(self.procs)}.txt"
        proc = subprocess.Popen(["bash", "-c", RANK, str(log)], start_new_session=True)
        self.procs.append(proc)
        wait_for(lambda: log.exists() and "ready" in log.read_text())
        return proc

    def got(self, i):
        return (self.folder / f"rank{i}.txt").read_text().split()[1:]

    def pids(self):
        """The live ones, once their handlers are in place."""
        ready = [i for i in range(len(self.procs)) if (self.folder / f"rank{i}.txt").exists()]
        return [self.procs[i].pid for i in ready if self.procs[i].poll() is None]

    def close(self):
        for proc in self.procs:
            proc.kill()
            proc.wait()


def wait_for(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def ranks(tmp_path, monkeypatch):
    saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    ranks = Ranks(tmp_path)
    monkeypatch.setattr(signals_module, "rank_pids", ranks.pids)
    monkeypatch.setattr(signals_module, "REPEAT_S", 0.2)
    monkeypatch.setattr(signals_module, "FORWARD_EVERY_S", 0.05)
    try:
        yield ranks
    finally:
        stop_early()  # forgets late signals
        ranks.close()
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def deliver(*names, gap=0.0):
    """Signals to this process (the launcher), ``gap`` seconds apart; handlers run at once."""
    for name in names:
        os.kill(os.getpid(), getattr(signal, name))
        time.sleep(gap or 0.001)


FIRST_LINE = {
    "SIGINT": "Ctrl-C: asked",
    "SIGHUP": "SIGHUP: the ranks are asked to stop as on SIGTERM (they are killed if still "
    "running in 60 s)",
    "SIGQUIT": "SIGQUIT: the ranks are asked to stop as on SIGTERM (they are killed if still "
    "running in 60 s)",
}


@pytest.mark.parametrize(
    "first, forwarded",
    [("SIGINT", "SIGINT"), ("SIGTERM", "SIGTERM"), ("SIGHUP", "SIGTERM"), ("SIGQUIT", "SIGTERM")],
)
def test_each_stop_signal_is_one_request_and_a_later_ctrl_c_stops_at_once(ranks, first, forwarded):
    said = []
    with StopSignals("Ctrl-C: asked", grace_s=60, say=said.append):
        with pytest.raises(EarlyStop) as early:  # the rendezvous: no rank was started
            deliver(first)
    assert early.value.signal == first and ranks.got(0) == [] and said == []

    with StopSignals("Ctrl-C: asked", grace_s=60, say=said.append) as stops:
        stops.ranks_starting()
        deliver(first, first)  # one signal delivered twice, as `timeout` does
        wait_for(lambda: ranks.got(0) and ranks.got(1))
        late = ranks.add()  # a rank the agent starts after the request gets it too
        wait_for(lambda: ranks.got(2))
        time.sleep(0.25)
        assert [ranks.got(i) for i in range(3)] == [[forwarded]] * 3
        assert (stops.first, stops.stop.how, stops.stop.at_once) == (first, describe(first), False)
        assert said == ([FIRST_LINE[first]] if first in FIRST_LINE else [])

        deliver("SIGTERM")  # later: said, changes nothing
        assert said[-1] == "SIGTERM: the ranks are already stopping"
        time.sleep(0.25)
        assert ranks.got(0) == [forwarded]

        deliver("SIGINT")  # a later Ctrl-C: at once
        wait_for(lambda: all(len(ranks.got(i)) == 2 for i in range(3)))
        assert [ranks.got(i) for i in range(3)] == [[forwarded, "SIGINT"]] * 3
        assert stops.stop.at_once and stops.stop.how == "a second Ctrl-C"
        assert said[-1].startswith("second Ctrl-C: stopping the ranks at once, without a ")

        time.sleep(0.25)
        deliver("SIGINT")  # a third: killed now
        wait_for(lambda: not ranks.pids())
        assert sorted(stops.stop.killed) == sorted(p.pid for p in ranks.procs)
        assert late.wait() == -signal.SIGKILL
    said.clear()
    deliver("SIGTERM", "SIGHUP")  # after the job: noted (this process lives on)
    assert said == [f"note: {n} came after the job ended" for n in ("SIGTERM", "SIGHUP")]
    with pytest.raises(EarlyStop, match="SIGTERM"):  # a sweep starts no further job
        check_late()


def test_ranks_still_running_after_the_grace_are_killed_and_that_is_said(ranks, tmp_path):
    """A rank that finished its task is sent nothing: it waits for torch's agent to collect
    its result, and killing it then would leave the agent waiting forever."""
    from launch.job.folder import RunFolder

    done = ranks.add()
    finished = lambda: {done.pid}  # noqa: E731 - its `finished` marker, as JobLogs reads it
    with StopSignals("", grace_s=0.3, say=lambda line: None, finished=finished) as stops:
        stops.ranks_starting()
        deliver("SIGTERM")  # the stand-ins only write it down
        wait_for(lambda: ranks.pids() == [done.pid])
        time.sleep(0.1)
    assert stops.stop.killed_after_s >= 0.3 and done.pid not in stops.stop.killed
    assert (ranks.got(0), ranks.got(2)) == (["SIGTERM"], [])
    outcome = after_stop(RunFolder(tmp_path), stops.stop, "python -m launch ...")
    assert outcome.code == 130
    assert outcome.message == (
        f"Job interrupted by SIGTERM in {tmp_path}: no checkpoint was saved for this stop "
        f"(ranks still running {stops.stop.killed_after_s:.0f} s after the signal were killed)"
    )


def test_a_signal_is_said_for_when_it_came_relative_to_the_ranks_end(tmp_path):
    attempt = tmp_path / "attempt_0"
    for local in (0, 1):
        (attempt / str(local)).mkdir(parents=True)
        (attempt / str(local) / "finished").write_text("1")
    ended = max((attempt / str(r) / "finished").stat().st_mtime for r in (0, 1))
    after = after_success(Stop(first="SIGTERM", at=ended + 0.5), attempt)
    assert (after.code, after.message) == (0, "note: SIGTERM came after the ranks finished")
    during = after_success(Stop(first="SIGINT", at=ended - 0.032), attempt)  # 32 ms before
    assert during.code == 0 and during.message == (
        "note: Ctrl-C (SIGINT) came while the ranks were finishing the run's last steps; they "
        "finished it (nothing to resume)"
    )
    assert after_success(Stop(), attempt).message == ""
    # the forwarded SIGTERM ended a rank that had already finished its task: still done
    from launch.job.folder import RunFolder

    done = after_stop(
        RunFolder(tmp_path), Stop(first="SIGTERM", at=ended + 1), "x", None, {1: -15}, attempt
    )
    assert done.code == 0 and "after the ranks finished" in done.message
