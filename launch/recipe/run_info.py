"""What a checkpoint must agree on with the run that resumes from it."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

import distengine.distributed as idist
from launch.job.folder import COMPARED, world_size_problem

__all__ = ["RunInfo", "world_size_problem"]


class RunInfo:
    """A stateful record of the run's identity, world size, seed and model/data/optim config.

    Saved with every checkpoint (``run_id`` names the run the checkpoint
    belongs to: a resume only considers the run folder's own run); loading it
    into a run that differs raises a ValueError that names each difference
    (``load_state_dict`` runs at resume). Another world size is accepted when
    it continues the same global batches (see :func:`world_size_problem`);
    another ``trainer.seed`` is not (it orders the samples).
    """

    def __init__(self, cfg: Any) -> None:
        self.run_id = cfg.run_id
        self.world_size = idist.get_world_size()
        self.seed = int(cfg.trainer.seed)
        self.config = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in COMPARED}

    def state_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "world_size": self.world_size,
            "seed": self.seed,
            "config": self.config,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        differences = []
        batch = (self.config.get("data") or {}).get("batch_size")
        problem = world_size_problem(state["world_size"], self.world_size, batch)
        if problem:
            differences.append(problem)
        if state.get("seed", self.seed) != self.seed:  # absent: saved before the seed was
            differences.append(f"trainer.seed changed ({state['seed']} then, {self.seed} now)")
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
