"""What PyTorch-Ignite's ``idist`` says about the distributed configuration.

``model_name()``, ``show_config()``, ``hostname()``, ``available_backends()``
and the ``has_*_support`` flags, with Ignite's names; ``sync()`` is kept for
code that calls it (distengine reads the process group every time, so there
is nothing to synchronise).

Example::

    import distengine.distributed as idist

    idist.show_config()          # logs configuration, backend, device, ranks and nodes
    idist.model_name()           # "native-dist" with a process group, else "serial"
"""

from __future__ import annotations

import socket

import torch.distributed as dist

from distengine.distributed.env import (
    backend,
    device,
    get_local_rank,
    get_nnodes,
    get_node_rank,
    get_nproc_per_node,
    get_rank,
    get_world_size,
    is_distributed,
)

__all__ = [
    "available_backends",
    "has_hvd_support",
    "has_native_dist_support",
    "has_xla_support",
    "hostname",
    "model_name",
    "show_config",
    "sync",
]

#: torch.distributed is available (always on Linux builds of torch).
has_native_dist_support: bool = dist.is_available()
#: distengine runs no XLA (TPU) configuration.
has_xla_support: bool = False
#: distengine runs no Horovod configuration.
has_hvd_support: bool = False


def available_backends() -> tuple[str, ...]:
    """The process-group backends this torch build has, among those distengine uses."""
    if not has_native_dist_support:
        return ()
    found = [("nccl", dist.is_nccl_available()), ("gloo", dist.is_gloo_available())]
    return tuple(name for name, available in found if available)


def model_name() -> str:
    """``"native-dist"`` with a torch.distributed process group, else ``"serial"``."""
    return "native-dist" if is_distributed() else "serial"


def hostname() -> str:
    """This machine's host name."""
    return socket.gethostname()


def sync(temporary: bool = False) -> None:
    """Nothing to do: rank, world size and backend are read from the process group each time."""


def show_config() -> None:
    """Log the distributed configuration (at INFO, on rank 0, as Ignite's ``show_config``)."""
    from distengine.handlers.logging import setup_logger

    logger = setup_logger("distengine.distributed")
    lines = {
        "distributed configuration": model_name(),
        "backend": backend(),
        "device": device().type,
        "hostname": hostname(),
        "world size": get_world_size(),
        "rank": get_rank(),
        "local rank": get_local_rank(),
        "num processes per_node": get_nproc_per_node(),
        "num nodes": get_nnodes(),
        "node rank": get_node_rank(),
    }
    for name, value in lines.items():
        logger.info(f"{name}: {value}")
