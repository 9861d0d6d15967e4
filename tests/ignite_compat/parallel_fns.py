"""Functions that ``idist.Parallel`` runs in the ranks it starts (importable by spawned ranks)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import distengine.distributed as idist


def report(local_rank: int, folder: str, scale: float = 1.0) -> None:
    """Write what this rank sees, and the sum of every rank's ``(rank + 1) * scale``."""
    total = idist.all_reduce(torch.tensor([(idist.get_rank() + 1) * scale]))
    seen = {
        "local_rank": local_rank,
        "rank": idist.get_rank(),
        "world_size": idist.get_world_size(),
        "backend": idist.backend(),
        "model_name": idist.model_name(),
        "sum": total.item(),
    }
    Path(folder, f"rank{idist.get_rank()}.json").write_text(json.dumps(seen))


def fail_on_rank_1(local_rank: int) -> None:
    """Rank 1 raises while rank 0 waits for it in a barrier."""
    if idist.get_rank() == 1:
        raise RuntimeError("rank 1 could not read its shard")
    idist.barrier()
