"""``python -m launch``: compose the config once, check it, start the ranks, report."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from distengine.handlers.preemption import EXIT_PREEMPTED
from launch.checks import ConfigError, check_config, check_override_keys, check_port_free
from launch.schema import register

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

register()


def _under_launcher() -> bool:
    """Whether torchrun or srun already started this process as one rank."""
    return "TORCHELASTIC_RUN_ID" in os.environ or (
        "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1
    )


def _fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def run(cfg: DictConfig) -> None:
    """Check, save the resolved config into the run folder, and start the job."""
    try:
        check_config(cfg)
        if cfg.dist.master_port is not None and cfg.dist.node_rank == 0:
            check_port_free(cfg.dist.master_addr, cfg.dist.master_port)
    except ConfigError as error:
        _fail(str(error))
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    cfg.run_dir = str(run_dir)
    config_path = run_dir / "config.yaml"
    OmegaConf.save(cfg, config_path, resolve=True)
    if _under_launcher():
        from launch.inplace import run_in_place

        return run_in_place(cfg, config_path)
    from launch.agent import JobFailed, run_job

    try:
        run_job(cfg, run_dir, config_path)
    except JobFailed as failure:
        how = "stopped" if failure.exitcode == EXIT_PREEMPTED else "failed"
        print(f"\nJob {how} in {run_dir}:\n{failure}", file=sys.stderr)
        sys.exit(failure.exitcode)
    if cfg.dist.node_rank == 0:
        _report(cfg, run_dir)


def _report(cfg: Any, run_dir: Path) -> None:
    print(f"\nRun folder: {run_dir}")
    if not cfg.task.script and not cfg.task.entrypoint:
        print(f"  checkpoints: {run_dir / 'checkpoints'}")
        print(f"  metrics:     {run_dir / 'metrics.json'}")
        print(f"  TensorBoard: tensorboard --logdir {run_dir / 'tb'}")
    print(f"  rank logs:   {run_dir / 'logs'}")


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    run(cfg)


def main() -> None:
    """Entry point; Hydra parses the overrides (``key=value``, ``-m`` for sweeps)."""
    from launch.schema import GROUPS

    try:
        check_override_keys(sys.argv[1:], GROUPS)
    except ConfigError as error:
        _fail(str(error))
    _hydra_main()
