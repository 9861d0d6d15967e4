"""Start one job once its checks passed: record the run, write the config, start the ranks."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from launch import exit_codes
from launch.job.folder import RunFolder, os_error
from launch.rank.inplace import in_place_rank


def tensorboard_dir(run_dir: Path, hydra: Any, swept: set[str] | frozenset = frozenset()) -> Path:
    """``<run>/tb/<run folder's name>``; in a sweep ``<sweep>/tb/<the job's swept values>``.

    TensorBoard names a run by its folder under ``--logdir``: the run's own
    name, or in a sweep ``optim.lr=0.1`` (so one ``--logdir`` compares them).
    """
    from hydra.types import RunMode

    if hydra.mode == RunMode.MULTIRUN:
        values = [o for o in hydra.overrides.task if o.lstrip("+~").split("=", 1)[0] in swept]
        label = ",".join(sorted(values)) or hydra.job.override_dirname or str(hydra.job.num)
        return Path(hydra.sweep.dir) / "tb" / label
    return run_dir / "tb" / run_dir.name


def tensorboard_command() -> str:
    """How to start TensorBoard from here: ``tensorboard`` if on PATH, else its full path."""
    if shutil.which("tensorboard"):
        return "tensorboard"
    beside = Path(sys.executable).parent / "tensorboard"
    if beside.exists():
        return str(beside)
    return f"{sys.executable} -m tensorboard.main"


def world_size(job: dict[str, Any]) -> int:
    """The job's number of ranks (torch's rule for ``nproc_per_node=auto``)."""
    from launch.rank.inplace import in_place_world

    if in_place_rank() is not None:
        return in_place_world()
    from launch.config.nodes import max_nodes
    from launch.job.agent import nproc_per_node

    return nproc_per_node(job["dist"]["nproc_per_node"]) * max_nodes(job["dist"]["nnodes"])


def start(
    cfg: Any, job: dict[str, Any], run_dir: Path, folder: RunFolder | None, overrides: list[str]
) -> int:
    """Record the run (``folder``: held by this launcher), write the config, run; the exit code.

    Node 0's launcher (or rank 0 in place) holds the folder and writes
    ``config.yaml``; another node takes node 0's config (with the run's
    identity) through the store and writes it into ``logs/node<N>/``
    (:mod:`launch.job.meet`); other in-place ranks write nothing.
    """
    from omegaconf import OmegaConf

    from launch.config.compose import resolved

    cfg.run_dir = str(run_dir)
    if folder is not None:
        folder.clear_stop()
        cfg.run_id = folder.start_run(job, world_size(job))
        cfg.job_id = folder.job_id
        _say_if_finished(cfg, job, folder)
    config_path = run_dir / "config.yaml"
    if folder is None and in_place_rank() is None:
        config_path = run_dir / "logs" / f"node{job['dist']['node_rank']}" / "config.yaml"
    if folder is not None:
        try:
            config_path.parent.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(resolved(cfg), config_path)  # read back as it is (``${`` kept)
        except OSError as error:
            raise os_error(config_path, error) from None
    if in_place_rank() is not None:
        from launch.rank import run_in_place

        run_in_place(cfg)
        return exit_codes.DONE
    return _start_agent(cfg, run_dir, folder or RunFolder(run_dir), config_path, overrides)


def _say_if_finished(cfg: Any, job: dict[str, Any], folder: RunFolder) -> None:
    """A finished run is said at once, before the ranks start and validate it."""
    from launch.job.finished import finished_note

    note = finished_note(folder, job, cfg.run_id)
    if note:
        print(note, flush=True)


def _start_agent(
    cfg: Any, run_dir: Path, folder: RunFolder, config_path: Path, overrides: list[str]
) -> int:
    from launch.job.agent import Job, run_job
    from launch.job.command import resume_command

    command = resume_command(overrides, run_dir, cfg.checkpoint.resume)
    outcome = run_job(Job(cfg, folder, config_path, command))
    outcome.show()
    if outcome.code == exit_codes.DONE and cfg.dist.node_rank == 0:
        report(cfg, run_dir)
    return outcome.code


def report(cfg: Any, run_dir: Path) -> None:
    """Where a finished job's outputs are (on stdout; a reader that left is no error)."""
    from launch.job.outcome import say

    lines = [f"Run folder: {run_dir}"]
    if not cfg.task.script and not cfg.task.entrypoint:
        lines.append(f"  checkpoints: {run_dir / 'checkpoints'}")
        lines.append(f"  metrics:     {run_dir / 'metrics.json'}")
        logdir = Path(cfg.tb_dir).parent.resolve() if cfg.get("tb_dir") else run_dir / "tb"
        lines.append(f"  TensorBoard: {tensorboard_command()} --logdir {logdir}")
    lines.append(f"  rank logs:   {run_dir / 'logs'} (rank<N>.log)")
    say("\n".join(lines), sys.stdout)
