"""What a checkpoint must agree on with the run that resumes from it."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

import distengine.distributed as idist
from launch.job.folder import COMPARED


def world_size_problem(saved: int, now: int, global_batch: Any) -> str | None:
    """Why a run saved on ``saved`` ranks cannot resume on ``now``, or None when it can.

    The data position is kept in global samples (iterations of the global
    batch ``data.batch_size``), so any number of ranks that divides the global
    batch continues the same sample sequence; another one would change it.
    """
    if saved == now or global_batch is None:
        return None
    if int(global_batch) % now:
        return (
            f"world size {saved} in the checkpoint, {now} now: data.batch_size={global_batch} "
            f"(the global batch) cannot be split evenly among {now} ranks, so the run would not "
            "continue the same samples; resume on a number of ranks that divides it"
        )
    return None


class RunInfo:
    """A stateful record of the run's identity, world size and model/data/optim config.

    Saved with every checkpoint (``run_id`` names the run the checkpoint
    belongs to: a resume only considers the run folder's own run); loading it
    into a run that differs raises a ValueError that names each difference
    (``load_state_dict`` runs at resume). Another world size is accepted when
    it divides the global batch (see :func:`world_size_problem`).
    """

    def __init__(self, cfg: Any) -> None:
        self.run_id = cfg.run_id
        self.world_size = idist.get_world_size()
        self.config = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in COMPARED}

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "world_size": self.world_size, "config": self.config}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        differences = []
        batch = (self.config.get("data") or {}).get("batch_size")
        problem = world_size_problem(state["world_size"], self.world_size, batch)
        if problem:
            differences.append(problem)
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
