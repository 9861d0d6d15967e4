"""Stop signals at each phase of a launched job, and a full disk: what the operator meets.

One run folder (its path holds a comma, which Hydra would read as a sweep) goes
through three launches, each started with the command the previous one
printed: SIGTERM during a validation longer than ``dist.shutdown_grace_s``,
SIGHUP (a closed terminal) in training, and SIGTERM as the run completes with
its stdout closed (``| head``). Each message is checked against the files it
names; the final weights against an uninterrupted run's, bit for bit.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

from launch.job.agent import free_port
from launch.job.command import hydra_value
from tests.launcher.launching import ROOT, clean_env, kill_group, launch, start_launch
from tests.launcher.weights import SHORT, assert_bitwise_equal, final_weights

SIGNALS_AT = "task.entrypoint=tests.launcher.entry_points:signals_at"


def resume(command: str, signals_at: str, close_stdout: bool = False):
    """Run a printed resume command with ``SIGNALS_AT``; its exit code, stdout and stderr."""
    args = shlex.split(command)
    proc = subprocess.Popen(
        [sys.executable, *args[1:]],
        cwd=ROOT,
        env={**clean_env(), "SIGNALS_AT": signals_at},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        if close_stdout:  # the reader left early, as `| head` does
            proc.stdout.close()
            proc.stdout = None
        out, err = proc.communicate(timeout=180)
    finally:
        kill_group(proc)
    return proc.returncode, out or "", err


def no_stack_dumps(run_dir) -> None:
    """A clean stop leaves no stack dump: not in the rank logs, not in stacks.txt."""
    for log in (run_dir / "logs").glob("rank*.log"):
        assert "most recent call first" not in log.read_text(), log
    for stacks in (run_dir / "logs").glob("*/attempt_*/*/stacks.txt"):
        assert stacks.read_text() == "", stacks


@pytest.mark.timeout(900)  # three launches and the uninterrupted run, on a loaded machine
def test_sigterm_in_a_long_validation_sighup_in_training_and_sigterm_at_the_end(
    tmp_path, uninterrupted
):
    run_dir = tmp_path / "run,1"  # the printed command must quote it for Hydra
    first = launch(
        f"hydra.run.dir={hydra_value(str(run_dir))}",
        *SHORT,
        "dist.shutdown_grace_s=20",  # the validation takes 97 s
        SIGNALS_AT,
        env={"SIGNALS_AT": "validation:SIGTERM"},
        timeout=180,
    )
    assert first.returncode == 75, first.stderr
    saved = run_dir / "checkpoints" / "checkpoint_22.pt"
    assert saved.is_file() and "epoch 1  validation" not in first.stdout  # it was cut
    assert first.stderr.startswith(
        f"Job stopped by SIGTERM in {run_dir} at iteration 22 (SIGTERM reached rank 0 at this "
        f"iteration); checkpoint saved: {saved}\nTo resume: "
    ), first.stderr
    no_stack_dumps(run_dir)
    command = re.search(r"To resume: (.+)", first.stderr)[1]

    code, out, err = resume(command, "training:SIGHUP")
    assert code == 75, err
    assert f"resumed from {saved} (iteration 22)" in out
    assert out.index("epoch 1  validation") > out.index("resumed from")  # the cut one, redone
    stop = json.loads((run_dir / "stop.json").read_text())
    stopped, reached = stop["iteration"], stop["signalled_at"]
    assert 31 <= reached < stopped < 88 and stop["checkpoint"] == str(
        run_dir / "checkpoints" / f"checkpoint_{stopped}.pt"
    )
    counted = f"{stopped - reached} iteration{'s' * (stopped - reached != 1)}"
    assert err.splitlines()[0] == (
        "SIGHUP: the ranks are asked to stop as on SIGTERM (they are killed if still running "
        "in 20 s)"
    )
    assert (
        f"Job stopped by SIGHUP in {run_dir} at iteration {stopped} ({counted} after SIGHUP "
        f"reached rank 0); checkpoint saved: {stop['checkpoint']}\nTo resume: {command}"
    ) in err
    no_stack_dumps(run_dir)

    code, _, err = resume(command, "after:SIGTERM", close_stdout=True)
    assert code == 0, err
    assert err.strip().splitlines()[-1] == (
        "note: SIGTERM came while the ranks were finishing the run's last steps; they finished "
        "it (nothing to resume)"
    )
    assert_bitwise_equal(final_weights(run_dir), uninterrupted)
    assert (run_dir / ".job.lock").read_text() == ""  # released


def test_a_stop_before_the_ranks_start_ends_the_launcher_at_once(tmp_path):
    """Node 0 of two waits for node 1 (which never comes): SIGTERM ends the wait."""
    proc = start_launch(
        f"hydra.run.dir={tmp_path}",
        "dist.nnodes=2",
        f"dist.master_port={free_port()}",
        "task.entrypoint=tests.launcher.entry_points:report",
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "logs" / "node0" / "rendezvous.log").exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        time.sleep(0.5)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        print(f"\nSIGTERM in the rendezvous to exit: {time.monotonic() - start:.1f}s")
    finally:
        kill_group(proc)
    assert proc.returncode == 130, err
    assert err.strip() == "error: stopped by SIGTERM before the ranks started"
    assert (tmp_path / ".job.lock").read_text() == ""  # released
    assert not list(tmp_path.glob("rank*.json"))  # no rank ran


def in_a_small_filesystem(folder, size: str, *overrides: str) -> subprocess.CompletedProcess:
    """``python -m launch`` writing its run folder into a tmpfs of ``size`` mounted on
    ``folder``, in a mount namespace of its own (as root, or in a user namespace where the
    kernel allows one): a real full disk, seen by the launcher and its ranks alike."""
    run = folder / "run"
    command = " ".join(
        [
            f"mount -t tmpfs -o size={size} tmpfs {folder} &&",
            f"{shlex.quote(sys.executable)} -m launch hydra.run.dir={run}",
            "dist.backend=gloo dist.nproc_per_node=2",
            *map(shlex.quote, overrides),
        ]
    )
    return subprocess.run(
        [*UNSHARE, "sh", "-c", command],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _unshare() -> list[str] | None:
    """How to mount a tmpfs here: ``unshare -m`` as root, ``unshare -rm`` otherwise."""
    if shutil.which("unshare") is None:
        return None
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        for command in (["unshare", "-m"], ["unshare", "-rm"]):
            probe = [*command, "sh", "-c", f"mount -t tmpfs tmpfs {folder}"]
            if subprocess.run(probe, capture_output=True).returncode == 0:
                return command
    return None


UNSHARE = _unshare()


@pytest.mark.skipif(UNSHARE is None, reason="no mount namespace for a small tmpfs here")
def test_a_full_disk_is_named_in_one_line_wherever_it_is_met(tmp_path):
    # Hydra's own files (.hydra/) do not fit: nothing started
    (tmp_path / "tiny").mkdir()
    tiny = in_a_small_filesystem(tmp_path / "tiny", "8k", "trainer.max_epochs=1")
    assert tiny.returncode == 2, tiny.stderr
    assert re.fullmatch(
        rf"error: cannot write {tmp_path}/tiny/run\S*: \[ENOSPC\] No space left on device\n",
        tiny.stderr,
    ), tiny.stderr
    # a rank fills the disk and fails: its error record is empty, the rank logs stop
    (tmp_path / "full").mkdir()
    full = in_a_small_filesystem(
        tmp_path / "full",
        "4m",
        "task.entrypoint=tests.launcher.entry_points:fill_the_disk_and_fail",
    )
    assert full.returncode == 1, full.stderr
    lines = full.stderr.splitlines()
    head = f"Job failed in {tmp_path}/full/run:"
    assert head in lines, full.stderr
    assert re.fullmatch(
        rf"the disk holding {tmp_path}/full/run is full \(\d+ KiB free\): writes there fail "
        r"with \[ENOSPC\] No space left on device",
        lines[lines.index(head) + 1],
    ), full.stderr
    assert "Traceback" not in full.stderr and "JSONDecodeError" not in full.stderr
