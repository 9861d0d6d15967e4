"""Run test functions on N real gloo ranks that are started once and reused.

A :class:`RankPool` spawns N processes that form one gloo process group and
then wait for work. ``pool.run(fn, *args)`` runs the module-level function
``fn`` on every rank and returns each rank's result, or raises
:class:`RankFailure` with every failing rank's traceback. A rank that does not
answer within the timeout (a hang) gets the whole pool killed and replaced,
so one bad test never blocks the rest. Ranks die with the parent process.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import socket
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch.multiprocessing as mp

_PR_SET_PDEATHSIG = 1


class RankFailure(AssertionError):
    """One or more ranks raised or did not answer; the message holds their tracebacks."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def _worker(rank: int, world: int, port: int, tasks: Any, results: Any) -> None:
    _die_with_parent()
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
        GROUP_RANK="0",
        OMP_NUM_THREADS="1",
    )
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    results.put((rank, True, "ready"))
    while True:
        task = tasks.get()
        if task is None:
            break
        fn, args, kwargs = task
        try:
            results.put((rank, True, fn(*args, **kwargs)))
        except BaseException:  # noqa: BLE001 - every failure goes back to the test
            results.put((rank, False, traceback.format_exc()))
    dist.destroy_process_group()


class RankPool:
    """N gloo ranks waiting for test functions.

    Example::

        pool = RankPool(2)
        assert pool.run(get_rank_plus, 10) == [10, 11]
        pool.close()
    """

    def __init__(self, world_size: int, start_timeout: float = 120.0) -> None:
        ctx = mp.get_context("spawn")
        self.world_size = world_size
        self._results = ctx.Queue()
        self._tasks = [ctx.Queue() for _ in range(world_size)]
        port = free_port()
        self._procs = [
            ctx.Process(
                target=_worker,
                args=(r, world_size, port, self._tasks[r], self._results),
                daemon=True,
            )
            for r in range(world_size)
        ]
        for proc in self._procs:
            proc.start()
        self._collect(start_timeout, "start")

    @property
    def alive(self) -> bool:
        return bool(self._procs) and all(p.is_alive() for p in self._procs)

    def run(self, fn: Callable[..., Any], *args: Any, timeout: float = 60.0, **kwargs: Any) -> list:
        """``fn(*args, **kwargs)`` on every rank; the results in rank order."""
        for task_queue in self._tasks:
            task_queue.put((fn, args, kwargs))
        return self._collect(timeout, getattr(fn, "__qualname__", repr(fn)))

    def _collect(self, timeout: float, what: str) -> list:
        answers: dict[int, tuple[bool, Any]] = {}
        deadline = time.monotonic() + timeout
        while len(answers) < self.world_size:
            if any(not ok for ok, _ in answers.values()):
                deadline = min(deadline, time.monotonic() + 3.0)  # others may be stuck waiting
            try:
                rank, ok, value = self._results.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            answers[rank] = (ok, value)
        if len(answers) == self.world_size and all(ok for ok, _ in answers.values()):
            return [answers[r][1] for r in range(self.world_size)]
        self.close(kill=True)
        waited = timeout - max(deadline - time.monotonic(), 0)
        raise RankFailure(self._report(answers, what, waited))

    def _report(self, answers: dict, what: str, waited: float) -> str:
        lines = [f"{what} failed on {self.world_size} ranks:"]
        for rank in range(self.world_size):
            if rank not in answers:
                lines.append(f"--- rank {rank}: no answer after {waited:.0f}s (hung or died)")
            elif not answers[rank][0]:
                lines.append(f"--- rank {rank} raised:\n{answers[rank][1]}")
        return "\n".join(lines)

    def close(self, kill: bool = False) -> None:
        """Stop the ranks: politely, or at once with ``kill``."""
        if not kill:
            for task_queue in self._tasks:
                task_queue.put(None)
        for proc in self._procs:
            proc.join(timeout=0 if kill else 10)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=10)
        self._procs = []
