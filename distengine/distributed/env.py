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


def device() -> torch.device:
    """Where this rank computes: ``cuda:<local rank>`` when it has a GPU, else the CPU.

    With a ``gloo`` process group the CPU is used even where GPUs exist.
    """
    if torch.cuda.is_available() and backend() != "gloo":
        return torch.device("cuda", get_local_rank() % torch.cuda.device_count())
    return torch.device("cpu")
