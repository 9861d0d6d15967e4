"""``python -m launch``: check everything, take the run folder, start the ranks, report.

Order matters: every check runs before anything is written (Hydra writes
``.hydra/`` into the run folder before it calls the task function), the
busy-folder check before the slow ones (it must answer in seconds), and
the run folder is locked before Hydra writes into it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from launch import exit_codes
from launch.config.checks import check_config, check_port_free
from launch.config.compose import CONF_DIR, CommandLine, compose, job_config, sweep_points
from launch.config.errors import ConfigError
from launch.config.overrides import check_override_keys
from launch.config.schema import GROUPS, TARGET_GROUPS


def in_place_rank() -> int | None:
    """This process's rank when torchrun or srun already started it as one, else None."""
    if "TORCHELASTIC_RUN_ID" in os.environ:
        return int(os.environ.get("RANK", "0"))
    if "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return int(os.environ["SLURM_PROCID"])
    return None


def in_place_world() -> int:
    return int(os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or 1)


def fail(message: str, code: int = exit_codes.BAD_INPUT) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def check_job(job: dict[str, Any]) -> None:
    """The checks that import code (``_target_`` signatures, the entrypoint) or use the host."""
    from launch.config.targets import check_target, load_entrypoint

    if in_place_rank() is None:
        check_port_free(job["dist"])
    for group in TARGET_GROUPS:
        check_target(group, job[group])
    if job["task"]["entrypoint"]:
        load_entrypoint(job["task"]["entrypoint"])


def world_size(job: dict[str, Any]) -> int:
    rank = in_place_rank()
    if rank is not None:
        return in_place_world()
    from launch.job.agent import nproc_per_node

    return nproc_per_node(job["dist"]["nproc_per_node"]) * job["dist"]["nnodes"]


class Launch:
    """One ``python -m launch`` command: its checks, its run folder, its Hydra run."""

    def __init__(self, argv: list[str]) -> None:
        self.line = CommandLine.parse(argv)
        self.argv = list(argv)
        self.folder: Any = None  # the RunFolder held for a single run

    def prepare(self) -> None:
        """Every check before Hydra runs; lock the run folder of a single run."""
        from launch.job.folder import RunFolder

        if self.line.other_flags:
            return  # --help, --cfg, another config: Hydra first, the checks in run()
        check_override_keys(self.line.overrides, GROUPS)
        overrides = self.line.overrides
        points = sweep_points(overrides) if self.line.multirun else [overrides]
        composed = [compose(point) for point in points]
        jobs = [job_config(cfg) for cfg in composed]
        for job in jobs:
            check_config(job)
            self._check_placement(job)
        if self.line.multirun:
            for job in jobs:
                check_job(job)
            return
        job, run_dir = jobs[0], Path(composed[0].hydra.run.dir)
        owner = self._owns_folder(job)
        folder = RunFolder(run_dir)
        if owner:
            folder.check_free()  # fast: before the checks that import torch
        check_job(job)
        if owner:
            folder.check_resume(job, world_size(job))
            note = folder.acquire(command=" ".join(["python -m launch", *self.argv]))
            if note:
                print(note, file=sys.stderr)
            self.folder = folder
        self._pin(run_dir, job)

    def _check_placement(self, job: dict[str, Any]) -> None:
        """Several nodes (or in-place ranks) must name one run folder explicitly."""
        given = self.line.gives("hydra.run.dir") or self.line.multirun
        if job["dist"]["nnodes"] > 1 and not given:
            raise ConfigError(
                "with dist.nnodes > 1, give every node the same hydra.run.dir on a filesystem "
                "they share (the default folder is named by each node's clock)"
            )
        if in_place_rank() is not None and in_place_world() > 1 and not given:
            raise ConfigError(
                "under torchrun or srun, give every rank the same hydra.run.dir (the default "
                "folder is named by each rank's clock)"
            )

    def _owns_folder(self, job: dict[str, Any]) -> bool:
        """Node 0's launcher (or rank 0 in place) holds the run folder; the others join."""
        rank = in_place_rank()
        return rank == 0 if rank is not None else job["dist"]["node_rank"] == 0

    def _pin(self, run_dir: Path, job: dict[str, Any]) -> None:
        """Hydra must use the folder that was checked (``${now:...}`` moves on)."""
        if not self.line.gives("hydra.run.dir"):
            self.argv.append(f"hydra.run.dir={run_dir}")
        if not self._owns_folder(job):
            node = job["dist"]["node_rank"]
            subdir = "null" if in_place_rank() is not None else f".hydra/node{node}"
            self.argv.append(f"hydra.output_subdir={subdir}")

    def run(self, cfg: Any) -> None:
        """Hydra's task function: one job (one point of a sweep)."""
        from hydra.core.hydra_config import HydraConfig

        from launch.job.folder import RunFolder

        job = job_config(cfg)
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        folder = self.folder
        try:
            if folder is None:  # a sweep point, or a command Hydra parsed first
                check_config(job)
                check_job(job)
                if self._owns_folder(job):
                    folder = RunFolder(run_dir)
                    folder.check_resume(job, world_size(job))
                    note = folder.acquire(command=" ".join(["python -m launch", *self.argv]))
                    if note:
                        print(note, file=sys.stderr)
            overrides = list(HydraConfig.get().overrides.task)
            code = start(cfg, job, run_dir, folder, overrides)
        except ConfigError as error:
            fail(str(error))
        finally:
            if folder is not None:
                folder.release()
        if code != exit_codes.DONE:
            sys.exit(code)


def start(cfg: Any, job: dict[str, Any], run_dir: Path, folder: Any, overrides: list) -> int:
    """Record the run, write the resolved config, and start the ranks (or be one)."""
    from omegaconf import OmegaConf

    from launch.job.folder import os_error

    cfg.run_dir = str(run_dir)
    if folder is not None:
        folder.clear_stop()
        cfg.run_id = folder.start_run(job, world_size(job))
        cfg.job_id = folder.job_id
    node = job["dist"]["node_rank"]
    config_path = run_dir / "config.yaml"
    if folder is None and in_place_rank() is None:
        config_path = run_dir / "logs" / f"node{node}" / "config.yaml"
    if folder is not None or in_place_rank() is None:
        try:
            config_path.parent.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(cfg, config_path, resolve=True)
        except OSError as error:
            raise os_error(config_path, error) from None
    if in_place_rank() is not None:
        from launch.rank import run_in_place

        run_in_place(cfg)
        return exit_codes.DONE
    return start_agent(cfg, run_dir, folder, config_path, overrides)


def start_agent(cfg: Any, run_dir: Path, folder: Any, config_path: Path, overrides: list) -> int:
    from launch.job.agent import Job, run_job
    from launch.job.command import resume_command
    from launch.job.folder import RunFolder

    held = folder if folder is not None else RunFolder(run_dir)
    command = resume_command(overrides, run_dir, cfg.checkpoint.resume)
    outcome = run_job(Job(cfg, held, config_path, command))
    if outcome.message:
        print(f"\n{outcome.message}", file=sys.stderr)
    if outcome.code == exit_codes.DONE and cfg.dist.node_rank == 0:
        report(cfg, run_dir)
    return outcome.code


def report(cfg: Any, run_dir: Path) -> None:
    print(f"\nRun folder: {run_dir}")
    if not cfg.task.script and not cfg.task.entrypoint:
        print(f"  checkpoints: {run_dir / 'checkpoints'}")
        print(f"  metrics:     {run_dir / 'metrics.json'}")
        print(f"  TensorBoard: tensorboard --logdir {run_dir / 'tb'}")
    print(f"  rank logs:   {run_dir / 'logs'}")


def main() -> None:
    """Entry point; Hydra parses the overrides (``key=value``, ``-m`` for sweeps)."""
    import hydra

    from launch.config.schema import register

    launch = Launch(sys.argv[1:])
    try:
        launch.prepare()
    except ConfigError as error:
        fail(str(error))
    register()
    sys.argv = [sys.argv[0], *launch.argv]
    try:
        hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")(launch.run)()
    finally:
        if launch.folder is not None:
            launch.folder.release()
