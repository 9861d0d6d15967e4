"""Collectives that work the same with one process or many, on tensors and Python values.

Without a process group (or with world size 1) each returns its input. Tensor
results are new tensors; the input is left as it was.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
import torch.distributed as dist

from distengine.distributed.env import backend, get_world_size, is_distributed

_OPS = {
    "sum": dist.ReduceOp.SUM,
    "mean": dist.ReduceOp.SUM,  # summed, then divided: gloo has no AVG
    "min": dist.ReduceOp.MIN,
    "max": dist.ReduceOp.MAX,
    "product": dist.ReduceOp.PRODUCT,
}


def _active() -> bool:
    return is_distributed() and get_world_size() > 1


def comm_device() -> torch.device:
    """Where tensors must live for the process group's backend (CUDA for nccl)."""
    if backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _as_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, bool) or not isinstance(value, numbers.Number):
        raise TypeError(f"expected a tensor or a number, got {type(value).__name__}: {value!r}")
    dtype = torch.float64 if isinstance(value, float) else torch.int64
    return torch.tensor(value, dtype=dtype, device=comm_device())


def all_reduce(x: torch.Tensor | float | int, op: str = "sum") -> Any:
    """Reduce ``x`` over all ranks with ``op`` (sum, mean, min, max, product).

    Example::

        total = idist.all_reduce(torch.tensor([n_correct]))   # summed over ranks
        mean_loss = idist.all_reduce(loss.item(), op="mean")  # a float
    """
    if op not in _OPS:
        raise ValueError(f"op must be one of {sorted(_OPS)}, got {op!r}")
    if not _active():
        return x
    if not isinstance(x, torch.Tensor):
        result = all_reduce(_as_tensor(x), op)
        return result.item()
    work = x.detach().to(comm_device(), copy=True)
    if op == "mean" and not work.is_floating_point():
        work = work.double()
    dist.all_reduce(work, _OPS[op])
    if op == "mean":
        work /= get_world_size()
    return work.to(x.device)


def all_gather(x: Any) -> Any:
    """Every rank's ``x``: tensors concatenated on dim 0 (sizes may differ), else a list.

    Example::

        preds = idist.all_gather(local_preds)      # (sum of per-rank N, ...)
        names = idist.all_gather(socket.gethostname())
    """
    if not _active():
        return x if isinstance(x, torch.Tensor) else [x]
    if isinstance(x, torch.Tensor):
        return _all_gather_tensor(x)
    if isinstance(x, numbers.Number) and not isinstance(x, bool):
        return _all_gather_tensor(_as_tensor(x).reshape(1)).tolist()
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, x)
    return gathered


def _all_gather_tensor(x: torch.Tensor) -> torch.Tensor:
    device = comm_device()
    local = (x.reshape(1) if x.dim() == 0 else x).detach().to(device)
    size = torch.tensor([local.shape[0]], device=device)
    sizes = [torch.zeros_like(size) for _ in range(get_world_size())]
    dist.all_gather(sizes, size)
    lengths = [int(s.item()) for s in sizes]
    longest = max(lengths)
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[: local.shape[0]] = local
    pieces = [torch.empty_like(padded) for _ in lengths]
    dist.all_gather(pieces, padded)
    return torch.cat([p[:n] for p, n in zip(pieces, lengths)]).to(x.device)


def broadcast(x: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``x`` on every rank.

    Tensors must have the same shape and dtype on every rank; anything else
    (including ``None`` on the other ranks) is pickled.

    Example::

        config = idist.broadcast(config if idist.get_rank() == 0 else None)
    """
    if not _active():
        return x
    if isinstance(x, torch.Tensor):
        work = x.detach().to(comm_device(), copy=True)
        dist.broadcast(work, src)
        return work.to(x.device)
    holder = [x]
    dist.broadcast_object_list(holder, src)
    return holder[0]


def barrier() -> None:
    """Wait until every rank gets here (a no-op with one process)."""
    if _active():
        dist.barrier()
