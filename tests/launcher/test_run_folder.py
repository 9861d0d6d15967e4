"""A run folder belongs to one job: lock, run identity, corrupt files set aside, refusals."""

import json
import signal
import time

import torch

from tests.launcher.launching import kill_group, launch, start_sleeping_job, wait_gone

REPORT = "task.entrypoint=tests.launcher.entry_points:report"
QUIET = "trainer.progress_bar=false"


def snapshot(run_dir):
    """What a refused start must not touch: the resolved config and Hydra's record."""
    files = [run_dir / "config.yaml", *(run_dir / ".hydra").iterdir()]
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}


def test_a_busy_folder_is_refused_at_once_and_a_dead_jobs_lock_is_taken_over(tmp_path):
    proc, pids = start_sleeping_job(tmp_path)
    try:
        assert len(pids) == 2
        before = snapshot(tmp_path)
        start = time.monotonic()
        second = launch(f"hydra.run.dir={tmp_path}", REPORT, timeout=60)
        elapsed = time.monotonic() - start
        print(f"\nsecond launch into a busy folder refused after {elapsed:.1f}s")
        assert second.returncode == 2 and elapsed < 5
        assert second.stderr.strip().splitlines() == [second.stderr.strip()]
        assert f"the run folder {tmp_path} is in use by another job (pid {proc.pid} on " in (
            second.stderr
        )
        assert snapshot(tmp_path) == before
        proc.send_signal(signal.SIGKILL)  # the holder dies without releasing its lock
        wait_gone([proc.pid, *pids], 10)
    finally:
        kill_group(proc)
    third = launch(f"hydra.run.dir={tmp_path}", REPORT, check=True)
    assert f"the previous job in {tmp_path} (pid {proc.pid} on " in third.stderr
    assert "ended without releasing it" in third.stderr
    assert (tmp_path / "rank1.json").is_file()


def test_a_run_resumes_only_from_its_own_checkpoints(tmp_path):
    """A new run (resume=never) first moves the older run's checkpoint_22 and 44 aside: its
    own checkpoint_22 would overwrite them. A later resume takes the new run's own 22."""
    older = launch(f"hydra.run.dir={tmp_path}", "trainer.max_epochs=2", "trainer.seed=1", QUIET)
    assert older.returncode == 0, older.stderr
    older_id = json.loads((tmp_path / "run.json").read_text())["run_id"]
    folder, aside = tmp_path / "checkpoints", tmp_path / "checkpoints" / "previous" / older_id
    kept = ("checkpoint_22.pt", "checkpoint_44.pt", "run.json", "config.yaml", "metrics.json")
    before = {n: ((folder if n.endswith(".pt") else tmp_path) / n).read_bytes() for n in kept}
    events = sorted(p.relative_to(tmp_path) for p in (tmp_path / "tb").rglob("*") if p.is_file())
    new = ["trainer.max_epochs=1", QUIET]
    fresh = launch(f"hydra.run.dir={tmp_path}", *new, "checkpoint.resume=never", check=True)
    assert (
        f"checkpoints of another run (run id {older_id}) moved to {aside}, so that this run "
        "does not overwrite them: checkpoint_22.pt, checkpoint_44.pt; its history is there "
        "too: run.json, config.yaml, metrics.json, tb\n"
    ) in fresh.stdout
    assert "checkpoint.resume=never: starting at iteration 0" in fresh.stdout
    for name, data in before.items():  # nothing was deleted or overwritten
        assert (aside / name).read_bytes() == data
    for name in kept[:2]:
        assert json.loads((aside / f".{name}.meta.json").read_text())["run_id"] == older_id
    assert events and all((aside / event).is_file() for event in events)
    assert [e["epoch"] for e in json.loads((tmp_path / "metrics.json").read_text())["history"]] == [
        1
    ]  # the new run's own history
    again = launch(f"hydra.run.dir={tmp_path}", *new, check=True)  # finished: validates only
    assert f"resumed from {folder}/checkpoint_22.pt (iteration 22)" in again.stdout
    assert again.stdout.startswith(  # said by the launcher at once, before any rank starts
        f"the run in {tmp_path} already finished 1 epochs (its newest checkpoint "
        f"{folder}/checkpoint_22.pt holds iteration 22): the ranks only validate it"
    )
    assert "moved to" not in again.stdout and (aside / "checkpoint_44.pt").is_file()


def test_a_checkpoint_without_its_sidecar_is_still_resumed_and_one_of_no_known_run_is_kept(
    tmp_path,
):
    """checkpoint_44's sidecar removed, checkpoint_22's garbage: both tell their run from their
    contents. A checkpoint_66.pt whose run cannot be told is moved aside, not overwritten."""
    launch(f"hydra.run.dir={tmp_path}", "trainer.max_epochs=2", QUIET, check=True)
    folder = tmp_path / "checkpoints"
    (folder / ".checkpoint_44.pt.meta.json").unlink()
    (folder / ".checkpoint_22.pt.meta.json").write_text("garbage")
    torch.save({"w": torch.zeros(1)}, folder / "checkpoint_66.pt")  # a file of no known run
    unknown = (folder / "checkpoint_66.pt").read_bytes()
    run = launch(f"hydra.run.dir={tmp_path}", "trainer.max_epochs=3", QUIET, check=True)
    assert f"resumed from {folder}/checkpoint_44.pt (iteration 44)" in run.stdout
    aside = folder / "previous" / "unknown-run"
    assert (
        "checkpoints whose run cannot be told (no run id in their sidecar, or in the file "
        "where it has no usable sidecar) moved to "
        f"{aside}, so that this run does not overwrite them: checkpoint_66.pt"
    ) in run.stdout
    assert (aside / "checkpoint_66.pt").read_bytes() == unknown
    assert json.loads((folder / ".checkpoint_66.pt.meta.json").read_text())["iteration"] == 66


def test_corrupt_checkpoints_are_set_aside_and_reported(tmp_path):
    launch(f"hydra.run.dir={tmp_path}", "trainer.max_epochs=1", QUIET, check=True)
    folder = tmp_path / "checkpoints"
    names = sorted(p.name for p in folder.glob("checkpoint_*.pt"))
    for name in names:
        (folder / name).write_bytes((folder / name).read_bytes()[:1000])  # every one truncated
    run = launch(f"hydra.run.dir={tmp_path}", "trainer.max_epochs=1", QUIET, check=True)
    for name in names:
        assert f"checkpoint {folder / name} is corrupt" in run.stdout
        assert len((folder / "corrupt" / name).read_bytes()) == 1000  # kept as it was
    assert f"no valid checkpoint of this run is left in {folder}" in run.stdout
    assert "starts from iteration 0" in run.stdout and "resumed from" not in run.stdout


def test_a_changed_config_or_world_size_is_refused_before_anything_is_written(tmp_path):
    """The folder of a finished run (its records written here), resumed with other values."""
    from launch.config.compose import compose, job_config
    from launch.job.folder import RunFolder

    RunFolder(tmp_path).start_run(job_config(compose([])), world_size=2)  # the default job
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "checkpoint_22.pt").write_bytes(b"a checkpoint")
    (tmp_path / "config.yaml").write_text("the run's config")
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("[]")
    before = snapshot(tmp_path)
    for overrides, message in [
        (["model.hidden=64"], "model.hidden changed (128 in the run, 64 now). Use another"),
        (["trainer.seed=3"], "trainer.seed changed (0 in the run, 3 now: it orders the samp"),
        (["optim=sgd"], "optim._target_ changed ('torch.optim.Adam' in the run, 'torch.optim"),
    ]:
        run = launch(f"hydra.run.dir={tmp_path}", *overrides, timeout=60)
        assert run.returncode == 2, run.stderr
        assert f"error: cannot resume the run in {tmp_path}: {message}" in run.stderr
        assert "checkpoint.resume=never" in run.stderr and "Traceback" not in run.stderr
        assert snapshot(tmp_path) == before
    assert not (tmp_path / "stop.json").exists()


def test_a_file_weights_only_refuses_is_moved_aside_not_fatal(tmp_path):
    """A user's own file of pickled objects in checkpoints/ (no sidecar) is of no known run:
    moved aside, whether the next run resumes or starts afresh (it stopped both)."""
    import argparse

    launch(f"hydra.run.dir={tmp_path}", "trainer.max_epochs=1", QUIET, check=True)
    folder, aside = tmp_path / "checkpoints", tmp_path / "checkpoints" / "previous" / "unknown-run"
    torch.save({"args": argparse.Namespace(lr=0.1)}, folder / "mine.pt")
    mine = (folder / "mine.pt").read_bytes()
    resumed = launch(f"hydra.run.dir={tmp_path}", "trainer.max_epochs=1", QUIET, check=True)
    assert f"resumed from {folder}/checkpoint_22.pt (iteration 22)" in resumed.stdout
    assert f"moved to {aside}, so that this run does not overwrite them: mine.pt" in (
        resumed.stdout
    )
    assert (aside / "mine.pt").read_bytes() == mine
    (aside / "mine.pt").rename(folder / "mine.pt")
    fresh = ["trainer.max_epochs=1", QUIET, "checkpoint.resume=never"]
    again = launch(f"hydra.run.dir={tmp_path}", *fresh, check=True)
    assert "mine.pt" in again.stdout and (aside / "mine.pt").read_bytes() == mine


def test_checkpoints_moved_before_a_failed_move_are_still_said(tmp_path, capsys):
    """The second run's folder cannot be made (a file is in the way): the first run's
    checkpoint was moved already, and the line saying where is printed all the same."""
    import pytest

    from launch.recipe.lineage import set_aside_others

    for name, run in (("a.pt", "run-a"), ("b.pt", "run-b")):
        torch.save({"w": torch.zeros(1)}, tmp_path / name)
        (tmp_path / f".{name}.meta.json").write_text(json.dumps({"crc32": "0", "run_id": run}))
    (tmp_path / "previous").mkdir()
    (tmp_path / "previous" / "run-b").write_text("in the way")
    with pytest.raises(OSError):
        set_aside_others(tmp_path, "this-run", on_corrupt=print)
    assert (tmp_path / "previous" / "run-a" / "a.pt").is_file()
    assert f"moved to {tmp_path / 'previous' / 'run-a'}" in capsys.readouterr().out
