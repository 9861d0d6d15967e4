"""Rank-zero-only work, rank-0-first sections and per-rank seeding."""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

from distengine.distributed.collectives import barrier
from distengine.distributed.env import (
    get_local_rank,
    get_nproc_per_node,
    get_rank,
    get_world_size,
)

F = TypeVar("F", bound=Callable[..., Any])


def rank_zero_only(fn: F) -> F:
    """Run ``fn`` on rank 0 only (other ranks get None); a decorator or a handler wrapper.

    It never performs a collective, so it is safe in any handler.

    Example::

        @trainer.on(Events.EPOCH_COMPLETED)
        @idist.rank_zero_only
        def log(engine):
            print(engine.state.metrics)
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if get_rank() == 0:
            return fn(*args, **kwargs)
        return None

    return wrapper  # type: ignore[return-value]


def one_rank_only(rank: int = 0, with_barrier: bool = False) -> Callable[[F], F]:
    """Decorator: run the function on ``rank`` only (others get None), as PyTorch-Ignite's.

    With ``with_barrier=True`` every rank then waits for the others (every rank
    must call the function: it holds a barrier).

    Example::

        @trainer.on(Events.EPOCH_COMPLETED)
        @idist.one_rank_only()
        def report(engine):
            print(engine.state.metrics)
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = fn(*args, **kwargs) if get_rank() == rank else None
            if with_barrier:
                barrier()
            return result

        return wrapper  # type: ignore[return-value]

    return decorate


@contextlib.contextmanager
def one_rank_first(rank: int = 0, local: bool = False) -> Iterator[None]:
    """Let ``rank`` run the block first, then the others (e.g. prepare a dataset once).

    With ``local=True``, ``rank`` is a local rank: that rank of each node goes
    first (a dataset on each node's own disk). Every rank must enter it: it
    holds a barrier before and after.

    Example::

        with idist.one_rank_first(local=True):
            dataset = prepare_dataset(root)   # local rank 0 writes the cache, others read it
    """
    current = get_local_rank() if local else get_rank()
    size = get_nproc_per_node() if local else get_world_size()
    if not isinstance(rank, int) or not 0 <= rank < size:
        what = "local rank" if local else "rank"
        raise ValueError(f"rank must be a {what} in [0, {size - 1}], got {rank!r}")
    if current != rank:
        barrier()
    yield
    if current == rank:
        barrier()


def manual_seed(seed: int, rank_offset: bool = False) -> int:
    """Seed torch, Python's random and numpy (if installed); returns the seed used.

    With ``rank_offset=True`` each rank gets ``seed + rank`` (different
    augmentations per rank); by default all ranks share ``seed`` (same
    initial weights).
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    used = seed + get_rank() if rank_offset else seed
    random.seed(used)
    torch.manual_seed(used)
    try:
        import numpy
    except ImportError:
        return used
    numpy.random.seed(used % 2**32)
    return used
