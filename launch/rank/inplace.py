"""Whether torchrun or srun already started this process as one rank (then it runs in place)."""

from __future__ import annotations

import os


def in_place_rank() -> int | None:
    """This process's global rank when torchrun or srun started it as one, else None."""
    if "TORCHELASTIC_RUN_ID" in os.environ:
        return int(os.environ.get("RANK", "0"))
    if "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return int(os.environ["SLURM_PROCID"])
    return None


def in_place_world() -> int:
    """How many ranks torchrun or srun started."""
    return int(os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or 1)
