"""Ranks forked from a server that imported torch once, before any CUDA initialisation.

A rank forked from the launcher cannot use CUDA (the launcher initialised it
to count the GPUs); a spawned rank imports torch anew, which takes seconds
per rank on a GPU machine. With ``dist.start_method=forkserver`` (``auto``
where there are GPUs) the ranks are forked from Python's forkserver, a fresh
interpreter that imported :data:`PRELOAD` and never touched CUDA. The
launcher starts that server as early as it can (:func:`start_early`, before
its own checks import torch), so the two imports run side by side.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def wanted(dist: Mapping[str, Any]) -> bool:
    """Whether this job's ranks will (probably) be forked from the server."""
    method = dist["start_method"]
    return method == "forkserver" or (method == "auto" and cuda_may_be_visible())


def ensure_running() -> None:
    """Start the server with :data:`PRELOAD` (a no-op once it runs); it returns at once."""
    multiprocessing.set_forkserver_preload(PRELOAD)
    multiprocessing.forkserver.ensure_running()


def start_early(dist: Mapping[str, Any]) -> None:
    """Start the server now when the job will likely want it, so its imports overlap ours."""
    if wanted(dist):
        ensure_running()


def server_pid() -> int | None:
    """The running server's pid (its children are this launcher's ranks), or None."""
    return getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None)
