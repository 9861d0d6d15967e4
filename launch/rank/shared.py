"""Every rank runs with rank 0's config, from a run folder every rank can see."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from launch.config.compose import literal
from launch.job.folder import LOCK_FILE

#: The launcher's count of this node's rounds (0 first); a node that joined later has fewer.
ROUND_ENV = "DISTENGINE_ROUND"
RESTART_ENV = "TORCHELASTIC_RESTART_COUNT"


def shared_config(cfg: Any) -> Any:
    """Rank 0's config on every rank; raise on every rank if some rank cannot see the run folder.

    Each node's launcher composed its own config (its ``dist.node_rank``, its
    clock); rank 0's is the job's. The run folder is checked by reading the
    lock file of rank 0's launch: a node that does not see it has another
    folder at that path (not a shared filesystem). Every rank then takes the
    job's restart number, the highest any node counted (a node that joined an
    elastic job later counts from 0; a restart that grew the group is one too).
    """
    import distengine.distributed as idist

    if idist.get_world_size() == 1:
        return cfg
    ours = literal(OmegaConf.to_container(cfg, resolve=True)) if idist.get_rank() == 0 else None
    cfg = OmegaConf.create(idist.broadcast(ours, src=0))  # ``${`` in a value stays text
    seen = _sees_job(Path(cfg.run_dir), cfg.job_id) if cfg.job_id else True
    count = int(os.environ.get(ROUND_ENV) or os.environ.get(RESTART_ENV) or 0)
    gathered = idist.all_gather((seen, socket.gethostname(), count))
    os.environ[RESTART_ENV] = str(max(int(c) for _, _, c in gathered))
    blind = [f"rank {rank} on {host}" for rank, (ok, host, _) in enumerate(gathered) if not ok]
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
