"""Shared helpers for the benchmark scripts: timing medians and machine description."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable


def median_time(fn: Callable[[], object], repeats: int = 7) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> str:
    """One line naming the cores, Python and torch the figures were taken on."""
    import torch

    return (
        f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def try_import(name: str):
    """The module, or None when the optional peer is not installed."""
    try:
        return __import__(name)
    except ImportError:
        return None


def _rank_main(rank: int, world: int, port: int, fn, args, results) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    result = fn(*args)
    if rank == 0:
        results.put(result)
    dist.destroy_process_group()


def on_gloo_ranks(fn, *args, world: int = 2, timeout: float = 600):
    """Rank 0's ``fn(*args)``, run on ``world`` spawned gloo ranks (one thread each)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_rank_main, args=(r, world, port, fn, args, results))
        for r in range(world)
    ]
    for proc in procs:
        proc.start()
    try:
        return results.get(timeout=timeout)
    finally:
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
