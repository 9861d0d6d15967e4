"""Running as one rank of a job that torchrun or srun already started."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path
from typing import Any

from launch import worker


def run_in_place(cfg: Any, config_path: Path) -> Any:
    """Run the task in this process: no ranks are spawned, the process is already one.

    A script runs as torchrun would run it (it makes its own process group).
    Otherwise every rank uses rank 0's resolved config, so all ranks share
    rank 0's run folder even if their clocks named different ones.
    """
    if cfg.task.script:
        sys.argv = [str(cfg.task.script), *map(str, cfg.task.args)]
        runpy.run_path(str(cfg.task.script), run_name="__main__")
        return None
    import distengine.distributed as idist

    idist.initialize(backend=cfg.dist.backend, timeout=float(cfg.dist.timeout_s))
    shared = idist.broadcast(str(config_path))
    return worker.main(shared)
