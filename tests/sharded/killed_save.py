"""Two fresh gloo ranks save a sharded checkpoint; rank 1 is SIGKILLed in the middle of the next.

Rank 1 dies inside ``dcp.save`` right after writing its shard file, before
rank 0 writes DCP's ``.metadata``: the worst moment for a folder that is
written in place. The saves go through ``ShardedStorage`` or, with
``through_checkpoint``, through the ``Checkpoint`` handler of an FSDP trainer.
"""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from pathlib import Path

import torch
import torch.multiprocessing as mp

from tests.multirank import free_port


def _checkpoint_saves(folder: str):
    """An FSDP model, optimizer and trainer, and a function saving them at an iteration."""
    import distengine.distributed as idist
    from distengine.engine import create_supervised_trainer
    from distengine.handlers import Checkpoint
    from tests.sharded.common import TinyTransformer
    from tests.sharded.trainer_run import loss_fn

    model = idist.auto_model(TinyTransformer(), strategy="fsdp")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    trainer = create_supervised_trainer(model, opt, loss_fn)
    trainer.state.max_epochs = 1
    checkpoint = Checkpoint(
        {"model": model, "optimizer": opt, "trainer": trainer}, folder, n_saved=1
    )

    def save(iteration: int) -> None:
        trainer.state.iteration = iteration
        checkpoint(trainer)

    return save


def _rank(rank: int, port: int, folder: str, through_checkpoint: bool = False) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2"
    )
    import torch.distributed as dist
    from torch.distributed.checkpoint.filesystem import FileSystemWriter

    from distengine.checkpoint.sharded import ShardedStorage
    from distengine.checkpoint.sharded_state import gather_state
    from tests.sharded.common import build

    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=30))
    if through_checkpoint:
        save = _checkpoint_saves(folder)
    else:
        model, opt = build()
        storage = ShardedStorage(folder)

        def save(iteration: int) -> None:
            objects = {"model": model, "optimizer": opt}
            storage.save(f"checkpoint_{iteration}", *gather_state(objects))

    save(1)
    real_write = FileSystemWriter.write_data

    def write_then_die(self, plan, planner):
        written = real_write(self, plan, planner)
        written.wait()
        if rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return written

    FileSystemWriter.write_data = write_then_die
    save(2)


def run_killed_save(
    folder: Path, through_checkpoint: bool = False, timeout: float = 120.0
) -> list[int | None]:
    """Run both ranks to their end; their exit codes (None: still running at the timeout)."""
    ctx = mp.get_context("spawn")
    port = free_port()
    args = (port, str(folder), through_checkpoint)
    procs = [ctx.Process(target=_rank, args=(r, *args), daemon=True) for r in (0, 1)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout)
    codes = [proc.exitcode for proc in procs]
    for proc in procs:
        if proc.is_alive():
            proc.kill()
    return codes
