"""Typed schema of the launcher's config: the keys of each fixed group and their types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class DistConfig:
    """How ranks are started; see ``conf/dist/default.yaml``."""

    nproc_per_node: Any = "auto"
    nnodes: Any = 1  # an int, or "MIN:MAX" for an elastic job (launch/config/nodes.py)
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: Optional[int] = None  # noqa: UP045 - OmegaConf reads typing.Optional
    backend: str = "auto"
    max_restarts: int = 0
    timeout_s: float = 300.0
    rdzv_timeout_s: float = 120.0
    shutdown_grace_s: float = 60.0
    start_method: str = "auto"
    strategy: str = "ddp"
    console: str = "rank0"


@dataclass
class TaskConfig:
    """What every rank runs: the default recipe, a script, or ``module:function``."""

    script: Optional[str] = None  # noqa: UP045
    args: list[str] = field(default_factory=list)
    entrypoint: Optional[str] = None  # noqa: UP045


@dataclass
class CheckpointConfig:
    """Where the default recipe's checkpoints come from and how many are kept."""

    resume: str = "auto"
    n_saved: int = 2
    every_iters: int = 0


@dataclass
class TrainerConfig:
    """The default recipe's training loop."""

    max_epochs: int = 8
    seed: int = 0
    amp: bool = False
    precision: Optional[str] = None  # noqa: UP045
    compile: bool = False
    validate_every: int = 1
    log_every: int = 10
    progress_bar: bool = True


@dataclass
class Config:
    """The whole config; ``model``, ``data`` and ``optim`` are Hydra ``_target_`` nodes.

    ``run_dir``, ``run_id``, ``job_id``, ``tb_dir`` and ``sweep_keys`` are
    set by the launcher: the run folder, the identity of the run (the lineage
    its checkpoints belong to), of this launch, where its TensorBoard event
    files go, and the keys its sweep varies (none for a single run).
    """

    dist: DistConfig = field(default_factory=DistConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    model: Any = None
    data: Any = None
    optim: Any = None
    run_dir: Optional[str] = None  # noqa: UP045
    run_id: Optional[str] = None  # noqa: UP045
    job_id: Optional[str] = None  # noqa: UP045
    tb_dir: Optional[str] = None  # noqa: UP045
    sweep_keys: list[str] = field(default_factory=list)


#: The groups whose keys are fixed, for error messages that list them.
GROUPS = {
    "dist": DistConfig,
    "task": TaskConfig,
    "checkpoint": CheckpointConfig,
    "trainer": TrainerConfig,
}

#: Groups whose keys are the arguments of their ``_target_``.
TARGET_GROUPS = ("model", "data", "optim")

#: Keys the launcher sets; an override of them is refused.
SET_BY_LAUNCHER = ("run_dir", "run_id", "job_id", "tb_dir", "sweep_keys")


def register() -> None:
    """Make ``base_config`` available to ``conf/config.yaml``'s defaults list."""
    ConfigStore.instance().store(name="base_config", node=Config)
