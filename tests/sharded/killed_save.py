"""Two fresh gloo ranks save a sharded checkpoint; rank 1 is SIGKILLed in the middle of the next.

Rank 1 dies inside ``dcp.save`` right after writing its shard file, before
rank 0 writes DCP's ``.metadata``: the worst moment for a folder that is
written in place.
"""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from pathlib import Path

import torch.multiprocessing as mp

from tests.multirank import free_port


def _rank(rank: int, port: int, folder: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2"
    )
    import torch
    import torch.distributed as dist
    from torch.distributed.checkpoint.filesystem import FileSystemWriter

    from distengine.checkpoint.sharded import ShardedStorage
    from distengine.checkpoint.sharded_state import gather_state
    from tests.sharded.common import build

    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=30))
    model, opt = build()
    storage = ShardedStorage(folder)
    storage.save("checkpoint_1", *gather_state({"model": model, "optimizer": opt}))
    real_write = FileSystemWriter.write_data

    def write_then_die(self, plan, planner):
        written = real_write(self, plan, planner)
        written.wait()
        if rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return written

    FileSystemWriter.write_data = write_then_die
    storage.save("checkpoint_2", *gather_state({"model": model, "optimizer": opt}))


def run_killed_save(folder: Path, timeout: float = 120.0) -> list[int | None]:
    """Run both ranks to their end; their exit codes (None: still running at the timeout)."""
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_rank, args=(r, port, str(folder)), daemon=True) for r in (0, 1)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout)
    codes = [proc.exitcode for proc in procs]
    for proc in procs:
        if proc.is_alive():
            proc.kill()
    return codes
