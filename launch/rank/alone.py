"""A warning, once, when a task on several ranks never worked with the other ranks.

A script that never makes a process group (the README's example, run with
``task.script=`` on 2 ranks) trains one independent copy per rank, each on
all the data; an entrypoint (the launcher made its group) that never runs a
collective does the same. Nothing fails, so rank 0 says it when the task
returns.

Example::

    before = collectives()        # after the launcher's own collectives
    ...                           # the entrypoint
    warn_if_alone(cfg, before)
"""

from __future__ import annotations

import os
import sys
from typing import Any

from launch.rank import store


def collectives() -> int | None:
    """Collectives run so far on the default process group (None: no group)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return None
    try:
        return int(dist.distributed_c10d._get_default_group()._get_sequence_number_for_group())
    except (RuntimeError, AttributeError):
        return None


def message(cfg: Any, before: int | None) -> str | None:
    """The warning for this task, or None when it worked with the other ranks (or cannot tell)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or os.environ.get("RANK", "0") != "0":
        return None
    advice = "wrap the model and data with distengine.distributed's auto_model and auto_dataloader"
    if cfg.task.script:
        if collectives() is not None or store.used() is not False:
            return None
        return (
            f"warning: task.script={cfg.task.script} ran on {world} ranks and none of them "
            "joined a process group: each rank trained its own copy of the model on all the "
            "data, and nothing was reduced across ranks; call "
            f"distengine.distributed.initialize() in the script and {advice}"
        )
    now = collectives()
    if before is None or now is None or now != before:
        return None
    return (
        f"warning: task.entrypoint={cfg.task.entrypoint} ran on {world} ranks and never "
        "communicated over their process group (no collective): each rank trained its own "
        f"copy of the model on all the data; {advice}"
    )


def warn_if_alone(cfg: Any, before: int | None = None) -> None:
    """Print :func:`message` on rank 0's stderr, if any."""
    text = message(cfg, before)
    if text:
        print(text, file=sys.stderr, flush=True)
