"""The one entry every rank runs, for the recipe, a script and an entrypoint.

Started by the launcher's agent (:func:`main`, a forked function or
``python -m launch.rank``) or in place under torchrun or srun
(:func:`run_in_place`). Either way :func:`run` runs the task: a script as
its ``__main__`` (it makes its own process group), an entrypoint or the
recipe after joining the process group with rank 0's config. When the task
returns, the rank marks itself finished and leaves the process group, so
ranks still waiting for it fail now (or, when a DDP model keeps the group's
connections open, at their timeout), and the failure summary names it.
"""

from __future__ import annotations

import gc
import os
import runpy
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from launch import exit_codes
from launch.job.reaper import record_rank
from launch.rank import process, store
from launch.rank.alone import collectives, warn_if_alone

#: Seconds the recipe's collectives wait beyond ``dist.timeout_s`` (its watchdog fires first).
RECIPE_MARGIN_S = 30.0


def main(config_path: str) -> None:
    """A rank started by the launcher's agent: prepare the process, then :func:`run`."""
    process.die_with_parent()
    process.leave_terminal_group()
    record_rank()  # the launcher ends this rank's process group after it
    process.reset_signals()
    process.line_buffered()
    process.set_threads()
    process.dump_stacks_on_sigterm()
    cfg = OmegaConf.load(config_path)
    store.hold(float(cfg.dist.timeout_s))  # rank 0: the group's store, on one address only
    run(cfg)


def run_in_place(cfg: Any) -> None:
    """This process is already one rank (torchrun or srun started it): run the task here."""
    run(cfg)


def run(cfg: Any) -> None:
    """Run the task; mark the rank finished when it returns; leave the process group.

    What the task returns is dropped, and its garbage collected, while the
    process group still exists: a DDP model freed after the group is gone
    destroys the group holding the GIL, which deadlocks with gloo's thread
    (torch's agent would also pickle a value returned from here: a model or a
    lambda failed the rank).
    """
    import distengine.distributed as idist
    from distengine.distributed.group import TIMEOUT_ENV

    os.environ.setdefault(TIMEOUT_ENV, str(float(cfg.dist.timeout_s)))  # scripts' initialize()
    sys.path.insert(0, str(Path.cwd()))  # entrypoints in the user's project import as usual
    try:
        _returning(cfg)
        gc.collect()
    except KeyboardInterrupt:
        idist.finalize()
        raise SystemExit(exit_codes.INTERRUPTED) from None
    except BaseException:
        idist.finalize()
        raise
    process.mark_finished()  # before leaving the group: the others may fail at once
    process.finished_signals()
    leave_group()


def _returning(cfg: Any) -> Any:
    """The task's result; ``sys.exit(0)`` inside it is a return (as for a script)."""
    try:
        if cfg.task.script:
            _run_script(cfg)
            warn_if_alone(cfg)
            return None
        return _run_task(cfg)
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise
    return None


def leave_group() -> None:
    """Leave the process group, so ranks still waiting for this one can fail now.

    Destroying the group closes its connections when nothing else holds it;
    a DDP model keeps them open until the process ends, and then the others
    fail at their collective timeout (or their watchdog) instead, which names
    this rank first (from its ``finished`` marker).
    """
    import distengine.distributed as idist

    idist.finalize()


def _run_script(cfg: Any) -> None:
    """Run a user's script as its ``__main__``, as ``python script.py args`` would."""
    script = str(cfg.task.script)
    sys.argv = [script, *map(str, cfg.task.args)]
    sys.path.insert(0, str(Path(script).resolve().parent))
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise


def _run_task(cfg: Any) -> Any:
    """Join the process group, take rank 0's config, seed, run the entrypoint or the recipe."""
    import distengine.distributed as idist
    from launch.config.targets import load_entrypoint
    from launch.rank.shared import shared_config

    timeout = float(cfg.dist.timeout_s) + (0.0 if cfg.task.entrypoint else RECIPE_MARGIN_S)
    idist.initialize(backend=cfg.dist.backend, timeout=timeout)
    cfg = shared_config(cfg)
    idist.manual_seed(int(cfg.trainer.seed))
    if cfg.task.entrypoint:
        before = collectives()
        result = load_entrypoint(cfg.task.entrypoint)(cfg)
        warn_if_alone(cfg, before)
        return result
    from launch.recipe.train import train

    return train(cfg)
