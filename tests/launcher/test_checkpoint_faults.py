"""The checkpoint path's fault matrix, through the launcher: each fault ends the run with a true
message (the named checkpoint exists and is the one the next run resumes from), leaves no file
lost or half written, and the run, continued, ends with the uninterrupted run's weights bit for
bit. Faults are injected by ``tests.launcher.checkpoint_faults`` (see there).

The library side of the same faults (any exception type on rank 0, a write longer than the
process group's timeout or than its own, damage told from refusal and from this process's
trouble) is in ``tests/handlers/test_checkpoint_faults.py`` on real gloo ranks.
"""

import re
import time
from pathlib import Path

from tests.launcher.launching import launch
from tests.launcher.weights import SHORT, assert_bitwise_equal, final_weights

FAULTY = "task.entrypoint=tests.launcher.checkpoint_faults:train"


def files(folder: Path) -> list[str]:
    """Every file in the checkpoint folder (sidecars and temporary files included)."""
    return sorted(p.name for p in folder.iterdir() if p.is_file())


def timed(*overrides: str, faults: str, **kwargs):
    start = time.monotonic()
    run = launch(*overrides, env={"FAULTS": faults}, **kwargs)
    print(f"\nFAULTS={faults}: exit {run.returncode} after {time.monotonic() - start:.1f}s")
    return run


def test_two_stops_in_a_row_keep_n_saved_and_the_run_ends_bitwise(tmp_path, uninterrupted):
    """Stop (SIGTERM), resume and stop again, resume to the end: every message names the
    checkpoint the next run resumes from, and checkpoint.n_saved=2 holds over the whole run,
    not per attempt."""
    job = [f"hydra.run.dir={tmp_path}", *SHORT, FAULTY]
    folder, resumes_from = tmp_path / "checkpoints", None
    for faults in ("stop@31", "stop@+3", ""):
        run = timed(*job, faults=faults)
        if resumes_from is not None:
            assert f"resumed from {resumes_from} (iteration " in run.stdout
        if not faults:
            break
        assert run.returncode == 75, run.stderr
        said = re.search(
            rf"Job stopped by SIGTERM in {tmp_path} at iteration (\d+)(?: \([^)]*\))?; checkpoint "
            r"saved: "
            r"(\S+)\nTo resume: ",
            run.stderr,
        )
        assert said, run.stderr
        resumes_from = Path(said.group(2))
        assert resumes_from == folder / f"checkpoint_{said.group(1)}.pt"
        assert resumes_from.is_file() and len(list(folder.glob("*.pt"))) == 2, files(folder)
    assert run.returncode == 0, run.stderr
    assert files(folder) == [
        ".checkpoint_85.pt.meta.json",
        ".checkpoint_88.pt.meta.json",
        "checkpoint_85.pt",
        "checkpoint_88.pt",
    ]
    assert_bitwise_equal(final_weights(tmp_path), uninterrupted)


def test_a_slow_write_a_corrupt_newest_a_kill_mid_save_and_a_full_disk_end_bitwise(
    tmp_path, uninterrupted
):
    """The first attempt meets three faults: rank 0's write at 20 takes longer than
    dist.timeout_s (the other rank waits for it), the newest checkpoint (30) is cut short at
    31, and rank 0 is killed mid-write at 35. The restart names the newest intact checkpoint
    (25), the ranks set 30 aside and remove the half-written file. The second attempt's disk
    is full at 50: the restart names the error and 45. The third ends bitwise. A later start
    whose rank 0 cannot map the file stops, leaving the file where it is."""
    job = [f"hydra.run.dir={tmp_path}", *SHORT, FAULTY]
    folder = tmp_path / "checkpoints"
    faults = "slow@20,corrupt@31,killsave@35,full@50"
    settings = ["dist.max_restarts=2", "dist.timeout_s=5"]
    run = timed(*job, *settings, faults=faults, check=True, timeout=400)  # three attempts
    killed = r"(was killed by SIGKILL|died without raising an exception \(.*\))"  # who is first
    restarts = [
        rf"restart 1 of 2: rank 0 \(local rank 0\) {killed}; the entrypoint starts again "
        + re.escape(f"(newest: {folder}/checkpoint_25.pt, iteration 25)"),
        re.escape(
            "restart 2 of 2: rank 0 (local rank 0) raised OSError: [Errno 27] [EFBIG] File too "
            f"large while writing the checkpoint {folder}/checkpoint_50.pt; the entrypoint starts "
            f"again (newest: {folder}/checkpoint_45.pt, iteration 45)"
        ),
    ]
    assert re.fullmatch("\n".join(restarts), run.stderr.strip()), run.stderr
    corrupt = f"checkpoint {folder}/checkpoint_30.pt is corrupt (its CRC-32 differs from the "
    assert corrupt in run.stdout and f"moved to {folder}/corrupt/checkpoint_30.pt" in run.stdout
    for attempt, at in ((2, 25), (3, 45)):
        resumed = f"attempt {attempt} (restart {attempt - 1}) resumed from {folder}/checkpoint_"
        assert f"{resumed}{at}.pt (iteration {at})" in run.stdout
    assert files(folder) == [
        ".checkpoint_85.pt.meta.json",
        ".checkpoint_88.pt.meta.json",
        "checkpoint_85.pt",
        "checkpoint_88.pt",
    ]  # the temporary file of the killed write is gone
    assert_bitwise_equal(final_weights(tmp_path), uninterrupted)
    newest = folder / "checkpoint_88.pt"
    before = newest.read_bytes()
    again = timed(*job, faults="nommap")
    assert again.returncode == 1
    assert (
        f"raised CheckpointEnvironmentError: checkpoint {newest} is intact (its CRC-32 matches "
        "its sidecar) but this process could not load it (RuntimeError: unable to mmap "
    ) in again.stderr
    assert "it was left where it is: free memory or address space" in again.stderr
    assert "starting at iteration 0" not in again.stdout and "moved to" not in again.stdout
    assert newest.read_bytes() == before
    assert files(folder / "corrupt") == [".checkpoint_30.pt.meta.json", "checkpoint_30.pt"]
