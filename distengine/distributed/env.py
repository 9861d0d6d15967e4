"""Rank, world size and node layout, read from the process group or the environment.

Nothing here performs a collective or blocks: with a process group the values
come from it, otherwise from the variables torchrun sets (``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``GROUP_RANK``) or,
under ``srun`` without torchrun, SLURM's (``SLURM_PROCID``, ...). With none,
the process is rank 0 of 1.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

_TORCHRUN = {
    "rank": "RANK",
    "local_rank": "LOCAL_RANK",
    "world_size": "WORLD_SIZE",
    "nproc_per_node": "LOCAL_WORLD_SIZE",
    "node_rank": "GROUP_RANK",
}
_SLURM = {
    "rank": "SLURM_PROCID",
    "local_rank": "SLURM_LOCALID",
    "world_size": "SLURM_NTASKS",
    "nproc_per_node": "SLURM_NTASKS_PER_NODE",
    "node_rank": "SLURM_NODEID",
}
_DEFAULTS = {"rank": 0, "local_rank": 0, "world_size": 1, "nproc_per_node": 1, "node_rank": 0}


def is_distributed() -> bool:
    """Whether a default process group exists in this process."""
    return dist.is_available() and dist.is_initialized()


def under_slurm() -> bool:
    """Whether this process was started by ``srun`` and not by torchrun."""
    return (
        "SLURM_PROCID" in os.environ
        and "RANK" not in os.environ
        and ("SLURM_STEP_ID" in os.environ or "SLURM_JOB_ID" in os.environ)
    )


def env_value(key: str) -> int:
    """One of rank/local_rank/world_size/nproc_per_node/node_rank from the environment."""
    names = _SLURM if under_slurm() else _TORCHRUN
    raw = os.environ.get(names[key])
    if raw is None:
        return _DEFAULTS[key]
    if key == "nproc_per_node" and "(" in raw:  # SLURM writes "2(x3)" for 3 nodes of 2
        raw = raw.split("(")[0]
    try:
        return int(raw.split(",")[0])
    except ValueError:
        raise ValueError(f"environment variable {names[key]}={raw!r} is not an integer") from None


def get_rank() -> int:
    """This process's global rank (0 without a process group or launcher)."""
    return dist.get_rank() if is_distributed() else env_value("rank")


def get_world_size() -> int:
    """How many processes take part (1 without a process group or launcher)."""
    return dist.get_world_size() if is_distributed() else env_value("world_size")


def get_local_rank() -> int:
    """This process's rank on its node (picks its GPU)."""
    return env_value("local_rank")


def set_local_rank(index: int) -> None:
    """Tell distengine this process's local rank, for a process group made by hand
    (``LOCAL_RANK`` is set, as a launcher would).

    Example::

        idist.set_local_rank(local_rank)
        dist.init_process_group("nccl", ...)
    """
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ValueError(f"local rank must be a non-negative int, got {index!r}")
    os.environ["LOCAL_RANK"] = str(index)


def get_nproc_per_node() -> int:
    """Processes per node."""
    if "LOCAL_WORLD_SIZE" not in os.environ and not under_slurm():
        return get_world_size()
    return env_value("nproc_per_node")


def get_node_rank() -> int:
    """This node's index among the nodes of the job."""
    return env_value("node_rank")


def get_nnodes() -> int:
    """How many nodes the job spans."""
    return max(get_world_size() // max(get_nproc_per_node(), 1), 1)


def backend() -> str | None:
    """The process group's backend (``"gloo"``, ``"nccl"``), or None without one."""
    return dist.get_backend() if is_distributed() else None


def _bound_device() -> torch.device | None:
    """The CUDA device the default process group was bound to (``device_id=``), if any."""
    if not is_distributed():
        return None
    try:
        bound = dist.distributed_c10d._get_default_group().bound_device_id
    except (AttributeError, RuntimeError):
        return None
    return bound if bound is not None and bound.type == "cuda" else None


def device() -> torch.device:
    """Where this rank computes: its GPU when it has one, else the CPU.

    The one source of truth for "my device", also for collectives: the device
    the process group was bound to (``init_process_group(device_id=...)``, as
    :func:`~distengine.distributed.initialize` does), else
    ``cuda:<LOCAL_RANK % GPUs>``; the CPU without CUDA or with a ``gloo``
    process group (even where GPUs exist). It never sets or initialises CUDA.

    Example::

        model = Net().to(idist.device())
    """
    if not torch.cuda.is_available() or backend() == "gloo":
        return torch.device("cpu")
    bound = _bound_device()
    if bound is not None:
        return bound
    return torch.device("cuda", get_local_rank() % torch.cuda.device_count())


def comm_device() -> torch.device:
    """Where tensors must live for the process group's collectives: :func:`device` for nccl,
    else the CPU."""
    return device() if backend() == "nccl" else torch.device("cpu")
