"""Fault tolerance of launched jobs, with real processes and real signals.

Each test prints how long detection and recovery took (run pytest with -s).
"""

import os
import signal
import time
from pathlib import Path

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

SHORT = ["trainer.max_epochs=4", "checkpoint.every_iters=5", "trainer.progress_bar=false"]


def final_weights(run_dir: Path) -> dict:
    checkpoints = sorted(
        (run_dir / "checkpoints").glob("checkpoint_*.pt"), key=lambda p: int(p.stem.split("_")[1])
    )
    state = torch.load(checkpoints[-1], weights_only=True)
    assert [s["iteration"] for s in state["trainer"]["__per_rank__"]] == [88, 88]  # per rank
    return state["model"]


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    launch(f"hydra.run.dir={run_dir}", *SHORT, check=True)
    return final_weights(run_dir)


@pytest.mark.parametrize("attempt", [1, 2])  # restarts are tested repeatedly, not once
def test_a_rank_killed_mid_epoch_is_restarted_and_the_weights_match(
    tmp_path, uninterrupted, attempt
):
    start = time.monotonic()
    run = launch(
        f"hydra.run.dir={tmp_path}",
        *SHORT,
        "dist.max_restarts=1",
        "task.entrypoint=tests.launcher.entry_points:train_and_kill_rank_1_once",
        check=True,
    )
    print(f"\nkill + restart + resume + finish: {time.monotonic() - start:.1f}s")
    assert "resumed from" in run.stdout and "checkpoint_30.pt" in run.stdout
    assert_bitwise_equal(final_weights(tmp_path), uninterrupted)


def test_a_killed_rank_without_restarts_fails_fast_naming_it(tmp_path):
    start = time.monotonic()
    run = launch(
        f"hydra.run.dir={tmp_path}",
        *SHORT,
        "task.entrypoint=tests.launcher.entry_points:train_and_kill_rank_1_once",
    )
    elapsed = time.monotonic() - start
    print(f"\nkilled rank reported after {elapsed:.1f}s in total")
    assert run.returncode == 1
    assert "rank 1 (local rank 1) was killed by SIGKILL" in run.stderr or (
        "rank 1 (local rank 1) died without raising" in run.stderr
    )
    assert run.stderr.index("rank 1 (local rank 1)") < run.stderr.index("rank 0 then failed too")


def test_ranks_that_fail_twice_succeed_on_the_third_attempt(tmp_path):
    launch(
        f"hydra.run.dir={tmp_path}",
        "dist.max_restarts=2",
        "task.entrypoint=tests.launcher.entry_points:fail_on_first_attempts",
        check=True,
    )
    assert [(tmp_path / f"done{r}").read_text() for r in range(2)] == ["2", "2"]


def test_sigterm_to_the_launcher_checkpoints_and_a_rerun_matches(tmp_path, uninterrupted):
    overrides = [
        f"hydra.run.dir={tmp_path}",
        *SHORT,
        "task.entrypoint=tests.launcher.entry_points:train_and_sigterm_launcher_once",
    ]
    start = time.monotonic()
    first = launch(*overrides)
    print(f"\npreemption stop: {time.monotonic() - start:.1f}s")
    assert first.returncode == 75, first.stderr
    assert "Job stopped" in first.stderr and "run the same command again" in first.stderr
    # the signal goes launcher -> agent -> ranks, so they stop at the boundary after 31 or later
    steps = [int(p.stem.split("_")[1]) for p in (tmp_path / "checkpoints").glob("checkpoint_*.pt")]
    stopped = max(steps)  # the preemption checkpoint is the newest
    assert 31 <= stopped < 88
    second = launch(*overrides, check=True)
    assert f"checkpoint_{stopped}.pt (iteration {stopped})" in second.stdout
    assert_bitwise_equal(final_weights(tmp_path), uninterrupted)


def test_a_corrupt_latest_checkpoint_is_reported_and_the_previous_one_used(tmp_path, uninterrupted):
    launch(f"hydra.run.dir={tmp_path}", "trainer.max_epochs=2", *SHORT[1:], check=True)
    newest = tmp_path / "checkpoints" / "checkpoint_44.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a full disk
    (tmp_path / "checkpoints" / ".checkpoint_45.pt.x.tmp").write_bytes(b"partial")  # a cut write
    run = launch(f"hydra.run.dir={tmp_path}", *SHORT, check=True)
    assert "checkpoint_44.pt is corrupt" in run.stdout + run.stderr
    assert "resumed from" in run.stdout and "checkpoint_40.pt" in run.stdout
    assert_bitwise_equal(final_weights(tmp_path), uninterrupted)


def test_a_changed_config_is_refused_at_resume(tmp_path):
    launch(f"hydra.run.dir={tmp_path}", "trainer.max_epochs=1", *SHORT[1:], check=True)
    run = launch(f"hydra.run.dir={tmp_path}", *SHORT, "model.hidden=64")
    assert run.returncode == 1
    assert "cannot resume from this checkpoint: model: model.hidden changed" in run.stderr


def test_a_planted_hang_is_detected_with_stacks_within_the_timeout(tmp_path):
    start = time.monotonic()
    run = launch(
        f"hydra.run.dir={tmp_path}",
        "dist.timeout_s=3",
        "task.entrypoint=tests.launcher.entry_points:hang_on_rank_1",
    )
    elapsed = time.monotonic() - start
    print(f"\nhang detected and reported after {elapsed:.1f}s in total (timeout 3s)")
    assert run.returncode == 1 and elapsed < 30
    assert "the job hung:" in run.stderr
    assert "rank 0 made no progress for 0:00:03" in run.stderr and "in all_reduce" in run.stderr
    assert "rank 1 made no progress" in run.stderr and "entry_points.py" in run.stderr


def test_ranks_die_when_the_launcher_is_killed_with_sigkill(tmp_path):
    proc, pids = start_sleeping_job(tmp_path)
    try:
        assert len(pids) == 2 and set(pids) <= set(children(proc.pid))
        proc.send_signal(signal.SIGKILL)
        print(f"\nranks gone {wait_gone(pids, 10):.2f}s after the launcher's SIGKILL")
        assert not any(alive(pid) for pid in pids)
    finally:
        kill_group(proc)


def test_a_changed_world_size_is_refused_at_resume(tmp_path):
    launch(f"hydra.run.dir={tmp_path}", "trainer.max_epochs=1", *SHORT[1:], check=True)
    run = launch(f"hydra.run.dir={tmp_path}", *SHORT, "dist.nproc_per_node=1")
    assert run.returncode == 1
    assert "world size 2 in the checkpoint, 1 now" in run.stderr


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
    assert "Job stopped" in err and "exit code 75" in err
    newest = max((tmp_path / "checkpoints").glob("checkpoint_*.pt"), key=lambda p: int(p.stem[11:]))
    state = torch.load(newest, weights_only=True)  # the stop checkpoint is complete and loads
    iterations = {s["iteration"] for s in state["trainer"]["__per_rank__"]}
    assert int(newest.stem[11:]) >= before and iterations == {int(newest.stem[11:])}
