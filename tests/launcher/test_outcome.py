"""What the launcher says when a job ends, and its run folder's records, without starting ranks."""

import json
import os
from types import SimpleNamespace

import pytest

from launch import exit_codes
from launch.job.command import resume_command
from launch.job.folder import FolderBusy, RunFolder
from launch.job.outcome import after_failure, after_stop

COMMAND = "python -m launch hydra.run.dir=/x"


def stop(folder: RunFolder, **record) -> None:
    (folder.path / "stop.json").write_text(json.dumps(record))


def test_a_checkpoint_is_claimed_only_when_the_file_exists(tmp_path):
    folder = RunFolder(tmp_path)
    saved = tmp_path / "checkpoint_31.pt"
    stop(folder, reason="preempted", iteration=31, checkpoint=str(saved), latest=str(saved))
    missing = after_stop(folder, "SIGTERM", COMMAND)
    assert missing.code == exit_codes.INTERRUPTED and "saved:" not in missing.message
    saved.write_bytes(b"x")
    found = after_stop(folder, "SIGTERM", COMMAND)
    assert found.code == exit_codes.PREEMPTED
    assert found.message == (
        f"Job stopped by SIGTERM in {tmp_path} at iteration 31; checkpoint saved: {saved}\n"
        f"To resume: {COMMAND}"
    )


def test_without_a_stop_record_nothing_is_claimed(tmp_path):
    nothing = after_stop(RunFolder(tmp_path), "SIGTERM", COMMAND)
    assert nothing.code == exit_codes.INTERRUPTED
    assert nothing.message == (
        f"Job interrupted by SIGTERM in {tmp_path}: no checkpoint was saved for this stop"
    )
    ranks_130 = {0: SimpleNamespace(exitcode=130), 1: SimpleNamespace(exitcode=130)}
    own = after_failure(ranks_130, None, RunFolder(tmp_path), COMMAND, 0)
    assert own.code == exit_codes.INTERRUPTED
    assert "no checkpoint was saved for this stop (the ranks exited 130" in own.message


def test_a_script_whose_ranks_exit_75_is_passed_on_as_their_word(tmp_path):
    """No stop record (not the recipe): the ranks' own 75 is what the launcher knows."""
    ranks_75 = {0: SimpleNamespace(exitcode=75)}
    own = after_failure(ranks_75, None, RunFolder(tmp_path), COMMAND, 0)
    assert own.code == exit_codes.PREEMPTED
    assert own.message.splitlines() == [
        f"Job stopped by a signal to the ranks in {tmp_path}: the ranks exited 75, their word for "
        '"stopped with a checkpoint" (where they saved is theirs to know)',
        f"To resume: {COMMAND}",
    ]


def test_an_interrupted_run_names_its_newest_checkpoint(tmp_path):
    folder = RunFolder(tmp_path)
    latest = tmp_path / "checkpoint_30.pt"
    latest.write_bytes(b"x")
    stop(folder, reason="interrupted", iteration=33, checkpoint=None, latest=str(latest))
    said = after_stop(folder, "a second Ctrl-C", COMMAND)
    assert said.code == exit_codes.INTERRUPTED
    assert said.message.splitlines() == [
        f"Job interrupted by a second Ctrl-C in {tmp_path} at iteration 33: no checkpoint was "
        "saved for this stop",
        f"This run's newest checkpoint is {latest}; to resume from it: {COMMAND}",
    ]


def test_the_newest_checkpoint_of_a_run_comes_from_the_sidecars(tmp_path):
    """Only an intact one is named: a_30's bytes differ from its sidecar's CRC-32 (the ranks
    will set it aside), so the newest is a_25."""
    from distengine.checkpoint.disk import file_checksum

    folder = RunFolder(tmp_path)
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    runs = [("a_40", "old", 40), ("a_20", "new", 20), ("a_25", "new", 25), ("a_30", "new", 30)]
    for name, run, iteration in runs:
        (checkpoints / f"{name}.pt").write_bytes(b"x")
        meta = {"crc32": file_checksum(checkpoints / f"{name}.pt"), "iteration": iteration}
        (checkpoints / f".{name}.pt.meta.json").write_text(json.dumps({**meta, "run_id": run}))
    (checkpoints / "a_30.pt").write_bytes(b"y")  # damaged after its sidecar was written
    assert folder.newest_checkpoint("new") == (checkpoints / "a_25.pt", 25)
    assert folder.newest_checkpoint("other") is None


def test_a_checkpoint_without_its_sidecar_is_named_from_its_own_contents(tmp_path):
    import torch

    folder = RunFolder(tmp_path)
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "a_20.pt").write_bytes(b"x")
    meta = {"crc32": "8cdc1683", "iteration": 20, "run_id": "new"}  # the CRC-32 of b"x"
    (checkpoints / ".a_20.pt.meta.json").write_text(json.dumps(meta))
    engine = {"iteration": 30, "epoch": 3}
    torch.save({"trainer": engine, "run": {"run_id": "new"}}, checkpoints / "a_30.pt")  # no sidecar
    assert folder.newest_checkpoint("new") == (checkpoints / "a_30.pt", 30)
    assert folder.newest_checkpoint(None) is None


def test_one_job_holds_a_folder_and_a_dead_holder_is_reported(tmp_path):
    first, second = RunFolder(tmp_path), RunFolder(tmp_path)
    assert first.acquire("one") is None
    with pytest.raises(FolderBusy, match=f"the run folder {tmp_path} is in use by another job"):
        second.check_free()
    with pytest.raises(FolderBusy, match=f"pid {os.getpid()} on "):
        second.acquire("two")
    first.release()
    assert (tmp_path / ".job.lock").read_text() == ""  # a clean end: emptied, not deleted
    assert second.acquire("two") is None
    os.close(second._fd)  # the holder dies: the kernel drops its lock, its record stays
    second._fd = None
    note = RunFolder(tmp_path).acquire("three")
    assert note.startswith(f"note: the previous job in {tmp_path} (pid {os.getpid()} on ")


def test_the_resume_command_names_the_folder_and_never_starts_afresh(tmp_path):
    command = resume_command(
        ["trainer.max_epochs=4", "checkpoint.resume=never", "hydra.run.dir=old", "a=b c"],
        tmp_path,
        resume="never",
    )
    assert command.split(" ", 3)[1:3] == ["-m", "launch"]
    assert command.endswith(
        f"trainer.max_epochs=4 'a=b c' hydra.run.dir={tmp_path.resolve()} checkpoint.resume=auto"
    )
