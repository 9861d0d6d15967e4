"""A run folder belongs to one job at a time: its lock, its run identity, its stop record.

``<run_dir>/.job.lock`` is held (``flock``) for the job's whole life and says
who holds it; a second launch into the folder is refused naming the holder.
The kernel drops the lock when its holder dies, so a lock left by a killed
job never blocks; the file it left is reported as stale. On a clean end the
file is emptied, never deleted (deleting a lock file lets two jobs lock two
different files).

``<run_dir>/run.json`` names the run (its ``run_id``, the lineage that its
checkpoints carry) and the config that a resume must match.
``<run_dir>/stop.json`` is written by the recipe's rank 0 when it stops on a
signal; the launcher reads it to say what really happened.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from launch.config.errors import ConfigError

LOCK_FILE = ".job.lock"
RUN_FILE = "run.json"
STOP_FILE = "stop.json"

#: What a run leaves beside its checkpoints: kept with them when another run takes the folder.
HISTORY = (RUN_FILE, "config.yaml", "metrics.json", "tb")

#: Config groups that change what a checkpoint means; a resume with others is refused.
COMPARED = ("model", "data", "optim")


class FolderBusy(ConfigError):
    """Another live job holds the run folder."""


def os_error(path: Path, error: OSError) -> ConfigError:
    """A one-line error naming the path and the errno (``ENOSPC``, ``EROFS``, ``EACCES``)."""
    name = errno.errorcode.get(error.errno or 0, "error")
    return ConfigError(f"cannot write {path}: [{name}] {error.strerror or error}")


def write_text(path: Path, text: str) -> None:
    """Write a small file atomically (temporary file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise os_error(path, error) from None


def _describe(holder: dict[str, Any]) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {started}"


class RunFolder:
    """The run folder of one job; ``acquire`` it before writing anything into it.

    Example::

        folder = RunFolder(Path("outputs/exp1"))
        folder.acquire(command="python -m launch ...")   # FolderBusy if another job holds it
        ...
        folder.release()
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.lock_path = self.path / LOCK_FILE
        self.job_id = uuid.uuid4().hex
        self._fd: int | None = None

    def holder(self) -> dict[str, Any] | None:
        """Who holds (or last held without releasing) the folder, from the lock file."""
        try:
            text = self.lock_path.read_text()
        except OSError:
            return None
        try:
            return json.loads(text) if text.strip() else None
        except json.JSONDecodeError:
            return None

    def check_free(self) -> None:
        """Raise FolderBusy if a live job holds the folder (creates nothing)."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR)
        except OSError:
            return  # no lock file (or unreadable: acquire() reports it)
        try:
            self._try_lock(fd)
        finally:
            os.close(fd)  # closing drops the probe's lock

    def _try_lock(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.holder() or {}
            raise FolderBusy(
                f"the run folder {self.path} is in use by another job ({_describe(holder)}): "
                "wait for it to end, or choose another hydra.run.dir"
            ) from None

    def acquire(self, command: str) -> str | None:
        """Create and lock the folder; return a note when a dead job left its lock behind."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise os_error(self.lock_path if self.path.is_dir() else self.path, error) from None
        try:
            self._try_lock(fd)
        except BaseException:
            os.close(fd)
            raise
        stale = self.holder()
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "job_id": self.job_id,
            "command": command,
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
            os.fsync(fd)
        except OSError as error:
            os.close(fd)
            raise os_error(self.lock_path, error) from None
        self._fd = fd
        if stale:
            return (
                f"note: the previous job in {self.path} ({_describe(stale)}) ended without "
                "releasing it (killed?); this job takes the folder over"
            )
        return None

    def release(self) -> None:
        """Empty the lock file (a clean end) and drop the lock."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass  # the lock itself still goes with the descriptor
        os.close(self._fd)
        self._fd = None

    # the run's identity ---------------------------------------------------------------------

    def read_run(self) -> dict[str, Any] | None:
        """``run.json``: the run's id, world size and compared config, or None."""
        try:
            return json.loads((self.path / RUN_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def has_checkpoints(self) -> bool:
        """Whether ``checkpoints/`` holds a checkpoint file or a sharded checkpoint folder."""
        folder = self.path / "checkpoints"
        return folder.is_dir() and any(
            p.suffix == ".pt" or (p / "manifest.json").is_file() for p in folder.iterdir()
        )

    def check_resume(self, job: dict[str, Any], world_size: int) -> None:
        """Refuse (before anything is written) a resume whose config or world size differs."""
        run = self.read_run()
        if job["checkpoint"]["resume"] != "auto" or run is None or not self.has_checkpoints():
            return
        differences = []
        batch = (job.get("data") or {}).get("batch_size")
        if run.get("world_size") not in (None, world_size) and (
            batch is None or batch % world_size
        ):
            differences.append(
                f"world size {run['world_size']} in the run, {world_size} now, which does not "
                f"divide data.batch_size={batch} (the global batch): the run could not continue "
                "the same samples"
            )
        for group in COMPARED:
            saved, now = run.get("config", {}).get(group) or {}, job.get(group) or {}
            for key in sorted(set(saved) | set(now)):
                was, new = saved.get(key), now.get(key)
                if was != new:
                    differences.append(f"{group}.{key} changed ({was!r} in the run, {new!r} now)")
        if differences:
            raise ConfigError(
                f"cannot resume the run in {self.path}: {'; '.join(differences)}. Use another "
                "hydra.run.dir, or checkpoint.resume=never to start a new run in this folder"
            )

    def start_run(self, job: dict[str, Any], world_size: int) -> str:
        """The run id: the folder's own with ``resume=auto``, else a new one (a new lineage).

        ``run.json`` is (re)written unless it describes checkpoints this job resumes from.
        A new run in the folder of another (``checkpoint.resume=never``) first
        keeps that run's history (see :meth:`keep_history`).
        """
        run = self.read_run()
        if job["checkpoint"]["resume"] == "auto" and run and run.get("run_id"):
            if self.has_checkpoints():
                return str(run["run_id"])
            run_id = str(run["run_id"])
        else:
            run_id = uuid.uuid4().hex
            if run is not None:
                self.keep_history(run.get("run_id"))
        record = {
            "run_id": run_id,
            "created": time.time(),
            "world_size": world_size,
            "config": {group: job.get(group) for group in COMPARED},
        }
        write_text(self.path / RUN_FILE, json.dumps(record, indent=2))
        return run_id

    def newest_checkpoint(self, run_id: str | None) -> tuple[Path, int] | None:
        """This run's newest intact checkpoint and its iteration, as the ranks would find it.

        Reads sidecars (``.<name>.meta.json``) and sharded folders'
        ``manifest.json``; a file without a usable sidecar is opened to read
        its run (:func:`~distengine.checkpoint.list_checkpoints`). Each
        candidate, newest first, is checked against its CRC-32 or manifest:
        a damaged one (which the ranks will set aside) is never named. None
        when no intact checkpoint of ``run_id`` is there (or none can be read
        here); what is damaged is left to the ranks to report.
        """
        from distengine.checkpoint import (
            CheckpointEnvironmentError,
            CorruptCheckpointError,
            list_checkpoints,
            verify_checkpoint,
        )

        if not run_id:
            return None
        try:
            listed = list_checkpoints(self.path / "checkpoints", "cpu", on_corrupt=_quiet)
        except (CheckpointEnvironmentError, OSError):
            return None  # the ranks will say what cannot be read
        found = [
            (int(meta.get("iteration", -1)), path)
            for path, meta in listed
            if meta.get("run_id") == run_id and path.exists()
        ]
        for iteration, checkpoint in sorted(found, reverse=True):
            try:
                verify_checkpoint(checkpoint)
            except (CorruptCheckpointError, OSError):
                continue
            return checkpoint, iteration
        return None

    def keep_history(self, run_id: Any) -> list[str]:
        """Move an earlier run's records out of the new run's way; the names moved.

        ``run.json``, ``config.yaml``, ``metrics.json`` and ``tb/`` go to
        ``checkpoints/previous/<its run id>/``, where its checkpoints will be
        moved (by the ranks, who say so, naming these too); nothing there is
        replaced. Without checkpoints to name them, a line here says where
        they went.
        """
        from launch.recipe.aside import free_name
        from launch.recipe.lineage import owner_folder

        into = owner_folder(self.path / "checkpoints", run_id)
        moved = []
        try:
            for name in HISTORY:
                source = self.path / name
                if source.exists():
                    into.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(source), str(into / free_name(into, name)))
                    moved.append(name)
        except OSError as error:
            raise os_error(into, error) from None
        finally:
            if moved and not self.has_checkpoints():
                print(f"the history of the previous run ({', '.join(moved)}) moved to {into}")
        return moved

    # the stop record ------------------------------------------------------------------------

    def clear_stop(self) -> None:
        try:
            (self.path / STOP_FILE).unlink(missing_ok=True)
        except OSError as error:
            raise os_error(self.path / STOP_FILE, error) from None

    def read_stop(self) -> dict[str, Any] | None:
        """What the ranks wrote when they stopped on a signal (see the recipe), or None."""
        try:
            return json.loads((self.path / STOP_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return None


def _quiet(path: Path, reason: str) -> None:
    """Damaged checkpoints are the ranks' to report (and move aside), not the launcher's."""
