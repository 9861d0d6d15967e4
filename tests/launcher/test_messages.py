"""Each launcher message made to happen without starting ranks, and checked against the facts.

The facts are laid out as torch's agent and the ranks leave them (attempt
folders, markers, error records, lock files); a full disk is ``/dev/full``
behind the file a writer opens (it fails every write with ENOSPC).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from launch.job import folder as folder_module
from launch.job.attempts import AGENT_LOGGER, FirstFailures, JobLogs
from launch.job.command import hydra_value, resume_command
from launch.job.console import Console
from launch.job.failures import summarize
from launch.job.finished import finished_note
from launch.job.folder import FolderBusy, RunFolder
from launch.job.outcome import after_failure, after_stop, disk_full
from launch.job.streams import Follower, attempt_name

ENOSPC = "[ENOSPC] No space left on device"


def attempt(tmp_path, ranks=2):
    for local in range(ranks):
        (tmp_path / str(local)).mkdir(parents=True)
        (tmp_path / str(local) / "stderr.log").write_text("")
    return tmp_path


def error_record(rank_dir: Path, headline: str, trace: str = "") -> None:
    extra = {"py_callstack": trace, "timestamp": "1"}
    (rank_dir / "error.json").write_text(
        json.dumps({"message": {"message": headline, "extraInfo": extra}})
    )


# ------------------------------------------------------------------ paths and commands


def test_messages_name_the_run_folder_whole_and_the_resume_command_means_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = RunFolder("outputs/2024-05-01/18-00-34")  # as Hydra's default names it
    said = after_stop(folder, "SIGTERM", "python -m launch ...").message
    assert said.startswith(f"Job interrupted by SIGTERM in {tmp_path}/outputs/2024-05-01/18-00-34:")
    from launch.config.compose import compose

    for name in ["a,b", "it's", "x y=[z]", "a${b}", "q\\"]:
        command = resume_command(["trainer.max_epochs=4"], tmp_path / name)
        override = shlex.split(command)[-1]  # what the shell passes on
        assert override == f"hydra.run.dir={hydra_value(str(tmp_path / name))}"
        assert compose([override], None, None).hydra.run.dir == str(tmp_path / name), name


# ------------------------------------------------------------------ the run folder's lock


def test_a_busy_folder_whose_holder_has_not_written_its_record_is_not_made_up(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(folder_module, "HOLDER_WAIT_S", 0.2)
    lock = tmp_path / ".job.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a holder between its lock and its record
        with pytest.raises(FolderBusy) as busy:
            RunFolder(tmp_path).check_free()
    finally:
        os.close(fd)
    assert str(busy.value) == (
        f"the run folder {tmp_path} is in use by another job (it has not written who it is "
        "yet): wait for it to end, or choose another hydra.run.dir"
    )


def test_the_lock_record_replaces_a_longer_stale_one_and_always_parses(tmp_path):
    stale = {"pid": 1, "host": "h", "started": 0.0, "job_id": "x", "command": "y" * 500}
    (tmp_path / ".job.lock").write_text(json.dumps(stale))
    folder = RunFolder(tmp_path)
    note = folder.acquire("python -m launch")
    assert note.startswith(f"note: the previous job in {tmp_path} (pid 1 on h, started ")
    assert folder.holder()["pid"] == os.getpid()
    assert json.loads((tmp_path / ".job.lock").read_text())["command"] == "python -m launch"
    folder.release()


# ------------------------------------------------------------------ a full disk


def full(path: Path) -> Path:
    """Make ``path`` a link to /dev/full: every write through it fails with ENOSPC."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to("/dev/full")
    return path


def test_a_full_disk_is_named_in_one_line_for_each_file_the_launcher_writes(tmp_path, monkeypatch):
    from launch.config.errors import ConfigError
    from launch.recipe.reporting import History
    from launch.recipe.stop import write_stop

    pid = os.getpid()
    lock = RunFolder(tmp_path / "lock")

    def no_space(*args):  # the lock file is read too: /dev/full would give endless zeros
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(os, "pwrite", no_space)
        with pytest.raises(ConfigError) as error:
            lock.acquire("python -m launch")
    assert str(error.value) == f"cannot write {lock.lock_path}: {ENOSPC}"

    runs = RunFolder(tmp_path / "run")
    full(runs.path / f".run.json.{pid}.tmp")
    job = {
        "checkpoint": {"resume": "auto"},
        "model": {},
        "data": {},
        "optim": {},
        "trainer": {"seed": 0},
    }
    with pytest.raises(ConfigError) as error:
        runs.start_run(job, 2)
    assert str(error.value) == f"cannot write {runs.path}/run.json: {ENOSPC}"
    assert not (runs.path / "run.json").exists()

    full(tmp_path / "stop" / f".stop.json.{pid}.tmp")
    with pytest.raises(ConfigError, match=re.escape(f"stop.json: {ENOSPC}")):
        write_stop(tmp_path / "stop", "preempted", 31, None, None)

    full(tmp_path / "metrics" / ".metrics.json.partial")
    history = History(tmp_path / "metrics")
    state = SimpleNamespace(epoch=1, iteration=22, metrics={})
    with pytest.raises(OSError, match=re.escape(f"metrics.json: {ENOSPC}")):
        history.add(SimpleNamespace(state=state), SimpleNamespace(state=state))
    assert not (tmp_path / "metrics" / ".metrics.json.partial").exists()  # no partial left

    lines = []
    console = Console(sys.stdout, sys.stderr, live=False)
    console.line = lambda text, err=False, over=False: lines.append(text)
    full(tmp_path / "logs" / "rank0.log")
    follower = Follower(console, tmp_path / "logs")
    stdout = tmp_path / "0.out"
    stdout.write_text("hello\nworld\n")
    follower.attempt(0, {0: (str(stdout), str(tmp_path / "0.err"))})
    follower.close()
    assert lines.count("hello") == 1  # the console still shows the rank
    warned = [line for line in lines if line.startswith("warning:")]
    assert warned == [
        f"warning: cannot write {tmp_path}/logs/rank0.log: {ENOSPC}; the rank logs stop here "
        f"(the raw ones, if they could be written, are under {tmp_path}/logs)"
    ]


def test_a_full_disk_is_said_with_the_space_left(tmp_path, monkeypatch):
    assert disk_full(tmp_path) is None  # this one has room
    stats = os.statvfs(tmp_path)
    fake = SimpleNamespace(f_bavail=3, f_frsize=4096, f_blocks=stats.f_blocks)
    monkeypatch.setattr(os, "statvfs", lambda path: fake)
    assert disk_full(tmp_path) == (
        f"the disk holding {tmp_path} is full (12 KiB free): writes there fail with {ENOSPC}"
    )


# ------------------------------------------------------------------ failure summaries


def test_a_failure_summary_starts_with_its_headline_and_keeps_each_frames_file_line(tmp_path):
    folder = attempt(tmp_path / "attempt")
    trace = "\n".join(
        [
            "Traceback (most recent call last):",
            '  File "/x/run.py", line 3, in main',
            "    train(",
            '  File "/x/train.py", line 10, in train',
            "    loss = step(batch,",
            "                model)",  # a statement on two lines
            "           ^^^^^^^^^^^",
            '  File "/x/step.py", line 7, in step',
            "    raise ValueError('bad batch')",
            "ValueError: bad batch",
        ]
    )
    error_record(folder / "1", "ValueError: bad batch", trace)
    failure = SimpleNamespace(exitcode=1)
    said = after_failure({1: failure}, folder, RunFolder(tmp_path), "cmd", 0).message
    assert said.splitlines()[:10] == [
        f"Job failed in {tmp_path}:",
        "rank 1 (local rank 1) raised ValueError: bad batch",
        '      File "/x/run.py", line 3, in main',
        "        train(",
        '      File "/x/train.py", line 10, in train',
        "        loss = step(batch,",
        "                    model)",
        '      File "/x/step.py", line 7, in step',
        "        raise ValueError('bad batch')",
        "    ValueError: bad batch",
    ]


def test_a_killed_rank_is_named_one_way_whichever_rank_the_agent_saw_first(tmp_path):
    """Rank 1 was SIGKILLed; rank 0 then lost its peer. torch's agent names either first."""
    folder = attempt(tmp_path)
    error_record(folder / "0", "RuntimeError: Connection closed by peer [127.0.0.1]:4242")
    (folder / "1" / "exitcode").write_text("-9")  # what the launcher saw when the agent spoke
    seen_first = {
        "rank 1": {1: SimpleNamespace(exitcode=-9)},
        "rank 0": {0: SimpleNamespace(exitcode=1)},
    }
    for first, failures in seen_first.items():
        lines = summarize(failures, folder).splitlines()
        assert lines[0] == "rank 1 (local rank 1) was killed by SIGKILL", first
        assert lines[-1].startswith("rank 0 then failed too: RuntimeError: Connection closed")


def test_unreadable_error_records_are_said_not_parsed(tmp_path):
    folder = attempt(tmp_path)
    (folder / "0" / "error.json").write_text("")  # a full disk: torch could not write it
    error_record(folder / "1", "RuntimeError: Connection closed by peer")
    lines = summarize({}, folder).splitlines()
    assert lines[-2:] == [
        "rank 0 raised, but left an unreadable error record (empty or cut):",
        f"    {folder}/0/error.json",
    ]


class _Context:
    """Stands for torch's process context (a ``PContext``) when it logs a failure."""

    def __init__(self, procs, folders):
        self.procs, self.error_files = procs, {i: f"{f}/error.json" for i, f in folders.items()}
        self.subprocess_handlers = {i: SimpleNamespace(proc=p) for i, p in enumerate(procs)}

    def pids(self):
        return {i: p.pid for i, p in enumerate(self.procs)}

    def report(self):  # as torch's _poll logs the failure of rank 0
        logging.getLogger(AGENT_LOGGER).error(
            "failed (exitcode: %s) local_rank: %s (pid: %s)", 1, 0, self.procs[0].pid
        )


def test_a_frozen_rank_is_seen_named_first_and_let_go_once_told_to_stop(tmp_path, monkeypatch):
    from torch.distributed.elastic.multiprocessing.api import PContext

    from launch.job import signals

    folder = attempt(tmp_path)
    procs = [
        subprocess.Popen(["sleep", "30"], start_new_session=True),
        subprocess.Popen(["sleep", "30"], start_new_session=True),
    ]
    monkeypatch.setattr(signals, "rank_pids", lambda: [p.pid for p in procs])
    handlers = logging.getLogger(AGENT_LOGGER).handlers
    try:
        procs[0].kill()
        procs[0].wait()  # rank 0 failed...
        os.kill(procs[1].pid, signal.SIGSTOP)  # ...waiting for rank 1, which was frozen
        time.sleep(0.1)
        failures = FirstFailures()
        failures.install()
        failures.states.sample()
        context = type("Context", (_Context, PContext), {})  # PContext's abstract methods:
        for name in ("_start", "_poll", "_close"):  # never called here
            setattr(context, name, lambda self, *a: None)
        context.__abstractmethods__ = frozenset()
        context(procs, {0: folder / "0", 1: folder / "1"}).report()
        os.kill(procs[1].pid, signal.SIGTERM)  # the agent stops the job
        failures.states.sample()  # a stopped rank told to terminate is continued, and does
        assert procs[1].wait(timeout=10) == -signal.SIGTERM
    finally:
        logging.getLogger(AGENT_LOGGER).handlers = handlers
        for proc in procs:
            proc.kill()
            proc.wait()
    assert failures.last == (1, 0, procs[0].pid)
    assert (folder / "0" / "exitcode").read_text() == "-9" and (folder / "1" / "frozen").exists()
    lines = summarize({0: SimpleNamespace(exitcode=1)}, folder).splitlines()
    assert lines[0] == (
        "rank 1 (local rank 1) was frozen: its process was stopped (SIGSTOP, Ctrl-Z or a "
        "debugger) while the other ranks waited for it"
    )


# ------------------------------------------------------------------ what the console shows


def test_a_watchdogs_dump_stays_off_the_console_header_and_all():
    from launch.job.streams import StackDump

    dump = StackDump()
    lines = ["Timeout (0:00:05)!", "Thread 0x00007f (most recent call first):", '  File "x.py"']
    assert [dump.skips(line) for line in [*lines, "epoch 2  validation"]] == [1, 1, 1, 0]


def test_attempts_are_counted_the_same_way_in_the_rank_logs_and_on_the_console(tmp_path):
    assert (attempt_name(0), attempt_name(1)) == ("attempt 1", "attempt 2 (restart 1)")
    follower = Follower(Console(sys.stdout, sys.stderr, live=False), tmp_path / "logs")
    for number in (0, 1):
        follower.attempt(number, {0: (str(tmp_path / "o"), str(tmp_path / "e"))})
    follower.close()
    headers = [
        line.split(" (20")[0] for line in (tmp_path / "logs" / "rank0.log").read_text().splitlines()
    ]
    assert headers == ["=== attempt 1", "=== attempt 2 (restart 1)"]


def test_our_warnings_are_one_line_and_a_users_keep_their_source(capsys, monkeypatch):
    import distengine.engine.engine as ours
    from launch.recipe.notes import show_our_warnings_as_lines

    python = []  # Python's own way (file:line: Category: message, and the source line)
    monkeypatch.setattr(warnings, "showwarning", lambda *args: python.append(args[:4]))
    show_our_warnings_as_lines()
    warnings.showwarning("resuming on 2 rank(s) from 3", RuntimeWarning, ours.__file__, 726)
    warnings.showwarning("check your model", UserWarning, "/home/me/model.py", 3)
    assert capsys.readouterr().err == "warning: resuming on 2 rank(s) from 3\n"
    assert python == [("check your model", UserWarning, "/home/me/model.py", 3)]


def test_compile_times_are_said_around_the_first_iteration_and_validation(capsys):
    from distengine.engine import Engine, Events
    from launch.recipe.reporting import say_compile_times

    def step(engine, batch):  # a stand-in for a first call that compiles
        time.sleep(0.2 if engine.state.iteration == 1 else 0.0)

    trainer, evaluator = Engine(step), Engine(lambda e, b: None)
    say_compile_times(trainer, evaluator)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: evaluator.run(range(2)))
    trainer.run(range(3), max_epochs=2)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "compiling the model with torch.compile (the first training iteration)..."
    took = re.fullmatch(r"compiled: the first training iteration took (\d+\.\d) s", lines[1])
    assert took and float(took[1]) >= 0.2
    assert lines[2] == "compiling the model with torch.compile (the first validation)..."
    assert re.fullmatch(r"compiled: the first validation took \d+\.\d s", lines[3])
    assert len(lines) == 4  # once each: later iterations run compiled code


def test_a_finished_run_is_said_by_the_launcher_from_its_newest_checkpoint(tmp_path):
    from distengine.checkpoint.disk import file_checksum

    folder = RunFolder(tmp_path)
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    job = {"checkpoint": {"resume": "auto"}, "task": {"script": None, "entrypoint": None}}
    for iteration, epoch in ((66, 3), (88, 4)):
        trainer = {"iteration": iteration, "epoch": epoch, "epoch_length": 22}
        torch.save({"trainer": {"__per_rank__": [trainer] * 2}}, checkpoints / f"c_{epoch}.pt")
        crc = file_checksum(checkpoints / f"c_{epoch}.pt")  # the launcher names intact files only
        meta = {"crc32": crc, "iteration": iteration, "run_id": "r"}
        (checkpoints / f".c_{epoch}.pt.meta.json").write_text(json.dumps(meta))
        job["trainer"] = {"max_epochs": 4}
        said = finished_note(folder, job, "r")
        if iteration == 66:
            assert said is None  # 3 of 4 epochs: the ranks go on
    assert said == (
        f"the run in {tmp_path} already finished 4 epochs (its newest checkpoint "
        f"{checkpoints}/c_4.pt holds iteration 88): the ranks only validate it; a larger "
        "trainer.max_epochs trains on"
    )
    job["trainer"] = {"max_epochs": 5}
    assert finished_note(folder, job, "r") is None


def test_job_logs_know_which_ranks_finished(tmp_path):
    logs = JobLogs(tmp_path, lambda attempt, folder: None)
    assert logs.finished_pids() == set()
    logs.attempts.append(attempt(tmp_path / "attempt_0"))
    (tmp_path / "attempt_0" / "1" / "finished").write_text("4242")
    assert logs.finished_pids() == {4242}
