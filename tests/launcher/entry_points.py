"""Entrypoints and a script that the launcher tests run on every rank."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

import distengine.distributed as idist


def report(cfg) -> None:
    """Write what this rank sees: its rank, the world, a summed tensor, the config's seed."""
    total = idist.all_reduce(torch.tensor([idist.get_rank() + 1.0]))
    out = Path(cfg.run_dir) / f"rank{idist.get_rank()}.json"
    out.write_text(
        json.dumps(
            {
                "rank": idist.get_rank(),
                "world": idist.get_world_size(),
                "sum": total.item(),
                "backend": idist.backend(),
                "node_rank": idist.get_node_rank(),
                "seed": cfg.trainer.seed,
                "lr": cfg.optim.lr,
                "threads": torch.get_num_threads(),
            }
        )
    )


def fail_on_rank_1(cfg) -> None:
    if idist.get_rank() == 1:
        raise ValueError("rank 1 cannot go on: bad shard")
    idist.barrier()  # rank 0 waits here; the launcher must stop it


def sleep_forever(cfg) -> None:
    (Path(cfg.run_dir) / f"pid{idist.get_rank()}").write_text(str(os.getpid()))
    while True:
        time.sleep(0.1)
