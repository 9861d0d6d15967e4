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
)
from distengine.distributed.group import finalize, initialize
from distengine.distributed.utils import manual_seed, one_rank_first, rank_zero_only

__all__ = [
    "agree",
    "all_gather",
    "all_ranks",
    "any_rank",
    "all_reduce",
    "auto_dataloader",
    "auto_model",
    "auto_optim",
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
    "initialize",
    "is_distributed",
    "manual_seed",
    "one_rank_first",
    "rank_zero_only",
]
