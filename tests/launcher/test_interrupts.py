"""Ctrl-C and SIGTERM: a checkpoint and exit 75 when one was saved, exit 130 when not.

Each message is checked against what is on disk, and the resumed run against an
uninterrupted one, bit for bit.
"""

import json
import re
import shlex
import subprocess
import sys
import time

import pytest

from tests.launcher.launching import (
    ROOT,
    clean_env,
    kill_group,
    launch,
    start_sleeping_job,
    wait_gone,
)
from tests.launcher.weights import SHORT, assert_bitwise_equal, final_weights

CTRL_C = "task.entrypoint=tests.launcher.entry_points:train_and_ctrl_c"


@pytest.mark.parametrize("how", ["group", "launcher"])
def test_ctrl_c_saves_a_checkpoint_and_the_printed_command_resumes_bitwise(
    tmp_path, uninterrupted, how
):
    start = time.monotonic()
    first = launch(f"hydra.run.dir={tmp_path}", *SHORT, CTRL_C, env={"CTRL_C": how})
    print(f"\nCtrl-C ({how}) to exit: {time.monotonic() - start:.1f}s")
    assert first.returncode == 75, first.stderr
    saved = re.search(r"checkpoint saved: (\S+checkpoint_(\d+)\.pt)", first.stderr)
    assert saved and (tmp_path / "checkpoints" / f"checkpoint_{saved[2]}.pt").is_file()
    assert 31 <= int(saved[2]) < 88
    assert "Traceback" not in first.stderr
    # `launcher`: one Ctrl-C delivered twice at once (as `timeout -s INT` does) is one
    assert "second Ctrl-C" not in first.stderr
    stop = json.loads((tmp_path / "stop.json").read_text())
    after = int(saved[2]) - stop["signalled_at"]
    assert 0 < after and stop["signalled_at"] >= 31  # the count it gives is the count
    counted = f"{after} iteration{'s' * (after != 1)} after SIGINT reached rank 0"
    assert (
        f"Job stopped by Ctrl-C (SIGINT) in {tmp_path} at iteration {saved[2]} ({counted}); "
        "checkpoint saved: "
    ) in first.stderr
    command = re.search(r"To resume: (.+)", first.stderr)[1]
    args = shlex.split(command)
    assert args[:3] in (["python", "-m", "launch"], [sys.executable, "-m", "launch"])
    if how == "launcher":
        return  # the same stop: resuming it is shown once, for the terminal's Ctrl-C

    second = subprocess.run(
        [sys.executable, *args[1:]],
        cwd=ROOT,
        env={**clean_env(), "CTRL_C": how},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 0, second.stderr
    assert f"resumed from {saved[1]} (iteration {saved[2]})" in second.stdout
    assert_bitwise_equal(final_weights(tmp_path), uninterrupted)


def test_a_second_ctrl_c_stops_at_once_without_a_checkpoint(tmp_path):
    first = launch(f"hydra.run.dir={tmp_path}", *SHORT, CTRL_C, env={"CTRL_C": "twice"})
    elapsed = time.time() - (tmp_path / "interrupted_once").stat().st_mtime
    print(f"\nfirst Ctrl-C to exit, the second 1.5 s later (the stop takes 20 s): {elapsed:.1f}s")
    assert first.returncode == 130, first.stderr
    assert "second Ctrl-C: stopping the ranks at once" in first.stderr
    assert "no checkpoint was saved for this stop" in first.stderr
    assert "checkpoint saved" not in first.stderr and elapsed < 15
    steps = sorted(int(p.stem[11:]) for p in (tmp_path / "checkpoints").glob("checkpoint_*.pt"))
    # only regular saves (every 5 iterations, epochs of 22): the stop's own never happened
    assert steps and all(step % 5 == 0 or step % 22 == 0 for step in steps), steps


def test_sigterm_to_a_job_without_checkpoints_exits_130_within_the_grace(tmp_path):
    """An entrypoint saves nothing: no 75, no claim; a rank ignoring SIGTERM is killed."""
    proc, pids = start_sleeping_job(
        tmp_path,
        "dist.shutdown_grace_s=2",
        entrypoint="ignore_sigterm_and_sleep",
        pipe=True,
    )
    try:
        assert len(pids) == 2
        start = time.monotonic()
        proc.terminate()
        out, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - start
        print(f"\nSIGTERM to exit with ranks ignoring it (grace 2 s): {elapsed:.1f}s")
    finally:
        kill_group(proc)
    assert proc.returncode == 130 and elapsed < 10
    assert wait_gone(pids, 10) < 10  # every rank is gone
    assert f"Job interrupted by SIGTERM in {tmp_path}" in err
    assert "no checkpoint was saved for this stop" in err and "saved:" not in err
