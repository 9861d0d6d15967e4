"""What a checkpoint must agree on with the run that resumes from it."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

import distengine.distributed as idist
from launch.job.folder import COMPARED


class RunInfo:
    """A stateful record of the run's identity, world size and model/data/optim config.

    Saved with every checkpoint (``run_id`` names the run the checkpoint
    belongs to: a resume only considers the run folder's own run); loading it
    into a run that differs raises a ValueError that names each difference
    (``load_state_dict`` runs at resume).
    """

    def __init__(self, cfg: Any) -> None:
        self.run_id = cfg.run_id
        self.world_size = idist.get_world_size()
        self.config = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in COMPARED}

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "world_size": self.world_size, "config": self.config}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        differences = []
        if state["world_size"] != self.world_size:
            differences.append(
                f"world size {state['world_size']} in the checkpoint, {self.world_size} now "
                "(the data shards and the position in the epoch depend on it)"
            )
        for group in COMPARED:
            saved, now = state["config"].get(group), self.config[group]
            if saved != now:
                keys = sorted(
                    k
                    for k in set(saved or {}) | set(now or {})
                    if (saved or {}).get(k) != (now or {}).get(k)
                )
                differences.append(f"{group}: {', '.join(f'{group}.{k}' for k in keys)} changed")
        if differences:
            raise ValueError(
                "cannot resume from this checkpoint: "
                + "; ".join(differences)
                + ". Use a new run folder (hydra.run.dir=...) or checkpoint.resume=never"
            )
