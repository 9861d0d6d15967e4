"""Scripts and entrypoints get the same timeouts and culprit-first reports as the recipe."""

import time

import pytest

from tests.launcher.launching import ROOT, launch

LEAVING = ROOT / "tests/launcher/leaving.py"


@pytest.mark.parametrize("how", ["exit", "sleep"])
def test_a_script_rank_that_leaves_or_stalls_fails_the_job_within_the_timeout(tmp_path, how):
    start = time.monotonic()
    run = launch(
        f"hydra.run.dir={tmp_path}",
        f"task.script={LEAVING}",
        f"task.args=[{how}]",
        "dist.timeout_s=5",
    )
    elapsed = time.monotonic() - start
    print(f"\nscript rank 1 {how}: job failed after {elapsed:.1f}s (dist.timeout_s=5)")
    assert run.returncode == 1 and elapsed < 5 + 10
    report = run.stderr[run.stderr.index("Job failed") :].splitlines()
    if how == "exit":
        assert report[1] == (
            "rank 1 (local rank 1) finished its task early (returned) while the other ranks "
            "still needed it"
        )
    else:
        assert report[1].startswith("rank 1 (local rank 1) was not inside a collective")
        assert "leaving.py" in report[2] and "line 14" in report[2]
        assert any("Timed out" in line for line in report[3:])
    assert any(line.startswith("rank 0 then failed too") for line in report[2:])
    assert "exited with code 1" not in run.stderr


def test_a_recipe_rank_that_exits_0_early_is_named_not_reported_as_code_1(tmp_path):
    start = time.monotonic()
    run = launch(
        f"hydra.run.dir={tmp_path}",
        "trainer.max_epochs=1",
        "trainer.progress_bar=false",
        "dist.timeout_s=5",
        "task.entrypoint=tests.launcher.entry_points:train_and_rank_1_exits_0",
    )
    elapsed = time.monotonic() - start
    print(f"\nrecipe rank 1 sys.exit(0): job failed after {elapsed:.1f}s (dist.timeout_s=5)")
    assert run.returncode == 1 and elapsed < 5 + 30
    report = run.stderr[run.stderr.index("Job failed") :].splitlines()
    assert report[1:3] == [
        "the job hung:",
        "rank 1 (local rank 1) finished its task early (returned) while the other ranks still "
        "needed it",
    ]
    assert report[3].startswith("rank 0 made no progress for 0:00:05, waiting inside a collective")
    assert "exited with code" not in run.stderr


def test_slow_first_iterations_and_checkpoint_writes_are_not_hangs(tmp_path):
    """The watchdog counts from the first completed iteration and pauses while saving."""
    run = launch(
        f"hydra.run.dir={tmp_path}",
        "trainer.max_epochs=1",
        "trainer.progress_bar=false",
        "dist.timeout_s=2",
        "task.entrypoint=tests.launcher.entry_points:train_slow_first_iteration_and_save",
    )
    assert run.returncode == 0, run.stderr
    assert "the job hung" not in run.stderr
