"""Creating and destroying the default process group from the launcher's environment."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from distengine.distributed.env import (
    env_value,
    get_local_rank,
    get_world_size,
    is_distributed,
    under_slurm,
)

BACKENDS = ("auto", "gloo", "nccl")


def resolve_backend(name: str) -> str:
    """``auto`` is ``nccl`` where this rank has a GPU, else ``gloo``; others are checked."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "auto":
        return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    if name == "nccl" and not torch.cuda.is_available():
        raise ValueError("backend 'nccl' needs CUDA GPUs and none is available; use 'gloo'")
    return name


def _first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list such as ``node[03-05,9],gpu1``."""
    match = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist)
    if match is None:
        raise ValueError(f"cannot read the SLURM node list {nodelist!r}")
    prefix, _, ranges = match.groups()
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def _export_slurm_env() -> None:
    """Give torch's ``env://`` rendezvous the variables that SLURM names differently.

    Every value is read before any is exported: once ``RANK`` is set the
    process no longer counts as started by srun (see ``under_slurm``).
    """
    values = {
        "RANK": env_value("rank"),
        "LOCAL_RANK": env_value("local_rank"),
        "WORLD_SIZE": env_value("world_size"),
    }
    if "SLURM_NTASKS_PER_NODE" in os.environ:
        values["LOCAL_WORLD_SIZE"] = env_value("nproc_per_node")
    if "SLURM_NODEID" in os.environ:
        values["GROUP_RANK"] = env_value("node_rank")
    if "MASTER_ADDR" not in os.environ:
        values["MASTER_ADDR"] = _first_slurm_host(os.environ.get("SLURM_JOB_NODELIST", ""))
    values["MASTER_PORT"] = 15000 + int(os.environ.get("SLURM_JOB_ID", 0)) % 20000
    for name, value in values.items():
        os.environ.setdefault(name, str(value))


#: The launcher puts ``dist.timeout_s`` here, so scripts' ``initialize()`` honour it.
TIMEOUT_ENV = "DISTENGINE_TIMEOUT_S"


def _timeout(timeout: float | timedelta | None) -> timedelta | None:
    if timeout is None and os.environ.get(TIMEOUT_ENV):
        timeout = float(os.environ[TIMEOUT_ENV])
    if isinstance(timeout, (int, float)):
        return timedelta(seconds=timeout)
    return timeout


def initialize(backend: str = "auto", timeout: float | timedelta | None = None, **kwargs) -> None:
    """Make the default process group from the launcher's environment; safe everywhere.

    A no-op when a process group already exists (a user's own is respected)
    or when the environment names no other ranks (world size 1). ``timeout``
    (seconds) bounds every collective; without it, ``DISTENGINE_TIMEOUT_S``
    (set by ``python -m launch`` from ``dist.timeout_s``) does, else torch's
    default. With ``nccl`` the CUDA device is set from ``LOCAL_RANK`` first.

    Example::

        import distengine.distributed as idist
        idist.initialize()        # the one line a DDP script needs
    """
    if is_distributed() or get_world_size() <= 1:
        return
    if under_slurm():
        _export_slurm_env()
    name = resolve_backend(backend)
    timeout = _timeout(timeout)
    if name == "nccl":
        torch.cuda.set_device(get_local_rank() % torch.cuda.device_count())
        kwargs.setdefault("device_id", torch.device("cuda", torch.cuda.current_device()))
    dist.init_process_group(name, timeout=timeout, **kwargs)


def finalize() -> None:
    """Destroy the default process group if there is one."""
    if is_distributed():
        dist.destroy_process_group()


def new_group(ranks: list[int], **kwargs: Any) -> Any:
    """A process group of ``ranks`` (``torch.distributed.new_group``); None without a process group.

    Every rank must call it, also those not in ``ranks``.

    Example::

        evens = idist.new_group([0, 2])
    """
    if not is_distributed():
        return None
    return dist.new_group(ranks, **kwargs)
