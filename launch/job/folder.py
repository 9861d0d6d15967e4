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


def world_size_problem(saved: int, now: int, global_batch: Any) -> str | None:
    """Why a run saved on ``saved`` ranks cannot resume on ``now``, or None when it can.

    The data position is kept in global samples (iterations of the global
    batch ``data.batch_size``), so any number of ranks that divides the global
    batch continues the same sample sequence; another one would change it, and
    so would a run whose ranks did not divide it (an older launcher trained
    64 on 3 ranks as 63: it continues on 3 ranks only). The same rule as a
    pass's layout in the library (:func:`distengine.engine.resume.layout_problem`).
    """
    if saved == now or global_batch is None:
        return None
    from distengine.distributed.shards import global_batch_problem
    from distengine.engine.resume import layout_problem

    batch = int(global_batch)
    problem = global_batch_problem(batch, now)
    if problem:
        return (
            f"world size {saved} in the checkpoint, {now} now: data.batch_size={batch} (the "
            f"global batch) {problem}"
        )

    def layout(world: int) -> dict[str, Any]:
        return {"world": world, "batch": batch // world, "workers": 0, "iterable": False}

    return layout_problem(layout(saved), layout(now))


class FolderBusy(ConfigError):
    """Another live job holds the run folder."""


def describe_os_error(error: OSError, path: Path | str | None = None, doing: str = "write") -> str:
    """``cannot write <path>: [ENOSPC] No space left on device`` (the errno by its name)."""
    name = errno.errorcode.get(error.errno or 0, "error")
    where = path if path is not None else error.filename
    target = f" {where}" if where is not None else ""
    return f"cannot {doing}{target}: [{name}] {error.strerror or error}"


def os_error(path: Path, error: OSError) -> ConfigError:
    """A one-line error naming the path and the errno (``ENOSPC``, ``EROFS``, ``EACCES``)."""
    return ConfigError(describe_os_error(error, path))


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


#: How long a busy folder's holder may take to say who it is (its lock file is being written).
HOLDER_WAIT_S = 1.0


def _describe(holder: dict[str, Any] | None) -> str:
    """``pid 1234 on host1, started 2024-05-01 18:00:34``; what is missing is not made up."""
    if not holder or not all(holder.get(k) is not None for k in ("pid", "host", "started")):
        return "it has not written who it is yet"
    try:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder["started"])))
    except (TypeError, ValueError, OverflowError):
        return "it has not written who it is yet"
    return f"pid {holder['pid']} on {holder['host']}, started {started}"


class RunFolder:
    """The run folder of one job; ``acquire`` it before writing anything into it.

    Example::

        folder = RunFolder(Path("outputs/exp1"))
        folder.acquire(command="python -m launch ...")   # FolderBusy if another job holds it
        ...
        folder.release()
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).absolute()  # every message names it whole
        self.lock_path = self.path / LOCK_FILE
        self.job_id = uuid.uuid4().hex
        self._fd: int | None = None

    def holder(self) -> dict[str, Any] | None:
        """Who holds (or last held without releasing) the folder, from the lock file."""
        try:
            text = self.lock_path.read_text()
        except OSError:
            return None
        try:  # the record comes first; a longer old one's tail may follow for a moment
            found = json.JSONDecoder().raw_decode(text.lstrip())[0] if text.strip() else None
        except json.JSONDecodeError:
            return None
        return found if isinstance(found, dict) else None

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
            holder = self._holder_when_written()
            raise FolderBusy(
                f"the run folder {self.path} is in use by another job ({_describe(holder)}): "
                "wait for it to end, or choose another hydra.run.dir"
            ) from None

    def _holder_when_written(self) -> dict[str, Any] | None:
        """The live holder's record; it may be writing it right now, so wait a little."""
        deadline = time.monotonic() + HOLDER_WAIT_S
        while True:
            holder = self.holder()
            if (holder and holder.get("pid") is not None) or time.monotonic() > deadline:
                return holder
            time.sleep(0.05)

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
        record = json.dumps(me).encode()
        try:  # never empty while held: the new record over the old, then cut to its length
            os.pwrite(fd, record.ljust(len(record) + 1, b"\n"), 0)
            os.ftruncate(fd, len(record) + 1)
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
        if run.get("world_size") is not None:
            problem = world_size_problem(run["world_size"], world_size, batch)
            differences += [problem] if problem else []
        seed = job["trainer"]["seed"]
        if run.get("seed", seed) != seed:
            differences.append(
                f"trainer.seed changed ({run['seed']!r} in the run, {seed!r} now: it orders "
                "the samples)"
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
            "seed": job["trainer"]["seed"],
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
