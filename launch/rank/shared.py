"""Every rank runs with rank 0's config, from a run folder every rank can see."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from launch.config.compose import literal
from launch.job.folder import LOCK_FILE


def shared_config(cfg: Any) -> Any:
    """Rank 0's config on every rank; raise on every rank if some rank cannot see the run folder.

    Each node's launcher composed its own config (its ``dist.node_rank``, its
    clock); rank 0's is the job's. The run folder is checked by reading the
    lock file of rank 0's launch: a node that does not see it has another
    folder at that path (not a shared filesystem).
    """
    import distengine.distributed as idist

    if idist.get_world_size() == 1:
        return cfg
    ours = literal(OmegaConf.to_container(cfg, resolve=True)) if idist.get_rank() == 0 else None
    cfg = OmegaConf.create(idist.broadcast(ours, src=0))  # ``${`` in a value stays text
    seen = _sees_job(Path(cfg.run_dir), cfg.job_id) if cfg.job_id else True
    blind = [
        f"rank {rank} on {host}"
        for rank, (ok, host) in enumerate(idist.all_gather((seen, socket.gethostname())))
        if not ok
    ]
    if blind:
        raise RuntimeError(
            f"{', '.join(blind)} cannot see the run folder {cfg.run_dir} that rank 0 uses "
            "(its job lock is missing or another job's there): with dist.nnodes > 1 give every "
            "node the same hydra.run.dir on a filesystem they share"
        )
    return cfg


def _sees_job(run_dir: Path, job_id: str) -> bool:
    try:
        return json.loads((run_dir / LOCK_FILE).read_text()).get("job_id") == job_id
    except (OSError, ValueError):
        return False
