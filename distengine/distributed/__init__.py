"""Rank-aware helpers over torch.distributed; import as ``idist``.

Every function works with one process and no process group (world size 1),
and asking for the rank, world size or device never performs a collective.

Example::

    import distengine.distributed as idist

    idist.initialize()                                  # from torchrun's environment
    model = idist.auto_model(Net())
    loader = idist.auto_dataloader(dataset, batch_size=256, shuffle=True)
    mean = idist.all_reduce(torch.tensor(1.0), op="mean")   # in place, as torch does
    if idist.any_rank(stop_requested):                       # every rank gets the same answer
        ...

PyTorch-Ignite's launcher and configuration names are here too: ``Parallel``,
``spawn``, ``show_config``, ``model_name``, ``hostname``, ``available_backends``,
``has_native_dist_support``, ``one_rank_only``, ``new_group``, ``set_local_rank``,
``sync``.
"""

from distengine.distributed.auto import auto_dataloader, auto_model, auto_optim
from distengine.distributed.collectives import all_gather, all_reduce, barrier, broadcast
from distengine.distributed.consensus import agree, all_ranks, any_rank, decide
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
    set_local_rank,
)
from distengine.distributed.group import finalize, initialize, new_group
from distengine.distributed.info import (
    available_backends,
    has_hvd_support,
    has_native_dist_support,
    has_xla_support,
    hostname,
    model_name,
    show_config,
    sync,
)
from distengine.distributed.parallel import Parallel, spawn
from distengine.distributed.utils import manual_seed, one_rank_first, one_rank_only, rank_zero_only

__all__ = [
    "Parallel",
    "agree",
    "all_gather",
    "all_ranks",
    "all_reduce",
    "any_rank",
    "auto_dataloader",
    "auto_model",
    "auto_optim",
    "available_backends",
    "backend",
    "barrier",
    "broadcast",
    "decide",
    "device",
    "finalize",
    "get_local_rank",
    "get_nnodes",
    "get_node_rank",
    "get_nproc_per_node",
    "get_rank",
    "get_world_size",
    "has_hvd_support",
    "has_native_dist_support",
    "has_xla_support",
    "hostname",
    "initialize",
    "is_distributed",
    "manual_seed",
    "model_name",
    "new_group",
    "one_rank_first",
    "one_rank_only",
    "rank_zero_only",
    "set_local_rank",
    "show_config",
    "spawn",
    "sync",
]
