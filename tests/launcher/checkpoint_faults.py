"""The default recipe with faults on its checkpoint path, for the launcher's fault matrix.

``task.entrypoint=tests.launcher.checkpoint_faults:train`` runs the recipe on every rank; the
environment variable ``FAULTS`` (comma-separated ``kind@N``) says what goes wrong. ``N`` is an
iteration, or with a ``+`` that many iterations after the one the run resumed from. Each
fault happens once per run folder (a marker file records it), so a restart or a rerun of the
same command continues the run, as a user's would:

- ``stop@N``: at iteration N rank 0 sends SIGTERM to the launcher (a preemption);
- ``slow@N``: rank 0's write of the checkpoint of iteration N takes ``dist.timeout_s`` + 1.5 s
  (longer than a collective may wait; the other ranks wait for it);
- ``corrupt@N``: at iteration N rank 0 cuts the newest checkpoint short (a damaged disk);
- ``killsave@N``: rank 0 is killed by SIGKILL in the middle of writing the checkpoint of
  iteration N (its temporary file is left half written);
- ``full@N``: rank 0's first checkpoint write from iteration N on may write no more than
  4 KiB per file (the kernel's RLIMIT_FSIZE: the write fails with EFBIG, as on a full disk);
- ``nommap``: rank 0 cannot memory-map a checkpoint (the error torch raises when the address
  space is exhausted) while it resumes.
"""

from __future__ import annotations

import os
import resource
import signal
import time
from pathlib import Path
from typing import Any

import torch

import distengine.distributed as idist
from distengine.checkpoint import disk

#: Extra time per iteration: a stop signal is acted on well before the run's last iteration.
ITERATION_S = 0.02


def _faults(resumed_at: int) -> dict[str, int]:
    """``FAULTS`` as {kind: iteration}, offsets (``+K``) counted from ``resumed_at``."""
    found = {}
    for item in filter(None, os.environ.get("FAULTS", "").split(",")):
        kind, _, at = item.partition("@")
        found[kind] = resumed_at + int(at[1:]) if at.startswith("+") else int(at or 0)
    return found


def _once(cfg: Any, kind: str) -> bool:
    """True the first time ``kind`` is asked for in this run folder (rank 0 records it)."""
    marker = Path(cfg.run_dir) / f"fault-{kind}"
    if marker.exists():
        return False
    marker.write_text("done")
    return True


def _iteration_of(path: Path) -> int:
    return int(path.name.removesuffix(".pt").rsplit("_", 1)[-1])


def _faulty_writes(cfg: Any, faults: dict[str, int]) -> None:
    """Rank 0's DiskSaver writes, slowed, cut by SIGKILL or refused by the kernel."""
    write = disk.DiskSaver._write

    def faulty(self, checkpoint, path, metadata):
        at = _iteration_of(path)
        if "slow" in faults and at == faults["slow"] and _once(cfg, "slow"):
            time.sleep(float(cfg.dist.timeout_s) + 1.5)
        if "killsave" in faults and at == faults["killsave"] and _once(cfg, "killsave"):
            _die_mid_write()
        if "full" in faults and at >= faults["full"] and _once(cfg, "full"):
            limits = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limits[1]))
            try:
                return write(self, checkpoint, path, metadata)
            finally:
                resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        return write(self, checkpoint, path, metadata)

    disk.DiskSaver._write = faulty


def _die_mid_write() -> None:
    """SIGKILL this process once torch.save has written part of the temporary file."""
    real = disk._HashingWriter.write
    written = [0]

    def write(self, data):
        result = real(self, data)
        written[0] += len(data)
        if written[0] > 2048:
            self.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    disk._HashingWriter.write = write


def _no_mmap() -> None:
    """torch's mapping of checkpoint files fails as it does without address space left."""
    real = torch.UntypedStorage.from_file

    def from_file(filename, *args, **kwargs):
        if str(filename).endswith(".pt"):
            raise RuntimeError(
                f"unable to mmap {os.path.getsize(filename)} bytes from file <{filename}>: "
                "Cannot allocate memory (12)"
            )
        return real(filename, *args, **kwargs)

    torch.UntypedStorage.from_file = from_file


def train(cfg: Any) -> None:
    """The default recipe with the faults ``FAULTS`` names (see the module)."""
    import launch.recipe.train as recipe
    from distengine.engine import Events
    from tests.launcher.entry_points import launcher_pid

    faults: dict[str, int] = {}
    if idist.get_rank() == 0 and "nommap" in os.environ.get("FAULTS", ""):
        _no_mmap()

    def started(engine):
        faults.update(_faults(engine.state.iteration))  # after the resume
        if idist.get_rank() == 0:
            _faulty_writes(cfg, faults)

    def fault(engine):
        time.sleep(ITERATION_S)
        if idist.get_rank() != 0:
            return
        iteration = engine.state.iteration
        if faults.get("stop") == iteration and _once(cfg, f"stop{iteration}"):
            os.kill(launcher_pid(), signal.SIGTERM)
        if faults.get("corrupt") == iteration and _once(cfg, "corrupt"):
            newest = max(Path(cfg.run_dir, "checkpoints").glob("*.pt"), key=_iteration_of)
            newest.write_bytes(newest.read_bytes()[:1000])

    make_trainer = recipe.create_supervised_trainer

    def faulty_trainer(*args, **kwargs):
        trainer = make_trainer(*args, **kwargs)
        trainer.add_event_handler(Events.STARTED, started)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, fault)
        return trainer

    recipe.create_supervised_trainer = faulty_trainer
    recipe.train(cfg)
