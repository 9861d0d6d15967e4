"""Collectives that work the same with one process or many, on tensors and Python values.

Without a process group (or with world size 1) each returns its input.
Tensors are reduced and broadcast **in place** and returned, as
``torch.distributed`` and PyTorch-Ignite do. Python numbers travel as float64
on every rank, whatever their type on each, so ranks that pass ``0`` and
``2.5`` agree on ``2.5``.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
import torch.distributed as dist

from distengine.distributed.env import comm_device, get_world_size, is_distributed

__all__ = ["all_gather", "all_reduce", "barrier", "broadcast", "comm_device"]

_OPS = {
    "sum": dist.ReduceOp.SUM,
    "mean": dist.ReduceOp.SUM,  # summed, then divided: gloo has no AVG
    "min": dist.ReduceOp.MIN,
    "max": dist.ReduceOp.MAX,
    "product": dist.ReduceOp.PRODUCT,
}


def _active() -> bool:
    return is_distributed() and get_world_size() > 1


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _as_tensor(value: Any) -> torch.Tensor:
    if not _is_number(value):
        raise TypeError(f"expected a tensor or a number, got {type(value).__name__}: {value!r}")
    return torch.tensor(float(value), dtype=torch.float64, device=comm_device())


def _as_number(result: float, like: Any) -> int | float:
    """An int back for an int input when the result is whole (sums, extremes of ints)."""
    if isinstance(like, numbers.Integral) and result.is_integer():
        return int(result)
    return result


def _in_place(x: torch.Tensor, collective) -> torch.Tensor:
    """Run ``collective(t)`` on ``x``'s data, through a copy where the backend needs one."""
    data = x.detach()
    if data.device == comm_device() and data.is_contiguous():
        collective(data)
        return x
    work = data.to(comm_device(), copy=True).contiguous()
    collective(work)
    data.copy_(work)
    return x


def all_reduce(x: torch.Tensor | float | int, op: str = "sum") -> Any:
    """Reduce ``x`` over all ranks with ``op`` (sum, mean, min, max, product).

    A tensor is reduced **in place** and returned (as ``torch.distributed``
    does); ``mean`` needs a floating tensor for that. A Python number is
    reduced as float64 on every rank and returned as a float (an int for an
    int input when the result is whole); pass an int64 tensor for exact
    integers beyond 2**53.

    Example::

        total = idist.all_reduce(torch.tensor([n_correct]))   # summed over ranks, in place
        mean_loss = idist.all_reduce(loss.item(), op="mean")  # a float
    """
    if op not in _OPS:
        raise ValueError(f"op must be one of {sorted(_OPS)}, got {op!r}")
    if isinstance(x, torch.Tensor) and op == "mean" and not x.is_floating_point():
        raise TypeError(
            f"op='mean' reduces in place and needs a floating tensor, got {x.dtype}; "
            "pass x.double() (or reduce with 'sum' and divide)"
        )
    if not isinstance(x, torch.Tensor):
        work = _as_tensor(x)
        if _active():
            _reduce(work, op)
        return _as_number(work.item(), x)
    if not _active():
        return x
    return _in_place(x, lambda t: _reduce(t, op))


def _reduce(t: torch.Tensor, op: str) -> None:
    dist.all_reduce(t, _OPS[op])
    if op == "mean":
        t /= get_world_size()


def all_gather(x: Any) -> Any:
    """Every rank's ``x``: tensors concatenated on dim 0 (sizes may differ), else a list.

    Numbers come back as a list of floats (int inputs that are whole stay ints).

    Example::

        preds = idist.all_gather(local_preds)      # (sum of per-rank N, ...)
        names = idist.all_gather(socket.gethostname())
    """
    if not _active():
        return x if isinstance(x, torch.Tensor) else [x]
    if isinstance(x, torch.Tensor):
        return _all_gather_tensor(x)
    if _is_number(x):
        gathered = _all_gather_tensor(_as_tensor(x).reshape(1)).tolist()
        return [_as_number(value, x) for value in gathered]
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

    A tensor is overwritten **in place** with rank ``src``'s and returned; it
    must have the same shape and dtype on every rank. Anything else
    (including ``None`` on the other ranks) is pickled.

    Example::

        config = idist.broadcast(config if idist.get_rank() == 0 else None)
    """
    if not _active():
        return x
    if isinstance(x, torch.Tensor):
        return _in_place(x, lambda t: dist.broadcast(t, src))
    holder = [x]
    dist.broadcast_object_list(holder, src)
    return holder[0]


def barrier() -> None:
    """Wait until every rank gets here (a no-op with one process)."""
    if _active():
        dist.barrier()
