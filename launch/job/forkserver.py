"""Ranks forked from a server that imported torch once, before any CUDA initialisation.

A rank forked from the launcher cannot use CUDA (the launcher initialised it
to count the GPUs); a spawned rank imports torch anew, which takes seconds
per rank on a GPU machine. With ``dist.start_method=forkserver`` (``auto``
where there are GPUs) the ranks are forked from Python's forkserver, a fresh
interpreter that imported :data:`PRELOAD` and never touched CUDA. The
launcher starts that server first thing (:func:`start_early`, before it
composes the config and its checks import torch), so the imports run side by side.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
from pathlib import Path

#: What every rank imports, loaded once in the server (none of it initialises CUDA).
PRELOAD = [
    "torch",
    "torch.distributed.elastic.multiprocessing",
    "distengine.engine",
    "distengine.distributed",
    "distengine.metrics",
    "distengine.handlers",
    "launch.rank",
    "launch.recipe.train",
]


def cuda_may_be_visible() -> bool:
    """A guess without importing torch: an NVIDIA device node and no ``CUDA_VISIBLE_DEVICES``
    that hides every GPU. torch decides later; a wrong guess only starts an unused server."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return any(Path("/dev").glob("nvidia[0-9]*"))


def wanted(start_method: str) -> bool:
    """Whether a job's ranks will (probably) be forked from the server."""
    return start_method == "forkserver" or (start_method == "auto" and cuda_may_be_visible())


def ensure_running() -> None:
    """Start the server with :data:`PRELOAD` (a no-op once it runs); it returns at once."""
    multiprocessing.set_forkserver_preload(PRELOAD)
    multiprocessing.forkserver.ensure_running()


def start_early(start_method: str) -> None:
    """Start the server now when the job will likely want it, so its imports overlap ours.

    The launcher calls it first thing, with ``dist.start_method`` as the command line
    gives it (``auto`` when it does not): a config file that sets another only costs an
    unused server, which ends with the launcher.
    """
    if wanted(start_method):
        ensure_running()


def server_pid() -> int | None:
    """The running server's pid (its children are this launcher's ranks), or None."""
    return getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None)
