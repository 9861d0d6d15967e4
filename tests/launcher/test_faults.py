"""Fault tolerance of launched jobs, with real processes and real signals.

Each test prints how long detection and recovery took (run pytest with -s).
"""

import os
import re
import signal
import time

import pytest
import torch

from tests.launcher.launching import (
    alive,
    children,
    kill_group,
    launch,
    start_launch,
    start_sleeping_job,
    wait_gone,
)
from tests.launcher.weights import SHORT, assert_bitwise_equal, final_weights

KILL_RANK_1 = "task.entrypoint=tests.launcher.entry_points:train_and_kill_rank_1_once"


# "never" takes the same path once the first attempt has written (25 s): with --slow
@pytest.mark.parametrize("resume", ["auto", pytest.param("never", marks=pytest.mark.slow)])
def test_a_rank_killed_mid_epoch_is_restarted_from_its_runs_checkpoint(
    tmp_path, uninterrupted, resume
):
    """A restart resumes from the attempt's own checkpoints, whatever the first start said."""
    start = time.monotonic()
    run = launch(
        f"hydra.run.dir={tmp_path}",
        *SHORT,
        "dist.max_restarts=1",
        f"checkpoint.resume={resume}",
        KILL_RANK_1,
        check=True,
    )
    print(f"\nkill + restart + resume + finish: {time.monotonic() - start:.1f}s")
    how = "was killed by SIGKILL"  # the same whichever rank torch's agent saw fail first
    newest = re.escape(f"(newest: {tmp_path}/checkpoints/checkpoint_30.pt, iteration 30)")
    restart = rf"restart 1 of 1: rank 1 \(local rank 1\) {how}; the entrypoint starts again "
    restart += newest
    assert re.fullmatch(restart, run.stderr.strip()), run.stderr
    resumed = f"attempt 2 (restart 1) resumed from {tmp_path}/checkpoints/checkpoint_30.pt"
    assert f"{resumed} (iteration 30)" in run.stdout
    assert_bitwise_equal(final_weights(tmp_path), uninterrupted)


def test_a_killed_rank_without_restarts_fails_fast_naming_it(tmp_path):
    start = time.monotonic()
    run = launch(f"hydra.run.dir={tmp_path}", *SHORT, KILL_RANK_1)
    elapsed = time.monotonic() - start
    print(f"\nkilled rank reported after {elapsed:.1f}s in total")
    assert run.returncode == 1
    assert "rank 1 (local rank 1) was killed by SIGKILL" in run.stderr  # however it was seen
    assert run.stderr.index("rank 1 (local rank 1)") < run.stderr.index("rank 0 then failed too")


def test_ranks_that_fail_twice_succeed_on_the_third_attempt(tmp_path):
    run = launch(
        f"hydra.run.dir={tmp_path}",
        "dist.max_restarts=2",
        "task.entrypoint=tests.launcher.entry_points:fail_on_first_attempts",
        check=True,
    )
    assert [(tmp_path / f"done{r}").read_text() for r in range(2)] == ["2", "2"]
    how = "exited with code 3 without raising"
    restarts = [
        rf"restart {attempt} of 2: rank 1 \(local rank 1\) {how}; the entrypoint starts again"
        for attempt in (1, 2)
    ]
    assert re.fullmatch("\n".join(restarts), run.stderr.strip()), run.stderr


def test_a_planted_hang_is_reported_culprit_first_within_the_timeout(tmp_path):
    start = time.monotonic()
    run = launch(
        f"hydra.run.dir={tmp_path}",
        "dist.timeout_s=6",  # the entrypoint's watchdog: 3 s
        "task.entrypoint=tests.launcher.entry_points:hang_on_rank_1",
    )
    elapsed = time.monotonic() - start
    print(f"\nhang detected and reported after {elapsed:.1f}s in total (watchdog 3s)")
    assert run.returncode == 1 and elapsed < 40
    report = run.stderr[run.stderr.index("the job hung:") :].splitlines()
    assert report[1] == (
        "rank 1 made no progress for 0:00:03, NOT inside a collective; stuck at (innermost first):"
    )
    assert "entry_points.py" in "\n".join(report[2:5])
    culprit_end = next(i for i, line in enumerate(report) if line.startswith("rank 0"))
    assert report[culprit_end].startswith("rank 0 made no progress for 0:00:03, waiting inside")
    assert "in all_reduce" in report[culprit_end + 1]


def test_ranks_die_when_the_launcher_is_killed_with_sigkill(tmp_path):
    proc, pids = start_sleeping_job(tmp_path)
    try:
        assert len(pids) == 2 and set(pids) <= set(children(proc.pid))
        proc.send_signal(signal.SIGKILL)
        print(f"\nranks gone {wait_gone(pids, 10):.2f}s after the launcher's SIGKILL")
        assert not any(alive(pid) for pid in pids)
    finally:
        kill_group(proc)


def test_sigterm_to_the_ranks_checkpoints_and_exits_75(tmp_path):
    proc = start_launch(
        f"hydra.run.dir={tmp_path}",
        "trainer.max_epochs=500",
        "checkpoint.every_iters=50",
        "trainer.progress_bar=false",
    )
    try:
        deadline = time.monotonic() + 60
        while not list((tmp_path / "checkpoints").glob("checkpoint_*.pt")):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        ranks = children(proc.pid)
        assert len(ranks) == 2
        before = max(int(p.stem[11:]) for p in (tmp_path / "checkpoints").glob("checkpoint_*.pt"))
        start = time.monotonic()
        for pid in ranks:  # as a scheduler does: every rank gets the signal
            os.kill(pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        print(f"\nranks stopped {time.monotonic() - start:.1f}s after SIGTERM")
    finally:
        kill_group(proc)
    assert proc.returncode == 75, err
    newest = max((tmp_path / "checkpoints").glob("checkpoint_*.pt"), key=lambda p: int(p.stem[11:]))
    assert f"Job stopped by a signal to the ranks in {tmp_path} at iteration " in err
    assert f"checkpoint saved: {newest}" in err
    state = torch.load(newest, weights_only=True)  # the stop checkpoint is complete and loads
    iterations = {s["iteration"] for s in state["trainer"]["__per_rank__"]}
    assert int(newest.stem[11:]) >= before and iterations == {int(newest.stem[11:])}
