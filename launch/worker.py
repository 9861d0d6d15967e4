"""What every rank runs: read the resolved config, join the process group, run the task."""

from __future__ import annotations

import ctypes
import os
import runpy
import signal
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this rank when its parent (the agent) dies, even by SIGKILL."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the agent's own cleanup still applies
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def reset_signals() -> None:
    """Forked ranks inherit the agent's signal handlers; a rank starts with the defaults."""
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def set_threads() -> None:
    """Apply OMP_NUM_THREADS to torch (a forked rank inherits the launcher's thread pool)."""
    import torch

    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads > 0:
        torch.set_num_threads(threads)


def run_task(cfg: Any) -> Any:
    """Initialise the process group, seed, and run the entrypoint or the default recipe."""
    import distengine.distributed as idist
    from launch.checks import load_entrypoint

    # collectives time out after the hang watchdog (dist.timeout_s) has had its say
    idist.initialize(backend=cfg.dist.backend, timeout=float(cfg.dist.timeout_s) + 30.0)
    try:
        idist.manual_seed(int(cfg.trainer.seed))
        if cfg.task.entrypoint:
            return load_entrypoint(cfg.task.entrypoint)(cfg)
        from launch.recipe.train import train

        return train(cfg)
    finally:
        idist.finalize()


def run_script(script: str, *args: str) -> None:
    """Run a user's script as its ``__main__``, as ``python script.py args`` would.

    Used with forked ranks, which share the launcher's already imported torch;
    the script sees torchrun's environment and makes its own process group.
    """
    die_with_parent()
    reset_signals()
    set_threads()
    sys.argv = [script, *args]
    sys.path.insert(0, str(Path(script).resolve().parent))
    runpy.run_path(script, run_name="__main__")


def main(config_path: str) -> Any:
    """A rank's entry point (a function, so forked ranks need not import torch again)."""
    die_with_parent()
    reset_signals()
    set_threads()
    cfg = OmegaConf.load(config_path)
    sys.path.insert(0, str(Path.cwd()))  # entrypoints in the user's project import as usual
    return run_task(cfg)
