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
from launch.config.checks import (
    available_memory,
    check_config,
    check_devices,
    check_elastic_batch,
    check_rank_count,
    check_run_dir,
    visible_devices,
)
from launch.config.command_line import CommandLine
from launch.config.compose import (
    CONF_DIR,
    compose,
    job_config,
    sweep_points,
    swept_keys,
)
from launch.config.errors import ConfigError
from launch.config.network import check_master_address
from launch.config.nodes import max_nodes
from launch.config.overrides import check_override_keys
from launch.config.schema import GROUPS, TARGET_GROUPS
from launch.job.folder import describe_os_error
from launch.job.forkserver import start_early
from launch.job.outcome import flush_or_discard
from launch.job.signals import (
    check_early,
    check_late,
    describe,
    early_signal,
    leave_early,
    stop_early,
)
from launch.rank.inplace import in_place_rank, in_place_world


def fail(message: str, code: int = exit_codes.BAD_INPUT) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def check_job(job: dict[str, Any]) -> None:
    """The checks that import code (``_target_`` signatures, the entrypoint, the optimizer),
    use the host or need the number of ranks."""
    from launch.config.recipe import (
        check_global_batch,
        check_model_input,
        check_optimizer,
        uses_recipe,
    )
    from launch.config.targets import check_target, load_entrypoint
    from launch.job.start import world_size

    if in_place_rank() is None:
        from launch.job.agent import nproc_per_node

        check_master_address(job["dist"])
        check_rank_count(job["dist"], available_memory())
        check_devices(job, visible_devices())
        check_elastic_batch(job, nproc_per_node(job["dist"]["nproc_per_node"]))
    for group in TARGET_GROUPS:
        check_target(group, job[group])
    if job["task"]["entrypoint"]:
        load_entrypoint(job["task"]["entrypoint"])
    if uses_recipe(job):
        check_optimizer(job["optim"])
        check_model_input(job)
        check_global_batch(job, world_size(job))


class Launch:
    """One ``python -m launch`` command: its checks, its run folder, its Hydra run."""

    def __init__(self, argv: list[str]) -> None:
        self.line = CommandLine.parse(argv)
        self.argv = self.line.hydra_argv()  # what Hydra reads (config flags in one form)
        self.folder: Any = None  # the RunFolder held for a single run
        self.swept: set[str] = set()  # the keys a sweep varies (they name its runs)

    def prepare(self) -> None:
        """Every check before Hydra runs; lock the run folder of a single run."""
        from launch.job.folder import RunFolder

        if self.line.other_flags:  # --help, --cfg, --info...: Hydra first, the checks in run()
            if self.line.prints_config:  # a bad override is still one line, exit 2
                compose(self.line.overrides, self.line.config_dir, self.line.config_name)
            return
        if in_place_rank() is None:  # the ranks' forkserver imports torch while we check
            start_early(self.line.value("dist.start_method", "auto"))
        check_override_keys(self.line.overrides, GROUPS)
        overrides = self.line.overrides
        points = sweep_points(overrides) if self.line.multirun else [overrides]
        line = self.line
        composed = [compose(point, line.config_dir, line.config_name) for point in points]
        jobs = [job_config(cfg) for cfg in composed]
        for cfg, job in zip(composed, jobs):
            check_run_dir(cfg.hydra, self.line.multirun)
            check_config(job)
            self._check_placement(job)
        if self.line.multirun:
            self.swept = swept_keys(overrides)
            self._fit_auto_ranks(jobs)
            for job in jobs:
                check_job(job)
            return
        job, run_dir = jobs[0], Path(composed[0].hydra.run.dir)
        if self._owns_folder(job):
            RunFolder(run_dir).check_free()  # fast: before the checks that import torch
        self._fit_auto_ranks(jobs)
        check_job(job)
        if self._owns_folder(job):
            self.folder = self._take(RunFolder(run_dir), job)
        self._pin(run_dir, job)

    def _fit_auto_ranks(self, jobs: list[dict[str, Any]]) -> None:
        """``dist.nproc_per_node=auto`` for the recipe: the most ranks, up to torchrun's rule,
        that share the global batch evenly (12 cores and ``data.batch_size=64``: 8), said."""
        from launch.config.recipe import fitted_auto_ranks
        from launch.job.agent import nproc_per_node

        if in_place_rank() is not None or all(j["dist"]["nproc_per_node"] != "auto" for j in jobs):
            return
        counted = nproc_per_node("auto")
        fitted = {fitted_auto_ranks(job, counted) for job in jobs}
        if len(fitted) != 1 or None in fitted:
            return  # none needed, or none fits: check_global_batch says which sizes work
        ranks, batch = fitted.pop(), jobs[0]["data"]["batch_size"]
        for job in jobs:
            job["dist"]["nproc_per_node"] = ranks
        self.argv.append(f"dist.nproc_per_node={ranks}")
        print(
            f"note: dist.nproc_per_node=auto gives {counted} ranks per node, which cannot share "
            f"data.batch_size={batch} (the global batch) evenly: starting {ranks} (give "
            f"dist.nproc_per_node={counted} with a data.batch_size they divide to use all)",
            file=sys.stderr,
        )

    def _take(self, folder: Any, job: dict[str, Any]) -> Any:
        """Refuse a resume that cannot work (nothing written yet), then lock the folder."""
        from launch.job.start import world_size

        folder.check_resume(job, world_size(job))
        note = folder.acquire(command=" ".join(["python -m launch", *self.argv]))
        if note:
            print(note, file=sys.stderr)
        return folder

    def _check_placement(self, job: dict[str, Any]) -> None:
        """Several nodes (or in-place ranks) must name one run folder explicitly."""
        given = self.line.gives("hydra.run.dir") or self.line.multirun
        if max_nodes(job["dist"]["nnodes"]) > 1 and not given:
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
        from launch.job.start import start, tensorboard_dir

        check_late()  # a stop signal after an earlier point of a sweep: no further job
        job = job_config(cfg)
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        cfg.tb_dir = str(tensorboard_dir(run_dir, HydraConfig.get(), self.swept))
        cfg.sweep_keys = sorted(self.swept)
        folder = self.folder
        try:
            if folder is None:  # a sweep point, or a command Hydra parsed first
                check_config(job)
                self._check_placement(job)
                check_job(job)
                if self._owns_folder(job):
                    folder = self._take(RunFolder(run_dir), job)
            given = [*self.line.config_flags(), *HydraConfig.get().overrides.task]
            code = start(cfg, job, run_dir, folder, given)
        except ConfigError as error:
            fail(str(error))
        except OSError as error:  # the launcher's own files (a full disk): one line
            fail(describe_os_error(error), exit_codes.FAILED)
        finally:
            if folder is not None:
                folder.release()
        if code != exit_codes.DONE:
            sys.exit(code)


def print_help(text: str) -> None:
    """Print ``text``; a reader that stops early (``| head``) is no error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main() -> None:
    """Entry point; Hydra parses the overrides (``key=value``, ``-m`` for sweeps)."""
    import hydra

    from launch.config.schema import register

    if in_place_rank() is None:  # under torchrun or srun, theirs (and the recipe's) to handle
        stop_early()  # a clean stop from the first line on (launch.job.signals)
    else:
        leave_early()
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # Hydra's own write errors reach us whole
    launch: Launch | None = None
    try:
        check_early()  # a stop signal that came while Python imported the launcher
        launch = Launch(sys.argv[1:])
        if launch.line.help:
            from launch.config.help import help_text

            print_help(help_text(launch.line))
            return
        launch.prepare()
        register()
        sys.argv = [sys.argv[0], *launch.argv]
        hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")(launch.run)()
    except ConfigError as error:
        stopped = early_signal()  # a stop raised inside Hydra can surface as another error
        if stopped is not None:
            fail(f"stopped by {describe(stopped)} before the ranks started", exit_codes.INTERRUPTED)
        fail(str(error))
    except OSError as error:  # Hydra writing .hydra/ into the run folder (a full disk)
        folder = launch.folder if launch is not None else None
        fail(describe_os_error(error, error.filename or (folder and folder.path)))
    except KeyboardInterrupt as stop:  # before the ranks started (after, the job handles it)
        name = getattr(stop, "signal", "SIGINT")
        fail(f"stopped by {describe(name)} before the ranks started", exit_codes.INTERRUPTED)
    finally:
        if launch is not None and launch.folder is not None:
            launch.folder.release()
        flush_or_discard(sys.stdout)  # a reader that stopped early (| head) is no error
